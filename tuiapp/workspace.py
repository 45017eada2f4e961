"""The workspace: one home folder holding ``tuneloop.db`` and the artifact folders.

A fresh home is seeded with the demo world (its datasets registered as versions, the demo base
model once it exists) so a new user sees something real at once. No Textual, no torch here:
the TUI opens a workspace before its first paint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from store import Store

from . import paths

ENV_HOME = "TUNELOOP_HOME"
SEEDED_KEY = "demo_seeded"

# The demo files registered in a fresh workspace (stems become names "demo/<stem>").
DEMO_DATASETS = (
    "corpus.txt",
    "sft.jsonl",
    "preferences.jsonl",
    "kto.jsonl",
    "eval_heldout.jsonl",
    "eval_forbidden.jsonl",
)


@dataclass(frozen=True)
class Workspace:
    home: Path
    store: Store
    db_path: Path

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def exports_dir(self) -> Path:
        return self.home / "exports"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"


def resolve_home(cli_home: str | os.PathLike | None = None) -> Path:
    """``--home`` wins, then ``$TUNELOOP_HOME``, then the XDG data dir."""
    if cli_home:
        return Path(cli_home).expanduser().resolve()
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser().resolve()
    return paths.default_home()


def open_workspace(home: str | os.PathLike, seed_demo: bool = True) -> Workspace:
    home = Path(home)
    try:
        home.mkdir(parents=True, exist_ok=True)
        for sub in ("runs", "datasets", "exports", "models"):
            (home / sub).mkdir(exist_ok=True)
    except OSError as exc:
        raise WorkspaceError(f"cannot create the workspace at {home}: {exc.strerror}") from exc
    db_path = home / paths.DB_NAME
    ws = Workspace(home=home, store=Store(db_path), db_path=db_path)
    if seed_demo:
        if not ws.store.get_meta(SEEDED_KEY):
            seed_demo_world(ws)
        # The demo base model is built after the datasets exist (``tuneloop demo build-base``),
        # so its registration is checked on every open, not only the first.
        register_demo_model(ws)
    return ws


class WorkspaceError(RuntimeError):
    """A workspace that cannot be opened, said in words a person can act on."""


def seed_demo_world(ws: Workspace) -> list[int]:
    """Register the demo datasets in the store, validated like any user file.

    It runs before the TUI's first paint on a fresh home; validating the demo files takes
    under 0.1 s. Token statistics are computed when a user opens a dataset.
    """
    from tuiapp.engine import data

    ids: list[int] = []
    for fname in DEMO_DATASETS:
        path = paths.DEMO_DIR / fname
        if not path.exists():
            continue
        report = data.validate(path)
        if not report.ok:  # a broken checkout: say so rather than register bad data
            raise WorkspaceError(f"demo dataset {path} does not validate: {report.errors[0]}")
        dv = ws.store.add_dataset_version(
            name=f"demo/{path.stem}",
            path=str(path),
            content_hash=data.content_hash(path),
            format=report.format,
            kind=report.kind,
            rows=report.rows,
            source="demo",
        )
        ids.append(dv.id)
    ws.store.set_meta(SEEDED_KEY, "1")
    return ids


def register_demo_model(ws: Workspace) -> int | None:
    """Register the committed demo base model once it exists; returns its model id."""
    folder = paths.DEMO_BASE_MODEL
    if not (folder / "config.json").exists():
        return None
    found = ws.store.find_model(str(folder))
    if found:
        return found.id
    return ws.store.add_model("demo-base", "hf", str(folder), meta={"source": "demo"}).id
