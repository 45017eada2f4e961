"""From a trained adapter to GGUF files: merge, write (``gguf.write_gguf``), quantize, predict size.

Quantizing is llama.cpp's own ``llama_model_quantize`` through llama-cpp-python, so every type
llama.cpp offers is available and behaves exactly as its ``llama-quantize`` tool. k-quants need
rows that are a multiple of 256 values; llama.cpp then falls back per tensor (Q6_K -> Q8_0,
Q4_K -> Q5_0, ...). The fallbacks are reported, and ``predict_size`` models the same rules.
"""

from __future__ import annotations

import ctypes
import json
import re
import shutil
from pathlib import Path

from tuiapp.engine.export.gguf import (
    GGUFExportError,
    _plan,
    hyper_parameters,
    read_config,
    tensor_shapes,
)
from tuiapp.engine.infer.gguf_file import GGUFFileError, capture_llama_logs, inspect_gguf

# name -> (llama_ftype value, base tensor type); the values are llama.cpp's LLAMA_FTYPE_MOSTLY_*
QUANT_TYPES = {
    "f32": (0, "f32"), "f16": (1, "f16"), "bf16": (32, "bf16"),
    "q8_0": (7, "q8_0"), "q6_k": (18, "q6_k"),
    "q5_k_m": (17, "q5_k"), "q5_k_s": (16, "q5_k"), "q5_0": (8, "q5_0"), "q5_1": (9, "q5_1"),
    "q4_k_m": (15, "q4_k"), "q4_k_s": (14, "q4_k"), "q4_0": (2, "q4_0"), "q4_1": (3, "q4_1"),
    "iq4_nl": (25, "iq4_nl"), "iq4_xs": (30, "iq4_xs"),
    "q3_k_l": (13, "q3_k"), "q3_k_m": (12, "q3_k"), "q3_k_s": (11, "q3_k"), "q2_k": (10, "q2_k"),
}
# bits per weight of each tensor type (block bytes * 8 / block size)
BITS = {"f32": 32.0, "f16": 16.0, "bf16": 16.0, "q8_0": 8.5, "q6_k": 6.5625, "q5_k": 5.5,
        "q5_0": 5.5, "q5_1": 6.0, "q4_k": 4.5, "q4_0": 4.5, "q4_1": 5.0, "iq4_nl": 4.5,
        "iq4_xs": 4.25, "q3_k": 3.4375, "q2_k": 2.625}
BLOCK = {"q6_k": 256, "q5_k": 256, "q4_k": 256, "q3_k": 256, "q2_k": 256, "iq4_xs": 256}
# what llama.cpp uses when a row is not a multiple of a k-quant's 256-value block
FALLBACK = {"q6_k": "q8_0", "q5_k": "q5_1", "q4_k": "q5_0", "q3_k": "iq4_nl", "q2_k": "iq4_nl",
            "iq4_xs": "iq4_nl"}


class ExportError(ValueError):
    """An export step failed; the message says which and what to do."""


# ------------------------------------------------------------------ merge


def _stored_dtype(model_dir: Path) -> str:
    shapes = tensor_shapes(model_dir)
    kinds = {dt for shape, dt in shapes.values() if len(shape) > 1}
    return {"F16": "float16", "BF16": "bfloat16"}.get(next(iter(kinds), "F32"), "float32")


