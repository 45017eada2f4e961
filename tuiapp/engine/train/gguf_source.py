"""A GGUF file as a base model: dequantised once through transformers' GGUF reader into a cached
Hugging Face folder in the workspace, keyed by the file's sha256.

    folder = materialize(gguf_path, home, emit=print_progress)   # <home>/models/gguf-<sha16>/

The folder holds model.safetensors, the tokenizer files and ``tuneloop-gguf.json`` (which file,
its sha256, architecture, file type); the next run finds it by the hash and loads nothing.
``check_readable`` reads only the header (the ``gguf`` package) so an architecture or tensor type
transformers cannot dequantise is refused in words before anything heavy loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

SOURCE_FILE = "tuneloop-gguf.json"
_NATIVE_TYPES = {"F32", "F16", "BF16"}


class GGUFSourceError(ValueError):
    """A GGUF file that cannot become a base model, said so a person can act on it."""


def check_readable(path: str | Path) -> dict[str, Any]:
    """{architecture, file_type, tensor_types} of a GGUF transformers can dequantise; else raise."""
    path = Path(path)
    if not path.is_file():
        raise GGUFSourceError(f"{path}: no such GGUF file")
    try:
        from gguf import GGUFReader, LlamaFileType
        from gguf.quants import _type_traits
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    except ImportError as exc:
        raise GGUFSourceError(f"reading a GGUF base model needs the gguf package ({exc})") from exc
    try:
        reader = GGUFReader(str(path), "r")
    except Exception as exc:  # noqa: BLE001 - damaged headers raise many kinds
        raise GGUFSourceError(f"{path}: not a readable GGUF file ({type(exc).__name__}: "
                              f"{str(exc)[:160]})") from None

    def text(key: str):
        field = reader.fields.get(key)
        if field is None:
            return None
        part = field.parts[field.data[0]]
        return bytes(part).decode("utf-8", "replace") if part.dtype.itemsize == 1 else part.tolist()[0]

    arch = text("general.architecture")
    if not arch:
        raise GGUFSourceError(f"{path}: no general.architecture key; the file is damaged")
    if arch not in GGUF_SUPPORTED_ARCHITECTURES:
        known = ", ".join(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))
        raise GGUFSourceError(f"{path}: architecture {arch!r} cannot be read by transformers' GGUF "
                              f"loader (it reads {known}); convert the original Hugging Face "
                              "folder instead")
    readable = _NATIVE_TYPES | {t.name for t in _type_traits}
    types = sorted({t.tensor_type.name for t in reader.tensors})
    unknown = [t for t in types if t not in readable]
    if unknown:
        raise GGUFSourceError(f"{path}: tensor type(s) {', '.join(unknown)} cannot be dequantised "
                              "by the installed gguf package; use an f16/q8_0/q4_k file of the model")
    file_type = text("general.file_type")
    try:
        file_type_name = LlamaFileType(int(file_type)).name if file_type is not None else None
    except ValueError:
        file_type_name = str(file_type)
    return {"architecture": arch, "file_type": file_type_name, "tensor_types": types}


def file_sha256(path: str | Path, emit: Callable[..., None] | None = None) -> str:
    digest = hashlib.sha256()
    size = max(1, Path(path).stat().st_size)
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
            done += len(chunk)
            if emit and done % (64 << 20) < (8 << 20):
                emit("gguf_hash", share=round(done / size, 3))
    return digest.hexdigest()


def cached_folder(home: str | Path, sha256: str) -> Path:
    return Path(home) / "models" / f"gguf-{sha256[:16]}"


def source_of(folder: str | Path) -> dict[str, Any] | None:
    """The tuneloop-gguf.json of a folder made from a GGUF, else None."""
    meta = Path(folder) / SOURCE_FILE
    return json.loads(meta.read_text(encoding="utf-8")) if meta.exists() else None


def _counted(items, say: Callable[..., None]):
    """Yield ``items``, saying gguf_tensors (done, total) about every tenth of the way."""
    items = list(items)
    total = len(items)
    step = max(1, total // 10)
    for i, item in enumerate(items, 1):
        yield item
        if i % step == 0 or i == total:
            say("gguf_tensors", done=i, total=total)


def materialize(path: str | Path, home: str | Path,
                emit: Callable[..., None] | None = None) -> Path:
    """The cached HF folder for this GGUF (made on first use). ``emit(event, **fields)`` gets
    gguf_hash / gguf_cached / gguf_check / gguf_load / gguf_tensors (done, total) / gguf_save /
    gguf_done."""
    def say(event: str, **fields: Any) -> None:
        if emit:
            emit(event, **fields)

    path = Path(path).expanduser().resolve()
    header = check_readable(path)
    sha = file_sha256(path, emit)
    folder = cached_folder(home, sha)
    if (folder / SOURCE_FILE).exists() and (folder / "config.json").exists():
        say("gguf_cached", folder=str(folder))
        return folder
    say("gguf_check", **header)
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say("gguf_load", file=str(path))
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # tuneloop's own events say how it goes
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    plain_tqdm = getattr(gguf_utils, "tqdm", None)
    # its tensor loop uses tqdm directly (not transformers' switch): count through our events
    gguf_utils.tqdm = lambda items, **_: _counted(items, say)
    try:
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                     dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - name the file and the cause
        raise GGUFSourceError(f"{path}: transformers could not dequantise it: {exc}") from exc
    finally:
        if plain_tqdm is not None:
            gguf_utils.tqdm = plain_tqdm
        if bars:
            transformers.utils.logging.enable_progress_bar()
    tmp = folder.parent / f".{folder.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    say("gguf_save", folder=str(folder))
    # The weights are plain fp32 now; drop the "gguf quantizer" transformers keeps on the model
    # (it refuses to save, and the folder must load as an ordinary model).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    (tmp / SOURCE_FILE).write_text(json.dumps({
        "gguf_path": str(path), "gguf_sha256": sha, "size_bytes": path.stat().st_size,
        **header, "transformers": transformers.__version__}, indent=2), encoding="utf-8")
    try:
        tmp.rename(folder)
    except OSError:  # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    say("gguf_done", folder=str(folder))
    return folder
