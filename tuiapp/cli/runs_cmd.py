"""``tuneloop runs``: list, show, cancel and resume the runs in the store."""

from __future__ import annotations

import dataclasses

import typer
from rich.console import Console
from rich.table import Table

from tuiapp.cli.common import fail, open_ws, print_json

app = typer.Typer(help="List and inspect training runs.", no_args_is_help=True)


def _run_dict(run) -> dict:
    return dataclasses.asdict(run)


@app.command("list")
def list_runs(
    ctx: typer.Context,
    status: list[str] | None = typer.Option(None, "--status", help="Only runs with this status (repeatable)."),
    kind: list[str] | None = typer.Option(None, "--kind", help="Only runs of this kind, e.g. sft (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Every run in the workspace, newest first."""
    ws = open_ws(ctx)
    _refresh(ws)
    try:
        runs = ws.store.list_runs(status=status or None, kind=kind or None)
    except ValueError as exc:
        fail(str(exc), code=2)
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
    """One run: config, environment, metric summary, lineage and its evaluations (base vs run)."""
    from tuiapp.engine.infer.redteam import run_checks

    ws = open_ws(ctx)
    _refresh(ws)
    try:
        run = ws.store.get_run(run_id)
    except KeyError:
        fail(f"no run with id {run_id} in {ws.db_path}", code=1)
    data = {
        "run": _run_dict(run),
        "metrics": ws.store.metric_summary(run_id),
        "lineage": ws.store.lineage(run_id),
        "evaluations": run_checks(ws.store, run_id),
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
    _print_checks(console, data["evaluations"])


def _print_checks(console: Console, checks: list[dict]) -> None:
    """Each evaluation of the run: every model's mean scores, and run − base / run − start (the
    run it was trained from) where those were measured together (a general set's regression
    next to the task's gain)."""
    for c in checks:
        table = Table(title=f"evaluation {c['id']}: {c['name']} ({c['kind']})", title_justify="left")
        table.add_column("score")
        for ref in c["models"]:
            table.add_column(c["labels"].get(ref, ref), justify="right")
        deltas = [(key, head) for key, head in (("delta", "run − base"), ("start_delta", "run − start"))
                  if c.get(key) is not None]
        for _, head in deltas:
            table.add_column(head, justify="right")
        names = list(dict.fromkeys(k for ref in c["models"] for k in c["scores"].get(ref, {})))
        for name in names:
            cells = [_num(c["scores"].get(ref, {}).get(name)) for ref in c["models"]]
            for key, _ in deltas:
                d = c[key].get(name)
                cells.append("–" if d is None else f"{d:+.3f}")
            table.add_row(name, *cells)
        console.print(table)


def _num(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _runner(ws):
    from tuiapp.engine.jobs.runner import Runner

    return Runner(ws.store, ws.home)


def _refresh(ws) -> None:
    """Bring the store up to date with jobs running in the background (their events file)."""
    runner = _runner(ws)
    runner.recover()
    runner.poll()


@app.command("cancel")
def cancel(
    ctx: typer.Context,
    run_id: int = typer.Argument(..., help="Run id (see `tuneloop runs list`)."),
    wait: bool = typer.Option(False, "--wait", help="Wait until the job has saved and stopped."),
) -> None:
    """Cancel a queued job at once, or ask a running one to save a checkpoint and stop."""
    ws = open_ws(ctx)
    runner = _runner(ws)
    runner.recover()
    try:
        run = runner.cancel(run_id)
    except LookupError:
        fail(f"no run with id {run_id} in {ws.db_path}", code=1)
    except ValueError as exc:
        fail(str(exc), code=1)
    if run.status == "cancelled":
        typer.echo(f"run {run_id} cancelled (it had not started)")
        return
    typer.echo(f"run {run_id}: stop requested; it saves a checkpoint at the end of the current "
               "step and stops")
    if wait:
        run = runner.wait(run_id)
        typer.echo(f"run {run_id} {run.status}" + (f": {run.error}" if run.error else ""))


@app.command("resume")
def resume(
    ctx: typer.Context,
    run_id: int = typer.Argument(..., help="A cancelled, interrupted or failed run."),
    follow_run: bool = typer.Option(False, "--follow", help="Follow it with a progress bar."),
) -> None:
    """Continue a run from its newest complete checkpoint as a new run (same config, same
    trajectory; the new run's history starts with the old one's up to that checkpoint)."""
    from tuiapp.cli.train_cmd import follow

    ws = open_ws(ctx)
    runner = _runner(ws)
    runner.recover()
    try:
        new = runner.resume(run_id)
    except LookupError:
        fail(f"no run with id {run_id} in {ws.db_path}", code=1)
    except ValueError as exc:
        fail(str(exc), code=1)
    typer.echo(f"run {new.id} resumes run {run_id}")
    started = runner.start_next()
    if not follow_run:
        if started is not None and started.id == new.id:
            typer.echo(f"started in the background; `tuneloop runs show {new.id}` shows progress")
        else:
            typer.echo("queued behind the running job")
        return
    code, _ = follow(runner, new.id, Console(highlight=False))
    raise typer.Exit(code)