def merge_adapter(base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path,
                  dtype: str | None = None, start_adapters: tuple[str | Path, ...] = ()) -> dict:
    """Merge a PEFT adapter into its base and save a safetensors HF folder with the tokenizer.

    ``start_adapters`` are merged first, in order: an aligned run's adapter was trained on the
    base with its SFT adapter merged in, so the SFT adapter goes in before it.

    The arithmetic runs in float32; the result is stored in ``dtype`` (default: the base's own
    weight dtype). A 4-bit (bitsandbytes) base is dequantised before the merge. Trainable token
    rows (``trainable_token_indices``) are written into the merged embedding by PEFT's
    ``merge_and_unload``.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir, adapter_dir, out_dir = Path(base_dir), Path(adapter_dir), Path(out_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise ExportError(f"{adapter_dir}: no adapter_config.json; this is not a PEFT adapter folder.")
    base_cfg = read_config(base_dir)
    quantized = "quantization_config" in base_cfg
    try:
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    except ImportError as exc:
        raise ExportError(f"{base_dir}: the base is stored quantized and cannot be loaded here "
                          f"({exc}); merge against the full-precision base folder instead.") from None
    if quantized and hasattr(model, "dequantize"):
        model = model.dequantize()
    out_dtype = dtype or ("float16" if quantized else _stored_dtype(base_dir))
    for start in start_adapters:
        if not (Path(start) / "adapter_config.json").exists():
            raise ExportError(f"{start}: the start adapter to merge first is missing (no adapter_config.json).")
        model = PeftModel.from_pretrained(model, str(start)).merge_and_unload()
    peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    merged = peft_model.merge_and_unload()
    merged = merged.to(getattr(torch, out_dtype))
    if hasattr(merged.config, "quantization_config"):
        del merged.config.quantization_config
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out_dir))
    tok_source = adapter_dir if (adapter_dir / "tokenizer.json").exists() else base_dir
    tokenizer = AutoTokenizer.from_pretrained(str(tok_source))
    tokenizer.save_pretrained(str(out_dir))
    jinja = tok_source / "chat_template.jinja"
    if jinja.exists() and not (out_dir / "chat_template.jinja").exists():
        shutil.copy(jinja, out_dir / "chat_template.jinja")
    _carry_vocab_files(out_dir, tok_source, base_dir)
    n_params = sum(p.numel() for p in merged.parameters())
    return {"path": str(out_dir), "dtype": out_dtype, "parameters": n_params,
            "tokenizer_from": str(tok_source), "dequantized": quantized,
            "start_adapters": [str(a) for a in start_adapters]}


def _carry_vocab_files(out_dir: Path, *sources: Path) -> None:
    """What a fast tokenizer's save_pretrained drops but llama.cpp's converter reads: the
    SentencePiece ``tokenizer.model`` (Gemma, Phi-3, Llama-2-style converters read only it) and
    the tokenizer class the model's own folder declares (Phi-3's converter reads a BPE vocabulary
    only when it says GPT2Tokenizer; transformers 5 rewrites the class on save)."""
    for name in ("tokenizer.model",):
        source = next((src / name for src in sources if (src / name).is_file()), None)
        if source is not None and not (out_dir / name).exists():
            shutil.copy(source, out_dir / name)
    declared = None
    for src in reversed(sources):  # the base folder's own word wins over a re-saved copy
        try:
            declared = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8")).get(
                "tokenizer_class") or declared
        except (OSError, ValueError):
            continue
        if declared:
            break
    out_cfg = out_dir / "tokenizer_config.json"
    if declared and out_cfg.is_file():
        cfg = json.loads(out_cfg.read_text(encoding="utf-8"))
        if cfg.get("tokenizer_class") != declared:
            cfg["tokenizer_class"] = declared
            out_cfg.write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")


# ------------------------------------------------------------------ quantize


def _qtype(qtype: str) -> tuple[int, str]:
    key = qtype.lower()
    if key not in QUANT_TYPES:
        raise ExportError(f"unknown quantization type {qtype!r}; choose one of "
                          f"{', '.join(QUANT_TYPES)}.")
    return QUANT_TYPES[key]


def quantize(f16_path: str | Path, out_path: str | Path, qtype: str, *, nthread: int = 1) -> dict:
    """Quantize a F32/F16/BF16 GGUF with llama.cpp; returns path, size, tensor types, fallbacks."""
    import llama_cpp

    f16_path, out_path = Path(f16_path), Path(out_path)
    ftype, _ = _qtype(qtype)
    try:
        info = inspect_gguf(f16_path)
    except GGUFFileError as exc:
        raise ExportError(str(exc)) from None
    if info["file_type"] not in (0, 1, 32):
        raise ExportError(f"{f16_path}: already quantized (file type {info['file_type']}); quantize "
                          "from the F16/F32/BF16 export instead.")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = nthread
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".partial")
    with capture_llama_logs() as lines:
        rc = llama_cpp.llama_model_quantize(str(f16_path).encode(), str(tmp).encode(),
                                            ctypes.byref(params))
    if rc != 0:
        tmp.unlink(missing_ok=True)
        errors = [ln.strip() for ln in lines if "error" in ln.lower() or "failed" in ln.lower()]
        raise ExportError(f"llama.cpp could not quantize {f16_path.name} to {qtype}: "
                          f"{errors[-1] if errors else 'no reason logged'}")
    tmp.replace(out_path)
    fallbacks = [ln.strip() for ln in lines if "fallback" in ln.lower()]
    out = inspect_gguf(out_path)
    return {"path": str(out_path), "qtype": qtype.lower(), "size_bytes": out["size_bytes"],
            "tensor_types": out["tensor_types"], "fallbacks": fallbacks}


# ------------------------------------------------------------------ predicted size


def _more_bits(layer: int, n_layers: int) -> bool:
    """llama.cpp's rule for which layers of a *_M type keep more bits in attn_v / ffn_down."""
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def _tensor_type(shape: list[int], qtype: str, base: str, n_layers: int, is_output: bool,
                 v_or_down_layer: int | None) -> str:
    """The type llama.cpp gives one tensor: the output matrix keeps q6_k, a *_M type gives some
    layers' attn_v / ffn_down more bits, and a row that is not a whole k-quant block falls back."""
    if len(shape) == 1 or qtype in ("f32", "f16", "bf16"):
        return "f32" if len(shape) == 1 else base
    kind = base
    if is_output and qtype != "q8_0":
        kind = "q6_k"
    elif qtype in ("q4_k_m", "q5_k_m") and v_or_down_layer is not None:
        if _more_bits(v_or_down_layer, n_layers):
            kind = "q6_k"
    row = shape[-1]  # values per row (the innermost dimension)
    if row % BLOCK.get(kind, 32):
        kind = FALLBACK.get(kind, "f16")
        if row % 32:
            kind = "f16"
    return kind


