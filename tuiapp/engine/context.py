"""What an algorithm receives from the runner, and the checkpoint conventions they share.

Every algorithm module (sft.py, cpt.py, ...) exposes ``train(config, ctx) -> dict``. It loads
its data and model, trains, emits events to ``ctx.sink``, checks ``ctx.stop_requested()``
through the shared callback, and returns a result dict (output folders, final metrics).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuiapp.engine.events import ListSink, Sink, make_event

COMPLETE_MARKER = "tuneloop-complete.json"
STOP_FILE = "STOP"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class JobContext:
    output_dir: Path
    sink: Sink = field(default_factory=ListSink)
    resume_from: Path | None = None      # a complete checkpoint folder to continue from
    run_id: int | None = None
    dataset_path: Path | None = None     # resolved file of the dataset version
    base_model_path: str | None = None   # resolved folder (or hub id) of the base model

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)

    @property
    def stop_file(self) -> Path:
        return self.output_dir / STOP_FILE

    def stop_requested(self) -> bool:
        """Cooperative cancel: the runner (or a user) creates STOP in the output folder."""
        return self.stop_file.exists()

    def emit(self, kind: str, **fields: Any) -> None:
        self.sink.emit(make_event(kind, **fields))


def request_stop(output_dir: str | os.PathLike) -> None:
    path = Path(output_dir) / STOP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(time.strftime("%Y-%m-%dT%H:%M:%S"), encoding="utf-8")


def mark_checkpoint_complete(folder: Path, step: int, extra: dict[str, Any] | None = None) -> None:
    """Written last, atomically (temp file + rename): a checkpoint without it is incomplete."""
    tmp = folder / (COMPLETE_MARKER + ".tmp")
    tmp.write_text(json.dumps({"step": step, "t": time.time(), **(extra or {})}), encoding="utf-8")
    os.replace(tmp, folder / COMPLETE_MARKER)


def complete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _CKPT_RE.match(child.name)
        if m and child.is_dir() and (child / COMPLETE_MARKER).exists():
            found.append((int(m.group(1)), child))
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    done = complete_checkpoints(output_dir)
    return done[-1] if done else None
