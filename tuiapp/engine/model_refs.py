"""What a person types to name a model for generation, turned into folders and files.

REF forms:
  ``base`` (or ``demo``)      the demo base model, or the base folder the caller configured
  ``7`` or ``run:7``          a run: its ``final/`` adapter (on the run's base) or full model; a
                              run still going answers from its newest complete checkpoint
  ``model:3``                 a model row in the store (HF folder, adapter folder or GGUF file)
  a folder                    an HF model folder, or an adapter folder (on the base it records)
  a ``.gguf`` file            llama.cpp

No torch and no Textual here; a GGUF is checked by reading its header (gguf_check).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuiapp import paths

REF_FORMS = "'base', a run id (7 or run:7), model:<id>, a model or adapter folder, or a .gguf file"


class RefError(ValueError):
    """A REF that leads nowhere, said so a person can fix it."""


@dataclass(frozen=True)
class ModelRef:
    ref: str                       # canonical: "base", "run:7", "model:3" or an absolute path
    kind: str                      # "hf" (a full model folder) | "adapter" | "gguf"
    label: str                     # for tables and pane titles
    base_dir: Path | None = None   # hf: the model folder; adapter: the base it loads on
    adapter_dir: Path | None = None
    gguf_path: Path | None = None
    run_id: int | None = None
    model_id: int | None = None


def _adapter_base_path(adapter_dir: Path) -> Path | None:
    cfg = adapter_dir / "adapter_config.json"
    recorded = json.loads(cfg.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if recorded == "demo" or not recorded:
        return paths.DEMO_BASE_MODEL if (paths.DEMO_BASE_MODEL / "config.json").exists() else None
    folder = Path(recorded).expanduser()
    return folder.resolve() if (folder / "config.json").exists() else None


def _from_folder(ref: str, folder: Path, label: str, base: Path | None = None, **ids: Any) -> ModelRef:
    folder = folder.resolve()
    if (folder / "adapter_config.json").exists():
        base_dir = base or _adapter_base_path(folder)
        if base_dir is None:
            raise RefError(f"{ref}: the adapter {folder} records a base model that is not on this "
                           "machine; give it as model:<id> of a registered base, or merge it first")
        return ModelRef(ref, "adapter", label, base_dir=Path(base_dir).resolve(), adapter_dir=folder, **ids)
    if (folder / "config.json").exists():
        return ModelRef(ref, "hf", label, base_dir=folder, **ids)
    raise RefError(f"{ref}: {folder} holds neither a model (config.json) nor a LoRA adapter "
                   "(adapter_config.json)")


def _from_gguf(ref: str, path: Path, label: str, **ids: Any) -> ModelRef:
    from .gguf_check import GGUFFileError, inspect_gguf

    try:
        inspect_gguf(path)
    except GGUFFileError as exc:
        raise RefError(str(exc)) from None
    return ModelRef(ref, "gguf", label, gguf_path=path.resolve(), **ids)


def _base(store: Any, base_dir: str | Path | None) -> ModelRef:
    folder = Path(base_dir).expanduser() if base_dir else paths.DEMO_BASE_MODEL
    if not (folder / "config.json").exists():
        if base_dir is None:
            raise RefError(f"base: the demo base model is not built yet ({folder}); run "
                           "`tuneloop demo build-base` first, or give a model folder")
        raise RefError(f"base: {folder} is not a model folder (no config.json)")
    row = store.find_model(str(folder.resolve())) or store.find_model(str(folder)) if store else None
    return ModelRef("base", "hf", "base", base_dir=folder.resolve(), model_id=row.id if row else None)


def _run_base(store: Any, run) -> Path | None:
    if run.base_model_id is not None:
        row = store.get_model(run.base_model_id)
        if (Path(row.path) / "config.json").exists():
            return Path(row.path).resolve()
    spec = (run.config or {}).get("base_model")
    if spec == "demo":
        return paths.DEMO_BASE_MODEL
    if spec and (Path(spec).expanduser() / "config.json").exists():
        return Path(spec).expanduser().resolve()
    return None


def _run(store: Any, run_id: int, ref: str) -> ModelRef:
    if store is None:
        raise RefError(f"{ref}: run ids need the workspace store")
    try:
        run = store.get_run(run_id)
    except LookupError:
        raise RefError(f"{ref}: no run with id {run_id} (see `tuneloop runs list`)") from None
    label = f"run {run.id}" + (f" ({run.name})" if run.name else f" ({run.kind})")
    if not run.output_dir:
        raise RefError(f"{ref}: run {run_id} has no output folder yet (status {run.status})")
    from .jobs import latest_checkpoint

    folder = Path(run.output_dir) / "final"
    if not folder.is_dir():
        folder = latest_checkpoint(run.output_dir)
        if folder is None:
            raise RefError(f"{ref}: run {run_id} has saved no model yet (status {run.status}); "
                           "wait for its first checkpoint")
        label += f" @ {folder.name}"
    base = _run_base(store, run) if (folder / "adapter_config.json").exists() else None
    return _from_folder(f"run:{run_id}", folder, label, base=base, run_id=run_id)


def _model(store: Any, model_id: int, ref: str) -> ModelRef:
    if store is None:
        raise RefError(f"{ref}: model ids need the workspace store")
    try:
        row = store.get_model(model_id)
    except LookupError:
        raise RefError(f"{ref}: no model with id {model_id} in the store") from None
    path = Path(row.path)
    label = f"{row.name} (model {row.id})"
    if row.kind == "gguf":
        return _from_gguf(f"model:{model_id}", path, label, model_id=model_id)
    if not path.exists():
        raise RefError(f"{ref}: model {model_id} points at {path}, which is not on this machine")
    base = None
    if row.kind == "adapter" and row.base_model_id is not None:
        base_row = store.get_model(row.base_model_id)
        base = Path(base_row.path) if (Path(base_row.path) / "config.json").exists() else None
    return _from_folder(f"model:{model_id}", path, label, base=base, model_id=model_id)


def resolve_ref(ref: str, store: Any = None, base_dir: str | Path | None = None) -> ModelRef:
    """Turn a REF (see the module docstring) into a ModelRef; RefError says what is wrong.

    ``base_dir`` is the folder ``base`` stands for (default: the demo base model)."""
    spec = (ref or "").strip()
    if not spec:
        raise RefError(f"empty model REF; give {REF_FORMS}")
    if spec in ("base", "demo"):
        return _base(store, base_dir)
    low = spec.lower()
    if spec.isdigit() or (low.startswith("run:") and spec[4:].strip().isdigit()):
        return _run(store, int(spec.split(":")[-1]), spec)
    if low.startswith("model:") and spec[6:].strip().isdigit():
        return _model(store, int(spec[6:]), spec)
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise RefError(f"{spec}: a file that is not .gguf; give a model folder or a GGUF file")
        return _from_gguf(str(path.resolve()), path, path.name)
    if path.is_dir():
        return _from_folder(str(path.resolve()), path, path.name)
    if path.suffix.lower() == ".gguf":
        raise RefError(f"{spec}: no such GGUF file")
    raise RefError(f"unknown model REF {spec!r}; give {REF_FORMS}")
