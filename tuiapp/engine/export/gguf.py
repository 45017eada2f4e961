"""Write a Hugging Face causal-LM folder (safetensors) as a GGUF file llama.cpp loads.

Our own writer on the ``gguf`` package. Tensors are described first from the safetensors
headers alone, then read (plain reads, no mmap), converted and written one at a time, so peak
memory stays near the largest tensor on top of the interpreter; torch is not needed.

Llama and Mistral checkpoints store q/k projections for rotate-half RoPE; llama.cpp's "llama"
architecture applies RoPE to interleaved pairs, so those two matrices are permuted row-wise.
Qwen2 runs with NeoX-style RoPE in llama.cpp and is written as is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tuiapp.engine.export.vocab import VocabError, load_vocab, write_vocab

# HF architecture -> (llama.cpp architecture, permute q/k for interleaved RoPE)
ARCHITECTURES = {
    "LlamaForCausalLM": ("llama", True),
    "MistralForCausalLM": ("llama", True),
    "Qwen2ForCausalLM": ("qwen2", False),
}
DTYPES = ("f32", "f16", "bf16")
# Tensors a checkpoint may carry that llama.cpp recomputes itself.
_SKIP_SUFFIXES = ("rotary_emb.inv_freq",)


class GGUFExportError(ValueError):
    """A model folder cannot be exported; the message says why and what to do."""


def read_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.exists():
        raise GGUFExportError(f"{model_dir}: no config.json; is this a Hugging Face model folder?")
    return json.loads(path.read_text(encoding="utf-8"))


def safetensors_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_dir / s for s in shards]
    single = model_dir / "model.safetensors"
    if single.exists():
        return [single]
    found = sorted(model_dir.glob("*.safetensors"))
    if found:
        return found
    raise GGUFExportError(f"{model_dir}: no .safetensors weights (pytorch_model.bin is not read); "
                          "re-save the model with save_pretrained(safe_serialization=True).")


_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}


def read_safetensors_header(file: Path) -> tuple[dict, int]:
    """The JSON header of a .safetensors file and the offset its tensor data starts at."""
    with file.open("rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise GGUFExportError(f"{file}: too short to be a safetensors file.")
        n = int.from_bytes(raw, "little")
        header = f.read(n)
    if n > 100_000_000 or len(header) < n:
        raise GGUFExportError(f"{file}: damaged safetensors header.")
    meta = json.loads(header)
    meta.pop("__metadata__", None)
    return meta, 8 + n


def tensor_shapes(model_dir: str | Path) -> dict[str, tuple[list[int], str]]:
    """name -> (shape, safetensors dtype) from the headers only; no tensor data is read."""
    out: dict[str, tuple[list[int], str]] = {}
    for file in safetensors_files(Path(model_dir)):
        meta, _ = read_safetensors_header(file)
        out.update({name: (list(v["shape"]), v["dtype"]) for name, v in meta.items()})
    return out


def _tensor_index(model_dir: Path) -> dict[str, tuple[Path, int, int, str, list[int]]]:
    """name -> (file, absolute byte offset, byte length, dtype, shape)."""
    index = {}
    for file in safetensors_files(model_dir):
        meta, base = read_safetensors_header(file)
        for name, v in meta.items():
            start, stop = v["data_offsets"]
            index[name] = (file, base + start, stop - start, v["dtype"], list(v["shape"]))
    return index


def _read_tensor(handle, offset: int, length: int, dtype: str, shape: list[int]) -> np.ndarray:
    """Read one tensor with plain file reads (no mmap: its pages would count as resident)."""
    if dtype not in _ST_DTYPES:
        raise GGUFExportError(f"tensor dtype {dtype} is not supported (F32, F16, BF16 are).")
    arr = np.empty(length // np.dtype(_ST_DTYPES[dtype]).itemsize, dtype=_ST_DTYPES[dtype])
    handle.seek(offset)
    if handle.readinto(memoryview(arr).cast("B")) != length:
        raise GGUFExportError(f"{handle.name}: truncated tensor data; the model file is damaged.")
    return arr.reshape(shape)


def _convert(arr: np.ndarray, src: str, kind: str) -> np.ndarray:
    """The array the GGUF stores: f32, f16, or bf16 as raw 16-bit patterns."""
    if src == "BF16":
        if kind == "bf16":
            return arr
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    if kind == "f32":
        return arr.astype(np.float32, copy=False)
    if kind == "f16":
        return arr.astype(np.float16, copy=False)
    # f32/f16 -> bf16, rounding to nearest even like torch does
    bits = arr.astype(np.float32, copy=False).view(np.uint32)
    rounded = bits + (0x7FFF + ((bits >> 16) & 1))
    return (rounded >> 16).astype(np.uint16)


def _rope_theta(cfg: dict) -> float:
    params = cfg.get("rope_parameters") or {}
    return float(cfg.get("rope_theta") or params.get("rope_theta") or 10000.0)


def _rope_scaling(cfg: dict) -> dict | None:
    scaling = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind in (None, "default"):
        return None
    if kind == "linear":
        return {"type": "linear", "factor": float(scaling["factor"])}
    raise GGUFExportError(f"RoPE scaling {kind!r} is not supported by this exporter yet "
                          "(only none and linear).")


def hyper_parameters(cfg: dict) -> dict[str, Any]:
    arch_name = (cfg.get("architectures") or ["?"])[0]
    if arch_name not in ARCHITECTURES:
        raise GGUFExportError(f"architecture {arch_name} is not supported; supported: "
                              f"{', '.join(ARCHITECTURES)}.")
    n_head = cfg["num_attention_heads"]
    hidden = cfg["hidden_size"]
    return {
        "hf_arch": arch_name,
        "arch": ARCHITECTURES[arch_name][0],
        "permute_qk": ARCHITECTURES[arch_name][1],
        "context_length": cfg.get("max_position_embeddings", 2048),
        "embedding_length": hidden,
        "block_count": cfg["num_hidden_layers"],
        "feed_forward_length": cfg["intermediate_size"],
        "head_count": n_head,
        "head_count_kv": cfg.get("num_key_value_heads") or n_head,
        "head_dim": cfg.get("head_dim") or hidden // n_head,
        "rope_theta": _rope_theta(cfg),
        "rope_scaling": _rope_scaling(cfg),
        "rms_eps": float(cfg.get("rms_norm_eps", 1e-6)),
        "vocab_size": cfg["vocab_size"],
        "tied": bool(cfg.get("tie_word_embeddings", False)),
    }


def permute_for_interleaved_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder the rows of each head from [x0..x(d/2-1), y0..] halves to (x0, y0, x1, y1, ...)."""
    rows = w.shape[0]
    head_dim = rows // n_heads
    rest = w.shape[1:]
    return (w.reshape(n_heads, 2, head_dim // 2, *rest)
             .swapaxes(1, 2)
             .reshape(rows, *rest))


def _plan(names: dict[str, tuple[list[int], str]], hp: dict, dtype: str):
    """(hf name, gguf name, shape, gguf type name) in write order, plus skipped names."""
    import gguf

    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == hp["arch"])
    name_map = gguf.get_tensor_name_map(arch, hp["block_count"])
    plan, skipped = [], []
    for hf_name, (shape, _) in names.items():
        if hf_name.endswith(_SKIP_SUFFIXES):
            skipped.append(hf_name)
            continue
        if hf_name == "lm_head.weight" and hp["tied"]:
            skipped.append(hf_name)  # llama.cpp ties a missing output.weight to token_embd
            continue
        out = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if out is None:
            raise GGUFExportError(f"tensor {hf_name} has no llama.cpp name for {hp['arch']}; "
                                  "the checkpoint is not a plain "
                                  f"{hp['hf_arch']} (extra modules or an unmerged adapter?).")
        kind = "f32" if len(shape) == 1 or dtype == "f32" else dtype  # norms/biases stay f32
        plan.append((hf_name, out, shape, kind))
    return plan, skipped


