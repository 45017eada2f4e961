"""The workspace: one home folder holding ``tuneloop.db`` and the artifact folders.

A fresh home is seeded with the demo world (its datasets registered as versions, the demo base
model once it exists) so a new user sees something real at once. No Textual, no torch here:
the TUI opens a workspace before its first paint.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from store import Store

from . import paths

ENV_HOME = "TUNELOOP_HOME"
SEEDED_KEY = "demo_seeded"

# The demo files and the kind of job each one feeds. Formats are what the dataset layer
# detects for them; they are recomputed (and checked) when a user validates the file.
DEMO_DATASETS: dict[str, str] = {
    "corpus.txt": "text",
    "sft.jsonl": "sft",
    "preferences.jsonl": "preference",
    "kto.jsonl": "kto",
    "eval_heldout.jsonl": "eval",
    "eval_forbidden.jsonl": "eval",
}


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _count_rows(path: Path) -> int:
    if path.suffix == ".jsonl":
        with path.open("rb") as f:
            return sum(1 for line in f if line.strip())
    return 1  # a raw text corpus is one document


def _detect_format(path: Path) -> str:
    """Cheap format guess from the first row; the dataset layer re-checks on validation."""
    if path.suffix == ".txt":
        return "text"
    with path.open("r", encoding="utf-8") as f:
        first = json.loads(f.readline())
    keys = set(first)
    if "messages" in keys:
        return "messages"
    if {"chosen", "rejected"} <= keys:
        return "preference"
    if {"completion", "label"} <= keys:
        return "kto"
    if "prompt" in keys:
        return "prompt_only"
    return "unknown"


def seed_demo_world(ws: Workspace) -> list[int]:
    """Register the demo datasets (and the demo base model, once built) in the store.

    Fast on purpose (hash + row count, no tokenizer): it runs before the TUI's first paint on
    a fresh home. Full validation and token statistics happen when a user opens a dataset.
    """
    ids: list[int] = []
    for fname, kind in DEMO_DATASETS.items():
        path = paths.DEMO_DIR / fname
        if not path.exists():
            continue
        dv = ws.store.add_dataset_version(
            name=f"demo/{path.stem}",
            path=str(path),
            content_hash=_sha256(path),
            format=_detect_format(path),
            kind=kind,
            rows=_count_rows(path),
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
