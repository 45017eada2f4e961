"""Pieces of the Train screen that need no widgets: the pre-flight panel's text, the queue's
rows, and the monitor's data read from the store (run in a worker)."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from tuiapp.engine.jobs.resolve import EXPECTED_KINDS
from tuiapp.screens.run_rows import short_time
from tuiapp.widgets.run_monitor import resume_note

GiB = 2**30
TRAIN_KINDS = ("sft", "cpt", "dpo", "kto", "reward", "ppo", "grpo", "rloo")
# The dataset kinds each job kind trains on (resolve.py is light: no torch, no Textual).
DATASET_KINDS = EXPECTED_KINDS
CANCELLABLE = ("queued", "running")
RESUMABLE = ("cancelled", "interrupted", "failed")
QUEUE_COLUMNS = ("id", "name", "kind", "status", "created")
QUEUE_LIMIT = 50


def count(n: int | float | None) -> str:
    if n is None:
        return "–"
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def preflight_text(report: dict[str, Any], stale: bool = False) -> Group:
    """A pre-flight report dict (PreflightReport.to_dict) as a facts table, then refusals in red
    and warnings in yellow."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    params = report.get("params") or {}
    if params:
        share = params.get("share")
        shown = f"{count(params.get('trainable'))} trainable of {count(params.get('total'))}"
        if share is not None:
            shown += f" ({share * 100:.2f}%)"
        table.add_row("parameters", shown)
    memory = report.get("memory") or {}
    if memory.get("estimate_bytes") is not None:
        free = memory.get("free_bytes")
        shown = f"≈ {memory['estimate_bytes'] / GiB:.2f} GiB peak on {report.get('device', '?')}"
        if free:
            shown += f", {free / GiB:.1f} GiB free"
        table.add_row("memory", shown)
    if report.get("dtype"):  # "auto → bf16: this CPU has AMX" (issue 22)
        table.add_row("dtype", report["dtype"])
    stats = report.get("tokens") or {}
    tokens = stats.get("tokens") or {}
    if tokens:
        table.add_row(
            "tokens/example",
            f"mean {tokens.get('mean', 0):.0f}, p90 {tokens.get('p90', 0):.0f}, "
            f"max {tokens.get('max', 0):.0f}",
        )
    truncated = stats.get("truncated")
    if truncated:
        table.add_row(
            "truncated",
            f"{truncated.get('count', 0)} ({truncated.get('share', 0) * 100:.1f}%) at "
            f"max_length {stats.get('max_length')}",
        )
    elif stats:
        table.add_row("truncated", "none")
    if report.get("dataset_rows") is not None:
        table.add_row(
            "dataset", f"version {report.get('dataset_version_id')}, {report['dataset_rows']} rows"
        )
    if report.get("steps"):
        table.add_row("steps", f"about {report['steps']}")
    parts: list[Any] = []
    if stale:
        parts.append(Text("The config changed since this check; run pre-flight again.", "dim"))
    verdict = (
        Text("✓ ready to start", style="bold green")
        if not report.get("refusals")
        else Text("✗ refused: Start is off until these are fixed", style="bold red")
    )
    parts.extend([verdict, table])
    for refusal in report.get("refusals") or []:
        parts.append(Text(f"✗ {refusal}", style="red"))
    for warning in report.get("warnings") or []:
        parts.append(Text(f"! {warning}", style="yellow"))
    return Group(*parts)


def queue_runs(store: Any) -> list[Any]:
    """Training runs, newest first (the running and queued ones are among them)."""
    runs = [r for r in store.list_runs() if r.kind in TRAIN_KINDS]
    return runs[:QUEUE_LIMIT]


def _name_cell(run: Any) -> Text:
    text = Text(run.name or "")
    note = resume_note(run)
    if note:  # the same name as the run it continues, so the marker tells them apart
        text.append(f" ↻ {note}", style="italic")
    return text


def queue_cells(run: Any) -> tuple[Text, ...]:
    style = {"running": "bold", "failed": "red", "interrupted": "yellow"}.get(run.status, "")
    return (
        Text(str(run.id)),
        _name_cell(run),
        Text(run.kind),
        Text(run.status, style=style),
        Text(short_time(getattr(run, "created_at", None))[5:]),  # month-day hour:minute
    )


def run_metrics(store: Any, run_id: int) -> dict[str, Any]:
    """Curves (loss, eval loss), the last value of every metric, and the answers to the sample
    prompts at every checkpoint (the newest as `samples`). Reads the store: call from a worker."""
    series: dict[str, list[tuple[int, float]]] = {"loss": [], "eval_loss": []}
    last: dict[str, float] = {}
    last_step = None
    for m in store.metrics(run_id):
        if m.value is None:
            continue
        if m.name in series:
            series[m.name].append((m.step, m.value))
        last[m.name] = m.value  # ordered by step, so the newest wins
        last_step = m.step if last_step is None else max(last_step, m.step)
    generations = store.list_generations(run_id=run_id, limit=1000)  # newest first
    by_step: dict[int, list[tuple[str, str]]] = {}
    for g in reversed(generations):  # oldest first: prompts keep their order within a step
        if g.step is not None:
            by_step.setdefault(g.step, []).append((g.prompt, g.output))
    sample_step = max(by_step) if by_step else None
    return {
        "run_id": run_id,
        "series": series,
        "last": last,
        "last_step": last_step,
        "samples": by_step.get(sample_step, []) if sample_step is not None else [],
        "sample_step": sample_step,
        "samples_by_step": dict(sorted(by_step.items())),  # every checkpoint's answers, to scrub
    }
