"""Turn a job config's ``base_model`` and ``dataset`` strings into paths and store ids.

A config names things the way a person types them ("demo", "7", "demo/sft", "./my.jsonl",
"Qwen/Qwen2.5-0.5B"); a run row needs ids for lineage and the child process needs paths. No
Textual and no torch here; a dataset file given by path is validated and imported on the fly.
"""

from __future__ import annotations

import difflib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuiapp import paths

# The dataset kinds each job kind can train on. RL jobs only need prompts: they take the user
# turn of SFT conversations or the prompt of preference pairs as well.
EXPECTED_KINDS: dict[str, tuple[str, ...]] = {
    "sft": ("sft",), "cpt": ("text",),
    "dpo": ("preference",), "kto": ("kto",), "reward": ("preference",),
    "ppo": ("prompt", "sft", "preference"), "grpo": ("prompt", "sft", "preference"),
    "rloo": ("prompt", "sft", "preference"),
}
# Job kinds that start from a base model or an earlier run (``start_from``).
ALIGNMENT_KINDS = ("dpo", "kto", "reward", "ppo", "grpo", "rloo")


class ResolveError(ValueError):
    """A model or dataset reference that does not lead anywhere, said so a person can fix it."""


@dataclass(frozen=True)
class ResolvedModel:
    spec: str                 # what the config said
    path: str | None          # local folder or hub id; None for a scratch model
    model_id: int | None      # store row (registered on first use)
    local: bool               # a folder on this machine (False: hub id or scratch)
    gguf: dict | None = None  # the GGUF file the folder was dequantised from (tuneloop-gguf.json)


def _looks_like_path(spec: str) -> bool:
    return (spec.startswith((".", "/", "~")) or "\\" in spec or spec.lower().endswith(".gguf")
            or Path(spec).expanduser().exists())


def resolve_base_model(spec: str, store: Any, allow_scratch: bool = False,
                       home: str | Path | None = None, emit: Any = None) -> ResolvedModel:
    """'demo', 'scratch' (cpt), a model id from the store, a local folder, a .gguf file
    (dequantised once into ``<home>/models/gguf-<sha16>/``; ``emit`` gets its progress), or a
    hub id."""
    spec = (spec or "").strip()
    if not spec:
        raise ResolveError("base_model: empty; give 'demo', a model folder, a model id or a hub id")
    if spec == "scratch":
        if not allow_scratch:
            raise ResolveError("base_model: 'scratch' is only for continued pre-training (cpt)")
        return ResolvedModel(spec, None, None, False)
    if spec == "demo":
        folder = paths.DEMO_BASE_MODEL
        if not (folder / "config.json").exists():
            raise ResolveError(
                f"base_model: the demo base model is not built yet ({folder}); "
                "run `tuneloop demo build-base` first")
        return _register_folder(spec, folder, store, name="demo-base")
    if spec.isdigit():
        try:
            row = store.get_model(int(spec))
        except LookupError:
            raise ResolveError(f"base_model: no model with id {spec} in the store "
                               "(see the Models list, or give a folder)") from None
        if row.kind == "gguf":
            return _from_gguf(spec, Path(row.path), store, home, emit)
        local = Path(row.path).exists()
        return ResolvedModel(spec, row.path, row.id, local)
    if _looks_like_path(spec):
        folder = Path(spec).expanduser().resolve()
        if folder.suffix.lower() == ".gguf":
            return _from_gguf(spec, folder, store, home, emit)
        if not folder.exists():
            raise ResolveError(f"base_model: no model folder at {folder}")
        if not folder.is_dir() or not (folder / "config.json").exists():
            raise ResolveError(f"base_model: {folder} is not a Hugging Face model folder "
                               "(it has no config.json)")
        return _register_folder(spec, folder, store)
    # Anything else is a hub id; whether it can be fetched (offline?) is pre-flight's question.
    found = store.find_model(spec)
    row = found or store.add_model(spec, "hf", spec, meta={"source": "hub"})
    return ResolvedModel(spec, spec, row.id, False)


