"""Engine events and the sinks that receive them.

Algorithms never talk to the store or the UI: they emit plain dict events to a sink. The child
process of a job writes them as JSON lines; the runner replays them into the store; tests keep
them in a list. Every event has an ``event`` key:

    phase       {"phase": "load_data" | "load_model" | "train" | "save"}
    metrics     {"step": int, "values": {name: float}}    loss, eval_loss, learning_rate,
                                                          grad_norm, tokens_per_s, memory_mb, epoch
    progress    {"step": int, "total_steps": int, "eta_s": float | None}
    checkpoint  {"step": int, "path": str}
    sample      {"step": int, "prompt": str, "output": str}
    log         {"level": "info" | "warning", "message": str}
    done        {"status": "completed" | "cancelled", "output_dir": str, ...result}
    error       {"message": str, "phase": str, "kind": "oom" | "data" | "config" | "crash"}
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol


class Sink(Protocol):
    def emit(self, event: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def make_event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"event": kind, "t": time.time(), **fields}


class ListSink:
    """Keeps events in memory (tests, in-process runs)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def emit(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(event)

    def close(self) -> None:
        pass

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]


class JsonlSink:
    """Appends one JSON line per event and flushes, so a reader sees it at once and a killed
    process loses at most the line being written."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def emit(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, default=str, ensure_ascii=False)
        with self._lock:
            self._f.write(line + "\n")
            self._f.flush()

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.close()


class TeeSink:
    """Sends every event to several sinks (e.g. the JSON-lines file and a console progress bar)."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks

    def emit(self, event: dict[str, Any]) -> None:
        for s in self.sinks:
            s.emit(event)

    def close(self) -> None:
        for s in self.sinks:
            s.close()


def read_jsonl_events(path: str | os.PathLike, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Events appended since byte ``offset``; returns them and the new offset. A partly written
    last line (the writer was killed mid-line) is left for the next read."""
    path = Path(path)
    if not path.exists():
        return [], offset
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    events = []
    consumed = 0
    for raw in data.splitlines(keepends=True):
        if not raw.endswith(b"\n"):
            break
        consumed += len(raw)
        try:
            events.append(json.loads(raw))
        except json.JSONDecodeError:
            continue
    return events, offset + consumed
