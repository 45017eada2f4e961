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


# ---- what a run was measured on: evaluations and preference labels ----------------------------


def run_refs(run_id: int) -> set[str]:
    """The model refs a run goes by in evaluations and label tasks ("7" and "run:7")."""
    return {str(run_id), f"run:{run_id}"}


def _flat_scores(entry: dict, prefix: str = "") -> dict[str, float]:
    """Numbers of one model's entry, nested parts joined by '.' (a demo proof row has
    heldout/forbidden parts), counts and speeds left out."""
    skip = {"n", "scored", "label", "ref", "run_id", "tokens_per_s", "mean_latency_s"}
    out: dict[str, float] = {}
    for key, value in entry.items():
        if key in skip or value is None or isinstance(value, bool):
            continue
        if key == "scores" and isinstance(value, dict):
            out.update(_flat_scores(value, prefix))
        elif isinstance(value, dict):
            out.update(_flat_scores(value, f"{prefix}{key}."))
        elif isinstance(value, int | float):
            out[f"{prefix}{key}"] = float(value)
    return out


def run_evaluations(store: Any, run_id: int, limit: int = 8) -> list[dict[str, Any]]:
    """The evaluations linked to a run, newest first: name, prompt count and this run's scores
    (`{"id", "name", "n", "scores": {name: value}, "others": n_other_models}`)."""
    refs = run_refs(run_id)
    out = []
    for ev in store.list_evaluations(run_id)[:limit]:
        metrics = ev.metrics or {}
        table = metrics.get("rows") if isinstance(metrics.get("rows"), dict) else metrics
        entry = next((v for k, v in table.items() if k in refs and isinstance(v, dict)), None)
        if entry is None:  # rows keyed by stage name (demo proof): find this run's row
            entry = next((v for v in table.values() if isinstance(v, dict)
                          and v.get("run_id") == run_id), None)
        n = (ev.details or {}).get("n_prompts") or (entry or {}).get("n")
        out.append({"id": ev.id, "name": ev.name, "n": n,
                    "scores": _flat_scores(entry) if entry else {},
                    "others": len([r for r in ev.model_refs if r not in refs])})
    return out


def run_win_rates(store: Any, run_id: int, n_boot: int = 200) -> dict[str, Any]:
    """Win-rates from every preference label whose pair has this run on one side
    (`winrate.summarize`'s dict), with the run's refs folded into one name."""
    from tuiapp.engine.label import tasks as labels
    from tuiapp.engine.label import winrate

    refs = run_refs(run_id)
    name = f"run:{run_id}"
    rows = [(name if a in refs else a, name if b in refs else b, choice)
            for a, b, choice in labels.comparisons(store) if a in refs or b in refs]
    return winrate.summarize(rows, n_boot=n_boot)
