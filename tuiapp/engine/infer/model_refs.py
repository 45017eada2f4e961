"""What a person types to name a model for generation, turned into folders and files.

REF forms:
  ``base`` (or ``demo``)      the demo base model, or the base folder the caller configured
  ``7`` or ``run:7``          a run: its ``final/`` adapter (on the run's base) or full model; a
                              run still going answers from its newest complete checkpoint
  ``model:3``                 a model row in the store (HF folder, adapter folder or GGUF file)
  a folder                    an HF model folder, or an adapter folder (on the base it records)
  a ``.gguf`` file            llama.cpp
  ``hf:<file>.gguf``          the GGUF dequantised by transformers (cached once in
                              ``<home>/models/gguf-<sha16>/``, see train/gguf_source.py);
                              ``base`` may stand for a .gguf file the same way

An alignment run's adapter (dpo, kto, ppo, grpo, rloo) was trained on its start model: the base
with the SFT adapter merged in. ``final/tuneloop-start.json`` (dpo/kto/reward) or the run's
``job.json`` "start" (every alignment run) says which; the ModelRef then carries the SFT adapter
in ``merge_dirs``, merged into the base before the run's own adapter is applied.

No torch and no Textual here (dequantising a GGUF the first time loads transformers); a GGUF
is checked by reading its header (gguf_check).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuiapp import paths

REF_FORMS = ("'base', a run id (7 or run:7), model:<id>, a model or adapter folder, a .gguf file "
             "(llama.cpp) or hf:<file>.gguf (dequantised, transformers)")


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
    merge_dirs: tuple[Path, ...] = ()   # adapters merged into base_dir, in order, before adapter_dir


START_FILE = "tuneloop-start.json"   # written beside an alignment adapter (policy/reward)
_MAX_CHAIN = 8                       # an aligned run started from an aligned run ...: a sane bound


def _recorded_start(folder: Path, run_dir: Path | None) -> dict | None:
    """The StartPoint dict an adapter was trained on: beside it, else in its run's job.json."""
    for path, key in ((folder / START_FILE, None), ((run_dir / "job.json") if run_dir else None, "start")):
        if path is None or not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        start = data.get(key) if key else data
        if isinstance(start, dict):
            return start
    return None


def _model_folder(spec: str | None) -> Path | None:
    if not spec:
        return None
    if spec == "demo":
        return paths.DEMO_BASE_MODEL
    folder = Path(spec).expanduser()
    return folder.resolve() if (folder / "config.json").exists() else None


def start_chain(folder: Path, run_dir: Path | None = None, depth: int = 0) -> tuple[Path | None, tuple[Path, ...]]:
    """(the model folder to load, adapters to merge into it in order) for the adapter in
    ``folder``; (None, ()) when nothing records a start (a plain SFT adapter on its base)."""
    start = _recorded_start(folder, run_dir)
    if not start:
        return None, ()
    if depth >= _MAX_CHAIN:
        raise RefError(f"{folder}: its start points through more than {_MAX_CHAIN} runs; merge it first")
    if start.get("full_dir"):
        full = _model_folder(start["full_dir"])
        if full is None:
            raise RefError(f"{folder} was trained on the full model {start['full_dir']}, which is not "
                           "on this machine")
        return full, ()
    base = _model_folder(start.get("base_path"))
    if base is None:
        raise RefError(f"{folder} was trained on the base {start.get('base_path')!r}, which is not on "
                       "this machine")
    adapter = start.get("adapter_dir")
    if not adapter:
        return base, ()
    adapter_dir = Path(adapter).expanduser()
    if not (adapter_dir / "adapter_config.json").exists():
        raise RefError(f"{folder} was trained on top of the adapter {adapter_dir}, which is gone; "
                       "without it the aligned adapter cannot be loaded")
    # the start adapter may itself be aligned (DPO on a DPO run): merge its own start first
    inner_base, inner = start_chain(adapter_dir, adapter_dir.parent if adapter_dir.name == "final" else None,
                                    depth + 1)
    return (inner_base or base), (*inner, adapter_dir.resolve())


def is_reward_adapter(folder: Path) -> bool:
    """A reward model's adapter scores answers (a 1-label head); it cannot write any."""
    cfg = folder / "adapter_config.json"
    if not cfg.exists():
        return False
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("task_type") == "SEQ_CLS"
    except (OSError, ValueError):
        return False