def _tensor_bytes(n: int, kind: str, name: str) -> int:
    return -(-int(n * BITS[kind]) // 8) + 32 + len(name) + 40  # + padding and table entry


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _own_plan_size(model_dir: Path, cfg: dict, qtype: str, base: str) -> tuple[int, int]:
    """(tensor bytes, vocab size) from the exact tensor list our own writer would write."""
    hp = hyper_parameters(cfg)
    plan, _ = _plan(tensor_shapes(model_dir), hp, "f16")
    has_output = any(out == "output.weight" for _, out, _, _ in plan)
    total = 0
    for _, out, shape, _ in plan:
        is_output = out == "output.weight" or (not has_output and out == "token_embd.weight")
        layer = int(out.split(".")[1]) if (".attn_v." in out or ".ffn_down." in out) else None
        kind = _tensor_type(shape, qtype, base, hp["block_count"], is_output, layer)
        total += _tensor_bytes(_numel(shape), kind, out)
    return total, hp["vocab_size"]


_LAYER = re.compile(r"\.layers?\.(\d+)\.")


def _general_size(model_dir: Path, cfg: dict, qtype: str, base: str) -> tuple[int, int]:
    """(tensor bytes, vocab size) for any architecture: every stored tensor (the safetensors
    headers: parameter count per tensor) at the bytes per value of the type llama.cpp gives it.
    llama.cpp's converter renames and sometimes splits or fuses tensors, but keeps their values."""
    text = cfg.get("text_config") or {}
    n_layers = int(cfg.get("num_hidden_layers") or text.get("num_hidden_layers") or 1)
    tied = bool(cfg.get("tie_word_embeddings", text.get("tie_word_embeddings", False)))
    shapes = tensor_shapes(model_dir)
    has_head = any(n.endswith("lm_head.weight") for n in shapes) and not tied
    total, vocab = 0, int(cfg.get("vocab_size") or text.get("vocab_size") or 0)
    for name, (shape, _) in shapes.items():
        if name.endswith("rotary_emb.inv_freq") or (tied and name.endswith("lm_head.weight")):
            continue  # llama.cpp recomputes one and ties the other
        embed = name.endswith("embed_tokens.weight")
        if embed and len(shape) == 2:
            vocab = vocab or shape[0]
        is_output = name.endswith("lm_head.weight") or (not has_head and embed)
        found = _LAYER.search(name)
        layer = int(found.group(1)) if found and (".v_proj." in name or ".down_proj." in name) else None
        kind = _tensor_type(shape, qtype, base, n_layers, is_output, layer)
        total += _tensor_bytes(_numel(shape), kind, name)
    return total, vocab


def _metadata_size(model_dir: Path, cfg: dict, vocab_size: int) -> int:
    """Bytes of the tokenizer and other keys: exact from our vocab reader where it reads the
    tokenizer, else estimated from tokenizer.json (strings are stored about as long)."""
    from tuiapp.engine.export.vocab import VocabError, load_vocab

    try:
        vocab = load_vocab(model_dir, vocab_size, cfg)
    except (VocabError, ValueError, KeyError):
        tok = model_dir / "tokenizer.json"
        return (tok.stat().st_size if tok.is_file() else 0) + 8 * vocab_size + 1024
    meta = sum(len(t.encode()) + 8 + 4 for t in vocab.tokens)
    meta += sum(len(m.encode()) + 8 for m in vocab.merges) + 4 * len(vocab.scores or [])
    meta += len((vocab.chat_template or "").encode()) + 1024
    return meta


def predict_size(model_dir: str | Path, qtype: str) -> int:
    """Bytes a GGUF of ``qtype`` will take: tensors at their (fallback) types + metadata. Exact
    per tensor for the architectures our own writer knows, estimated from the stored tensors
    for any other (llama.cpp's converter writes those)."""
    model_dir = Path(model_dir)
    _, base = _qtype(qtype)
    cfg = read_config(model_dir)
    try:
        tensors, vocab_size = _own_plan_size(model_dir, cfg, qtype.lower(), base)
    except GGUFExportError:  # not ours to write (another architecture, a RoPE scaling we skip)
        try:
            tensors, vocab_size = _general_size(model_dir, cfg, qtype.lower(), base)
        except GGUFExportError as exc:
            raise ExportError(str(exc)) from None
    return tensors + _metadata_size(model_dir, cfg, vocab_size)