def _file_type(dtype: str) -> int:
    return {"f32": 0, "f16": 1, "bf16": 32}[dtype]


def write_gguf(model_dir: str | Path, out_path: str | Path, dtype: str = "f16",
               progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Export ``model_dir`` to ``out_path``; returns a summary dict (arch, tensors, bytes, vocab).

    ``progress(done, total, tensor_name)`` is called after each tensor is written.
    Raises GGUFExportError (or its VocabError sibling, also a ValueError) for folders it cannot
    export, before the output file is created.
    """
    import gguf

    if dtype not in DTYPES:
        raise GGUFExportError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}.")
    model_dir, out_path = Path(model_dir), Path(out_path)
    cfg = read_config(model_dir)
    hp = hyper_parameters(cfg)
    shapes = tensor_shapes(model_dir)
    plan, skipped = _plan(shapes, hp, dtype)
    try:
        vocab = load_vocab(model_dir, hp["vocab_size"], cfg)
    except VocabError as exc:
        raise GGUFExportError(str(exc)) from None
    if "model.embed_tokens.weight" not in shapes:
        raise GGUFExportError(f"{model_dir}: no model.embed_tokens.weight in the safetensors.")

    qtype = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
             "bf16": gguf.GGMLQuantizationType.BF16}
    np_dtype = {"f32": np.float32, "f16": np.float16, "bf16": np.int16}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(out_path.name + ".partial")
    writer = gguf.GGUFWriter(str(tmp_path), hp["arch"])
    try:
        total_bytes = 0
        for _, out, shape, kind in plan:
            nbytes = int(np.prod(shape)) * np.dtype(np_dtype[kind]).itemsize
            total_bytes += nbytes
            writer.add_tensor_info(out, shape, np.dtype(np_dtype[kind]), nbytes, raw_dtype=qtype[kind])
        _write_metadata(writer, hp, dtype, model_dir)  # after the tensors: it counts parameters
        write_vocab(writer, vocab)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()

        index = _tensor_index(model_dir)
        handles: dict[Path, Any] = {}
        try:
            for done, (hf_name, out, _, kind) in enumerate(plan, 1):
                file, offset, length, src, shape = index[hf_name]
                if file not in handles:
                    handles[file] = open(file, "rb", buffering=0)  # noqa: SIM115 - closed below
                arr = _read_tensor(handles[file], offset, length, src, shape)
                if hp["permute_qk"] and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
                    heads = hp["head_count"] if "q_proj" in hf_name else hp["head_count_kv"]
                    arr = permute_for_interleaved_rope(arr, heads)
                writer.write_tensor_data(np.ascontiguousarray(_convert(arr, src, kind)))
                del arr
                if progress is not None:
                    progress(done, len(plan), out)
        finally:
            for h in handles.values():
                h.close()
        writer.close()
        tmp_path.replace(out_path)
    except BaseException:
        writer.close()
        tmp_path.unlink(missing_ok=True)
        raise
    return {
        "path": str(out_path), "arch": hp["arch"], "hf_arch": hp["hf_arch"], "dtype": dtype,
        "tensors": len(plan), "skipped": skipped, "tensor_bytes": total_bytes,
        "size_bytes": out_path.stat().st_size, "vocab_size": len(vocab.tokens),
        "tokenizer": vocab.model, "pre_tokenizer": vocab.pre, "tied_embeddings": hp["tied"],
        "chat_template": bool(vocab.chat_template),
    }


def _write_metadata(writer, hp: dict, dtype: str, model_dir: Path) -> None:
    """The same general.* and hyper-parameter keys llama.cpp's converter writes: general.* comes
    from the gguf package's own model-card/folder-name heuristics (``gguf.Metadata``)."""
    import gguf

    total, shared, experts, n_experts = writer.get_total_parameter_count()
    meta = gguf.Metadata.load(None, model_dir, None, total)
    meta.name = meta.name or model_dir.name
    if meta.size_label is None and total > 0:
        meta.size_label = gguf.size_label(total, shared, experts, n_experts)
    writer.add_type(gguf.GGUFType.MODEL)
    meta.set_gguf_meta_model(writer)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_file_type(_file_type(dtype))
    writer.add_context_length(hp["context_length"])
    writer.add_embedding_length(hp["embedding_length"])
    writer.add_block_count(hp["block_count"])
    writer.add_feed_forward_length(hp["feed_forward_length"])
    writer.add_head_count(hp["head_count"])
    writer.add_head_count_kv(hp["head_count_kv"])
    writer.add_rope_freq_base(hp["rope_theta"])
    writer.add_layer_norm_rms_eps(hp["rms_eps"])
    if hp["arch"] == "llama":  # the reference writes these for llama; qwen2 derives them
        writer.add_vocab_size(hp["vocab_size"])
        writer.add_rope_dimension_count(hp["head_dim"])
        writer.add_key_length(hp["head_dim"])
        writer.add_value_length(hp["head_dim"])
    if hp["rope_scaling"]:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(hp["rope_scaling"]["factor"])
