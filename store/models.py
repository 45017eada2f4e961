"""Typed, immutable rows handed out by the Store.

Every accessor returns one of these instead of a raw dict so screens and the engine get
attribute names a type checker can see. JSON columns arrive already decoded (dict or list);
times are UTC ISO-8601 strings; ids are ints. ``to_dict()`` gives a JSON-able plain dict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

RUN_STATUSES = ("queued", "running", "completed", "failed", "cancelled", "interrupted")
FINISHED_STATUSES = ("completed", "failed", "cancelled", "interrupted")
MODEL_KINDS = ("hf", "gguf", "adapter")
LABEL_CHOICES = ("a", "b", "tie", "both_bad", "skip")
LABEL_EVENT_KINDS = ("label", "undo")
# who labelled: a person at the keyboard, or a local model judging by a constitution
LABEL_SOURCES = ("human", "judge")


class _Row:
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class ModelRow(_Row):
    id: int
    name: str
    kind: str  # "hf" folder | "gguf" file | "adapter" folder
    path: str
    base_model_id: int | None
    meta: dict[str, Any]
    created_at: str


@dataclass(frozen=True)
class DatasetVersion(_Row):
    id: int
    name: str
    path: str
    content_hash: str
    format: str
    kind: str
    rows: int
    stats: dict[str, Any]
    source: str | None
    lineage: dict[str, Any]
    created_at: str


@dataclass(frozen=True)
class Run(_Row):
    id: int
    kind: str
    status: str
    name: str | None
    config: dict[str, Any]
    environment: dict[str, Any]
    seed: int | None
    base_model_id: int | None
    dataset_version_id: int | None
    parent_run_id: int | None
    resumed_from: int | None
    output_dir: str | None
    adapter_model_id: int | None
    pid: int | None
    error: str | None
    notes: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    sweep_id: int | None = None  # the sweep this run is a grid point of (m005)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES


@dataclass(frozen=True)
class Sweep(_Row):
    id: int
    name: str
    kind: str                      # the job kind every grid point runs (sft, dpo, ...)
    config_path: str | None        # the preset the sweep started from
    config: dict[str, Any]         # the resolved config before the grid is applied
    grid: list[list[Any]]          # [[key, [value, ...]], ...] in the order given
    prompts: str | None            # the prompt set that scores the runs (--eval), if any
    details: dict[str, Any]        # {"preflight": {run_id: {...}}, "evaluation_id": ...}
    created_at: str
    run_ids: tuple[int, ...] = field(default=())


@dataclass(frozen=True)
class Metric(_Row):
    id: int
    run_id: int
    step: int
    name: str
    value: float | None  # None where the trainer reported NaN (SQLite has no NaN)
    t: str


@dataclass(frozen=True)
class Generation(_Row):
    id: int
    model_ref: str
    prompt: str
    system: str | None
    output: str
    params: dict[str, Any]
    latency_s: float | None
    tokens: int | None
    run_id: int | None
    step: int | None
    created_at: str


@dataclass(frozen=True)
class Evaluation(_Row):
    id: int
    name: str
    model_refs: list[str]
    metrics: dict[str, Any]
    dataset_version_id: int | None
    details: dict[str, Any]
    created_at: str
    run_ids: tuple[int, ...] = field(default=())


@dataclass(frozen=True)
class LabelTask(_Row):
    id: int
    task_set: str | None
    prompt: str
    system: str | None
    # [{"model_ref": str, "output": str, "generation_id": int | None}, ...] — a is [0], b is [1]
    candidates: list[dict[str, Any]]
    source: str | None
    meta: dict[str, Any]
    created_at: str


@dataclass(frozen=True)
class LabelEvent(_Row):
    id: int
    task_id: int
    kind: str  # "label" | "undo"
    choice: str | None  # a|b|tie|both_bad|skip for labels; None for undo events
    swapped: bool  # candidates were shown b-first; `choice` is already in candidate order
    edited: str | None  # the labeller's rewrite of the preferred answer, if any
    elapsed_ms: int | None
    undoes_event_id: int | None
    created_at: str
    source: str = "human"  # LABEL_SOURCES; a task holds at most one live label per source
    principle: str | None = None  # the constitution principle a judge cited
    rationale: str | None = None  # the judge's one-line reason
    detail: dict[str, Any] = field(default_factory=dict)  # judge: the verdict in each order


@dataclass(frozen=True)
class ExportRow(_Row):
    id: int
    run_id: int | None
    model_id: int | None
    path: str
    format: str
    quant: str | None
    size_bytes: int | None
    sha256: str | None
    parity: dict[str, Any]
    status: str
    created_at: str
