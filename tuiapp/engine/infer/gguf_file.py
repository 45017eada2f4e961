"""Check a GGUF file in Python before llama.cpp sees it, and open it in llama.cpp safely.

llama.cpp can abort the whole process on a damaged file; a TUI or CLI must instead say what is
wrong. So the header, metadata and tensor table are parsed with ``gguf.GGUFReader`` and every
tensor's data range is checked against the file size first.
"""

from __future__ import annotations

import contextlib
import ctypes
from pathlib import Path

GGUF_MAGIC = b"GGUF"


class GGUFFileError(ValueError):
    """A GGUF file is missing, truncated or corrupted; the message names the file and the fix."""


def inspect_gguf(path: str | Path) -> dict:
    """Validate ``path`` and summarise it: arch, file_type, tensors, tensor types, metadata keys.

    Raises GGUFFileError with a readable reason for anything llama.cpp could not load.
    """
    path = Path(path)
    if not path.is_file():
        raise GGUFFileError(f"{path}: no such file.")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
    if len(head) < 8:
        raise GGUFFileError(f"{path}: {size} bytes is too short to be a GGUF file (truncated?).")
    if head[:4] != GGUF_MAGIC:
        raise GGUFFileError(f"{path}: not a GGUF file (starts with {head[:4]!r}, expected b'GGUF'); "
                            "the file is corrupted or of another format. Export it again.")
    version = int.from_bytes(head[4:8], "little")
    if version not in (2, 3):
        raise GGUFFileError(f"{path}: GGUF version {version} is not supported (2 or 3 expected); "
                            "the header is corrupted.")

    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path), "r")
    except Exception as exc:  # the reader raises many kinds on damaged headers
        raise GGUFFileError(f"{path}: the header or tensor table cannot be read ({exc.__class__.__name__}: "
                            f"{str(exc)[:160]}); the file is truncated or corrupted. Export it again.") from None
    end = 0
    for t in reader.tensors:
        stop = int(t.data_offset) + int(t.n_bytes)
        if stop > size:
            raise GGUFFileError(f"{path}: truncated — tensor {t.name} needs bytes up to {stop} but the "
                                f"file has {size}. Export it again.")
        end = max(end, stop)
    fields = reader.fields

    def value(key):
        field = fields.get(key)
        if field is None:
            return None
        part = field.parts[field.data[0]]
        if key.startswith("general.") and part.dtype.kind == "u" and part.dtype.itemsize == 1:
            return bytes(part).decode("utf-8", "replace")
        return part.tolist()[0] if len(part) == 1 else bytes(part).decode("utf-8", "replace")

    arch = value("general.architecture")
    if not arch:
        raise GGUFFileError(f"{path}: no general.architecture key; the metadata is corrupted.")
    types = sorted({t.tensor_type.name for t in reader.tensors})
    return {"path": str(path), "version": version, "size_bytes": size, "arch": arch,
            "file_type": value("general.file_type"), "tensors": len(reader.tensors),
            "tensor_types": types, "data_end": end, "keys": sorted(fields)}


# ------------------------------------------------------------------ llama.cpp


@contextlib.contextmanager
def capture_llama_logs():
    """Collect llama.cpp's log lines (a list) instead of printing them, then restore printing."""
    import llama_cpp
    from llama_cpp import _logger

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def sink(level, text, user_data):  # noqa: ARG001 - ctypes signature
        lines.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(sink, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


@contextlib.contextmanager
def open_llama(path: str | Path, *, vocab_only: bool = False, n_ctx: int = 512,
               n_threads: int = 1, exact: bool = True):
    """A llama_cpp.Llama on a checked file, closed on exit (its destructor misbehaves at exit).

    ``exact`` keeps the KV cache in f32 so an f32 file's logits match the reference closely.
    """
    import llama_cpp

    path = Path(path)
    inspect_gguf(path)
    kwargs = dict(vocab_only=vocab_only, n_ctx=n_ctx, n_threads=n_threads,
                  n_threads_batch=n_threads, logits_all=not vocab_only, verbose=False)
    if exact:
        kwargs.update(type_k=0, type_v=0)  # GGML_TYPE_F32
    try:
        with capture_llama_logs() as lines:
            llm = llama_cpp.Llama(str(path), **kwargs)
    except ValueError:
        reason = next((ln.strip() for ln in lines if "error" in ln.lower()), "no reason given")
        raise GGUFFileError(f"{path}: llama.cpp could not load it: {reason}") from None
    try:
        yield llm
    finally:
        llm.close()