def _from_gguf(spec: str, file: Path, store: Any, home: str | Path | None, emit: Any) -> ResolvedModel:
    """A GGUF base: header checked (refused in words), then the cached dequantised folder,
    registered with the GGUF's path and sha256 in its model row (the run's lineage)."""
    from tuiapp.engine.train import gguf_source

    try:
        folder = gguf_source.materialize(file, home or paths.default_home(), emit)
    except gguf_source.GGUFSourceError as exc:
        raise ResolveError(f"base_model: {exc}") from None
    source = gguf_source.source_of(folder) or {}
    found = store.find_model(str(folder))
    row = found or store.add_model(f"{file.stem} (from GGUF)", "hf", str(folder),
                                   meta={"source": "gguf", **source})
    return ResolvedModel(spec, str(folder), row.id, True, gguf=source)


def _register_folder(spec: str, folder: Path, store: Any, name: str | None = None) -> ResolvedModel:
    found = store.find_model(str(folder))
    kind = "adapter" if (folder / "adapter_config.json").exists() else "hf"
    row = found or store.add_model(name or folder.name, kind, str(folder), meta={"source": "folder"})
    return ResolvedModel(spec, str(folder), row.id, True)


def resolve_start(config: Any, store: Any, base_path: str | None = None):
    """The start point of an alignment job (policy.StartPoint): ``start_from`` as a run id (its
    final adapter or model, on that run's base) or a folder; empty: the resolved base model.
    Raises ResolveError in words."""
    from tuiapp.engine.train import policy

    try:
        return policy.resolve_start(config, store, base_path=base_path)
    except (policy.StartError, policy.modeling.ModelLoadError) as exc:
        message = str(exc)
        raise ResolveError(message if message.startswith("start_from") else f"start_from: {message}") from None


def resolve_dataset(spec: str, store: Any, home: str | Path | None = None, kind: str | None = None):
    """A dataset version id, a version name (its newest version), or a file path (imported).

    Returns the store's DatasetVersion row. A wrong kind is pre-flight's refusal, not an error
    here (``kind``, the job kind, is kept for callers that want to say which job asked).
    """
    spec = (spec or "").strip()
    if not spec:
        raise ResolveError("dataset: empty; give a version id, a name like demo/sft, or a file")
    if spec.isdigit():
        try:
            return store.get_dataset_version(int(spec))
        except LookupError:
            raise ResolveError(f"dataset: no dataset version with id {spec} "
                               "(see `tuneloop data list`)") from None
    versions = store.list_dataset_versions(name=spec)
    if versions:
        return versions[-1]
    path = Path(spec).expanduser()
    if path.exists():
        return import_file(path, store, home, kind)
    names = sorted({v.name for v in store.list_dataset_versions()})
    close = difflib.get_close_matches(spec, names, n=1)
    hint = f" Did you mean {close[0]}?" if close else (
        f" Known names: {', '.join(names[:8])}." if names else "")
    raise ResolveError(f"dataset: {spec!r} is neither a dataset version nor a file.{hint}")


def import_file(path: Path, store: Any, home: str | Path | None, job_kind: str | None = None):
    """Validate a file and register it as a version named after its stem (a private copy in the
    workspace keeps the version immutable if the source changes later)."""
    from tuiapp.engine import data

    path = path.resolve()
    # Detected, not forced: a file of the wrong kind imports fine and pre-flight then says
    # "this is text data; sft needs sft data" instead of listing every row as broken.
    report = data.validate(path)
    if not report.ok:
        shown = "\n".join(f"  {p}" for p in report.errors[:3])
        raise ResolveError(f"dataset: {path} has {report.error_count or len(report.errors)} "
                           f"error(s); fix them first (`tuneloop data validate {path}`):\n{shown}")
    if not report.records:
        raise ResolveError(f"dataset: {path} has no usable rows")
    digest = data.content_hash(path)
    name = path.stem
    for version in store.list_dataset_versions(name=name):
        if version.content_hash == digest:
            return version
    dest = path
    if home is not None:
        dest = Path(home) / "datasets" / digest[:16] / path.name
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if path.is_dir() else shutil.copy2)(path, dest)
    return store.add_dataset_version(name, str(dest), digest, report.format, report.kind,
                                     len(report.records), stats={"file_type": report.file_type},
                                     source=str(path))
