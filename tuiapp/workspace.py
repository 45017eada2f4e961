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
from tuiapp import paths

ENV_HOME = "TUNELOOP_HOME"
SEEDED_KEY = "demo_seeded"

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
    """Register the demo datasets in the store.

    This runs before the TUI's first paint on a fresh home, so it reads what validation said of
    each file from ``sample_data/demo/manifest.json`` (written by ``tuneloop demo generate``) and
    only re-validates a file whose sha256 no longer matches its manifest entry.
    """
    import hashlib
    import json

    from tuiapp.demo.files import DATASET_FILES, MANIFEST

    manifest_path = paths.DEMO_DIR / MANIFEST
    manifest = json.loads(manifest_path.read_text("utf-8")) if manifest_path.exists() else {}
    ids: list[int] = []
    for fname in DATASET_FILES:
        path = paths.DEMO_DIR / fname
        if not path.exists():
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        entry = manifest.get(fname)
        if not entry or entry.get("sha256") != digest:
            entry = _validated_entry(path)
        dv = ws.store.add_dataset_version(
            name=f"demo/{path.stem}",
            path=str(path),
            content_hash=digest,
            format=entry["format"],
            kind=entry["kind"],
            rows=entry["rows"],
            source="demo",
        )
        ids.append(dv.id)
    ws.store.set_meta(SEEDED_KEY, "1")
    return ids


def _validated_entry(path: Path) -> dict:
    from tuiapp.engine import data

    report = data.validate(path)
    if not report.ok:  # a broken checkout: say so rather than register bad data
        raise WorkspaceError(f"demo dataset {path} does not validate: {report.errors[0]}")
    return {"format": report.format, "kind": report.kind, "rows": report.rows}


def register_demo_model(ws: Workspace) -> int | None:
    """Register the committed demo base model once it exists; returns its model id."""
    folder = paths.DEMO_BASE_MODEL
    if not (folder / "config.json").exists():
        return None
    found = ws.store.find_model(str(folder))
    if found:
        return found.id
    return ws.store.add_model("demo-base", "hf", str(folder), meta={"source": "demo"}).id
