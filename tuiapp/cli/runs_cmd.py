"""``tuneloop runs``: the runs in the store, as a table or JSON."""

from __future__ import annotations

import dataclasses
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .common import fail, open_ws, print_json
from .stubs import missing

app = typer.Typer(help="List and inspect training runs.", no_args_is_help=True)


def _run_dict(run) -> dict:
    return dataclasses.asdict(run)


@app.command("list")
def list_runs(
    ctx: typer.Context,
    status: Optional[list[str]] = typer.Option(None, "--status", help="Only runs with this status (repeatable)."),
    kind: Optional[list[str]] = typer.Option(None, "--kind", help="Only runs of this kind, e.g. sft (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Every run in the workspace, newest first."""
    ws = open_ws(ctx)
    runs = ws.store.list_runs(status=status or None, kind=kind or None)
    if as_json:
        print_json([_run_dict(r) for r in runs])
        return
    console = Console()
    if not runs:
        console.print(
            "No runs yet. Runs appear here once a job has been started "
            "(`tuneloop train sft --config FILE`)."
        )
        return
    table = Table("id", "name", "kind", "status", "dataset", "created", "last loss")
    for r in runs:
        summary = ws.store.metric_summary(r.id)
        loss = summary.get("loss", {}).get("last")
        table.add_row(
            str(r.id),
            r.name or "",
            r.kind,
            r.status,
            str(r.dataset_version_id or ""),
            r.created_at[:19].replace("T", " "),
            f"{loss:.4f}" if loss is not None else "",
        )
    console.print(table)


@app.command("show")
def show_run(
    ctx: typer.Context,
    run_id: int = typer.Argument(..., help="Run id (see `tuneloop runs list`)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """One run: config, environment, metric summary and lineage."""
    ws = open_ws(ctx)
    try:
        run = ws.store.get_run(run_id)
    except KeyError:
        fail(f"no run with id {run_id} in {ws.db_path}", code=1)
    data = {
        "run": _run_dict(run),
        "metrics": ws.store.metric_summary(run_id),
        "lineage": ws.store.lineage(run_id),
    }
    if as_json:
        print_json(data)
        return
    console = Console()
    console.print(f"[bold]run {run.id}[/] {run.name or ''}  kind={run.kind}  status={run.status}")
    if run.error:
        console.print(f"[red]error:[/] {run.error}")
    console.print_json(data=data["run"].get("config") or {})
    if data["metrics"]:
        table = Table("metric", "last", "min", "max", "count", "last step")
        for name, s in sorted(data["metrics"].items()):
            table.add_row(name, *(f"{s[k]:.5g}" for k in ("last", "min", "max")), str(s["count"]), str(s["last_step"]))
        console.print(table)
    console.print_json(data=data["lineage"], default=str)


@app.command("cancel", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def cancel(run_id: int = typer.Argument(...)) -> None:
    """Cancel a queued or running job (needs the training engine)."""
    missing("runs cancel", "the job runner of the training engine")


@app.command("resume", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def resume(run_id: int = typer.Argument(...)) -> None:
    """Resume a cancelled or interrupted run from its newest checkpoint (needs the training engine)."""
    missing("runs resume", "the job runner of the training engine")
