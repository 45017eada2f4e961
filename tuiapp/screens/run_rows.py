"""Runs as table rows: plain data built from the store, so it can run in a worker and be tested
without a screen."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

LOSS_NAMES = ("loss", "train_loss", "train/loss")
# Statuses offered by the filter even before any run has them, in lifecycle order.
KNOWN_STATUSES = ("queued", "running", "completed", "failed", "cancelled")
KNOWN_KINDS = ("sft", "cpt", "dpo", "kto", "reward", "ppo", "grpo", "rloo")


@dataclass(frozen=True)
class RunRow:
    id: int
    name: str
    kind: str
    status: str
    base_model: str
    dataset: str
    created: str
    duration: str
    last_loss: str

    def cells(self) -> tuple[str, ...]:
        return (
            str(self.id),
            self.name,
            self.kind,
            self.status,
            self.base_model,
            self.dataset,
            self.created,
            self.duration,
            self.last_loss,
        )


COLUMNS = (
    "id",
    "name",
    "kind",
    "status",
    "base model",
    "dataset",
    "created",
    "duration",
    "last loss",
)


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def short_time(value: Any) -> str:
    moment = parse_time(value)
    return moment.strftime("%Y-%m-%d %H:%M") if moment else ""


def duration(started: Any, finished: Any, now: datetime | None = None) -> str:
    """ "1h 02m", "3m 07s", "12s"; a run still going counts up to `now`; never started: ""."""
    start = parse_time(started)
    if start is None:
        return ""
    end = parse_time(finished) or now or datetime.now(UTC)
    seconds = max(0, int((end - start).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def last_loss(summary: dict) -> str:
    for name in LOSS_NAMES:
        if name in summary and summary[name].get("last") is not None:
            return f"{summary[name]['last']:.4f}"
    return ""


def build_rows(store: Any, now: datetime | None = None) -> list[RunRow]:
    """Every run, newest first, with its model and dataset names resolved."""
    models: dict[int, str] = {}
    datasets: dict[int, str] = {}
    rows = []
    for run in store.list_runs():
        base = ""
        if run.base_model_id is not None:
            if run.base_model_id not in models:
                models[run.base_model_id] = store.get_model(run.base_model_id).name
            base = models[run.base_model_id]
        dataset = ""
        if run.dataset_version_id is not None:
            if run.dataset_version_id not in datasets:
                version = store.get_dataset_version(run.dataset_version_id)
                datasets[run.dataset_version_id] = f"{version.name} #{version.id}"
            dataset = datasets[run.dataset_version_id]
        rows.append(
            RunRow(
                id=run.id,
                name=run.name or "",
                kind=run.kind,
                status=run.status,
                base_model=base,
                dataset=dataset,
                created=short_time(getattr(run, "created_at", None)),
                duration=duration(run.started_at, run.finished_at, now),
                last_loss=last_loss(store.metric_summary(run.id)),
            )
        )
    return rows


def filter_rows(rows: list[RunRow], status: str | None, kind: str | None) -> list[RunRow]:
    return [
        r
        for r in rows
        if (status is None or r.status == status) and (kind is None or r.kind == kind)
    ]