def _adapter_base_path(adapter_dir: Path) -> Path | None:
    cfg = adapter_dir / "adapter_config.json"
    recorded = json.loads(cfg.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if recorded == "demo" or not recorded:
        return paths.DEMO_BASE_MODEL if (paths.DEMO_BASE_MODEL / "config.json").exists() else None
    folder = Path(recorded).expanduser()
    return folder.resolve() if (folder / "config.json").exists() else None


def _from_folder(ref: str, folder: Path, label: str, base: Path | None = None,
                 run_dir: Path | None = None, **ids: Any) -> ModelRef:
    folder = folder.resolve()
    if (folder / "adapter_config.json").exists():
        if is_reward_adapter(folder):
            raise RefError(f"{ref}: {folder} is a reward model; it scores answers and cannot write "
                           "them (use it as a PPO reward, or in `tuneloop demo run`)")
        start_base, merges = start_chain(folder, run_dir)
        base_dir = start_base or base or _adapter_base_path(folder)
        if base_dir is None:
            raise RefError(f"{ref}: the adapter {folder} records a base model that is not on this "
                           "machine; give it as model:<id> of a registered base, or merge it first")
        return ModelRef(ref, "adapter", label, base_dir=Path(base_dir).resolve(), adapter_dir=folder,
                        merge_dirs=merges, **ids)
    if (folder / "config.json").exists():
        return ModelRef(ref, "hf", label, base_dir=folder, **ids)
    raise RefError(f"{ref}: {folder} holds neither a model (config.json) nor a LoRA adapter "
                   "(adapter_config.json)")


def _from_gguf(ref: str, path: Path, label: str, **ids: Any) -> ModelRef:
    from tuiapp.engine.infer.gguf_file import GGUFFileError, inspect_gguf

    try:
        inspect_gguf(path)
    except GGUFFileError as exc:
        raise RefError(str(exc)) from None
    return ModelRef(ref, "gguf", label, gguf_path=path.resolve(), **ids)


def _dequantised(ref: str, file: Path, store: Any, home: str | Path | None, label: str) -> ModelRef:
    """A GGUF answered by transformers: its cached dequantised folder (made on first use)."""
    from tuiapp.engine.train import gguf_source

    try:
        folder = gguf_source.materialize(file, home or paths.default_home())
    except gguf_source.GGUFSourceError as exc:
        raise RefError(f"{ref}: {exc}") from None
    row = store.find_model(str(folder)) if store is not None else None
    return ModelRef(ref, "hf", label, base_dir=folder, model_id=row.id if row else None)


def _base(store: Any, base_dir: str | Path | None, home: str | Path | None = None) -> ModelRef:
    if base_dir and str(base_dir).lower().endswith(".gguf"):
        return _dequantised("base", Path(base_dir).expanduser(), store, home, "base")
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
    from tuiapp.engine.context import latest_checkpoint

    folder = Path(run.output_dir) / "final"
    if not folder.is_dir():
        folder = latest_checkpoint(run.output_dir)
        if folder is None:
            raise RefError(f"{ref}: run {run_id} has saved no model yet (status {run.status}); "
                           "wait for its first checkpoint")
        label += f" @ {folder.name}"
    base = _run_base(store, run) if (folder / "adapter_config.json").exists() else None
    return _from_folder(f"run:{run_id}", folder, label, base=base, run_dir=Path(run.output_dir),
                        run_id=run_id)


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
    run_dir = path.parent if path.name == "final" else None
    return _from_folder(f"model:{model_id}", path, label, base=base, run_dir=run_dir, model_id=model_id)


def resolve_ref(ref: str, store: Any = None, base_dir: str | Path | None = None,
                home: str | Path | None = None) -> ModelRef:
    """Turn a REF (see the module docstring) into a ModelRef; RefError says what is wrong.

    ``base_dir`` is the folder (or .gguf file) ``base`` stands for (default: the demo base
    model); ``home`` is the workspace a dequantised GGUF is cached in."""
    spec = (ref or "").strip()
    if not spec:
        raise RefError(f"empty model REF; give {REF_FORMS}")
    if spec in ("base", "demo"):
        return _base(store, base_dir, home)
    low = spec.lower()
    if low.startswith("hf:") and low.endswith(".gguf"):
        file = Path(spec[3:]).expanduser()
        return _dequantised(f"hf:{file.resolve()}", file, store, home, f"{file.name} (transformers)")
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
        run_dir = path.resolve().parent if path.resolve().name == "final" else None
        return _from_folder(str(path.resolve()), path, path.name, run_dir=run_dir)
    if path.suffix.lower() == ".gguf":
        raise RefError(f"{spec}: no such GGUF file")
    raise RefError(f"unknown model REF {spec!r}; give {REF_FORMS}")
