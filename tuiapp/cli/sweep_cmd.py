"""``tuneloop sweep``: one normal run per point of a grid over config fields, compared in a table.

    tuneloop sweep --config P.toml --grid method=lora,full --grid lora_r=4,8 [--eval PROMPTS] [--run]
    tuneloop sweep show ID [--json]     per run: method, rank, parameters, memory, tokens/s, loss, score
    tuneloop sweep eval ID [--prompts P] score the completed runs on a held-out prompt set
    tuneloop sweep list

Every point is pre-flighted before any is queued (one refusal queues nothing). Without --run the
runs wait in the queue like `tuneloop train --queue-only`; with --run they train one after
another here, with progress, and --eval scores them at the end. Exit codes: 0 done (or queued),
1 refused or a run failed, 2 a grid or config that cannot be read, 130 stopped with Ctrl-C.
"""

from __future__ import annotations

from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from tuiapp.cli.common import fail, open_ws, print_json

app = typer.Typer(help="Sweep a grid of configs (e.g. method x lora_r) and compare the runs.",
                  invoke_without_command=True)

_GRID_HELP = ("key=v1,v2 over a config field (repeatable; the runs are the cartesian product). "
              "Values are parsed by the field's type; separate with ';' when a value has commas.")


@app.callback()
def sweep(
    ctx: typer.Context,
    sweep_file: str | None = typer.Option(None, "--file", "-f", help="A sweep file (config, set, "
                                          "grid, points, eval; see sample_data/presets/sweeps/); "
                                          "--config/--grid/--set/--eval given too win over it."),
    config: str | None = typer.Option(None, "--config", "-c", help="TOML preset every point starts from."),
    grid: list[str] | None = typer.Option(None, "--grid", "-g", help=_GRID_HELP),
    sets: list[str] | None = typer.Option(None, "--set", help="Override one field for every point: key=value."),
    prompts: str | None = typer.Option(None, "--eval", help="Prompt set (JSONL, or a dataset version "
                                       "such as demo/eval_heldout) that scores each run when done."),
    eval_limit: int | None = typer.Option(None, "--eval-limit", help="Score on the first N prompts only."),
    run_now: bool = typer.Option(False, "--run", help="Train the runs now, one after another "
                                 "(default: queue them)."),
    name: str | None = typer.Option(None, "--name", help="Name of the sweep."),
    as_json: bool = typer.Option(False, "--json", help="Print the sweep and its table as JSON."),
) -> None:
    """Queue (or with --run, train) one run per grid point; see `tuneloop sweep show ID`."""
    if ctx.invoked_subcommand is not None:
        return
    from tuiapp.engine.jobs.preflight import preflight
    from tuiapp.engine.jobs.sweep import (
        SweepError,
        check_plan,
        load_sweep_file,
        parse_grid,
        plan_sweep,
        point_label,
    )
    from tuiapp.engine.train.config import ConfigError, load_config

    points: list[dict] = []
    grid, sets = list(grid or []), list(sets or [])
    if sweep_file:
        try:
            sf = load_sweep_file(sweep_file)
        except SweepError as exc:
            fail(str(exc), code=2)
        given = {g.partition("=")[0].strip() for g in grid}
        config = config or str(sf.config)
        sets = sf.sets + sets
        grid = [g for g in sf.grid if g.partition("=")[0] not in given] + grid
        points = sf.points
        prompts, name = prompts or sf.prompts, name or sf.name
        eval_limit = eval_limit or sf.eval_limit
    if not config or not (grid or points):
        typer.echo(ctx.get_help())
        fail("give --config FILE and at least one --grid key=v1,v2 (or --file SWEEP.toml)", code=2)
    try:
        base = load_config(config, sets)
        plan = plan_sweep(base, parse_grid(base.kind, grid, allow_empty=bool(points)), points)
    except (ConfigError, SweepError) as exc:
        fail(str(exc), code=2)
    if eval_limit is not None and eval_limit < 1:
        fail("--eval-limit must be at least 1", code=2)
    ws = open_ws(ctx)
    if prompts:
        _check_prompts(prompts, ws.store)
    console = Console(stderr=as_json, highlight=False)
    with console.status("pre-flight…") as status:
        def on_point(i: int, n: int, planned: Any) -> None:
            status.update(f"pre-flight {i + 1} of {n}: {point_label(planned.point)}")

        refusals = check_plan(plan, lambda cfg: preflight(cfg, ws.store, ws.home), on_point)
    console.print(_plan_table(plan))
    if refusals:
        for line in refusals:
            console.print(f"[red]✗[/] {line}", highlight=False)
        fail(f"not queued: pre-flight refused {len(refusals)} point(s) (reasons above); "
             "nothing of the sweep was queued", code=1)
    from tuiapp.cli.train_cmd import make_runner

    runner = make_runner(ws)
    from tuiapp.engine.jobs.sweep import queue_sweep

    sweep_row, runs = queue_sweep(ws.store, runner, plan, config_path=config, prompts=prompts,
                                  name=name)
    if eval_limit:  # `sweep run` / `sweep eval` later score on the same prompts
        ws.store.update_sweep_details(sweep_row.id, eval_limit=eval_limit)
    console.print(f"sweep {sweep_row.id}: {len(runs)} runs queued "
                  f"({', '.join(str(r.id) for r in runs)})")
    code = 0
    if run_now:
        code = _run_all(runner, sweep_row.id, runs, console)
        if code != 130 and prompts:  # a failed point leaves the others worth scoring
            _evaluate(ctx, ws, sweep_row.id, None, eval_limit, console)
    else:
        console.print("queued; they start one by one when nothing else is running and tuneloop "
                      f"next polls the queue (`tuneloop sweep show {sweep_row.id}` to follow)")
    _show(ws.store, sweep_row.id, as_json)
    raise typer.Exit(code)


def _check_prompts(spec: str, store: Any) -> None:
    """An unreadable prompt set is refused before hours of training, not after."""
    from tuiapp.engine.infer.evaluate import EvalError, load_prompt_set

    try:
        load_prompt_set(spec, store)
    except EvalError as exc:
        fail(f"--eval: {exc}", code=2)


def _plan_table(plan: Any) -> Table:
    from tuiapp.engine.jobs.sweep import MiB, point_label

    table = Table(title=f"{plan.kind} sweep: {len(plan.runs)} runs", title_justify="left")
    for col in ("point", "trainable", "memory ≈", "steps"):
        table.add_column(col, justify="left" if col == "point" else "right")
    for p in plan.runs:
        rep = p.report
        params = (rep.params or {}).get("trainable")
        mem = (rep.memory or {}).get("estimate_bytes")
        table.add_row(point_label(p.point), _params(params), _mib(mem / MiB if mem else None),
                      str(rep.steps or "–"))
    return table


def _run_all(runner: Any, sweep_id: int, runs: list[Any], console: Console) -> int:
    """Train the given queued runs one after another here, each with a progress bar."""
    from tuiapp.cli.train_cmd import follow
    from tuiapp.engine.jobs.sweep import point_label

    sweep = runner.store.get_sweep(sweep_id)
    worst = 0
    for i, run in enumerate(runs):
        point = ((sweep.details.get("preflight") or {}).get(str(run.id)) or {}).get("point") \
            or {k: run.config.get(k) for k, _ in sweep.grid}
        console.print(f"[bold]sweep {sweep_id}[/]: run {i + 1} of {len(runs)} "
                      f"({point_label(point)})")
        runner.start_next()
        code, _ = follow(runner, run.id, console)
        if code == 130:
            left = [str(r.id) for r in runs[i + 1:]]
            if left:
                console.print(f"the sweep's other runs stay queued ({', '.join(left)}); "
                              "`tuneloop runs cancel ID` drops one")
            return 130
        worst = max(worst, 1 if code else 0)
    return worst


def _evaluate(ctx: typer.Context, ws: Any, sweep_id: int, prompts: str | None,
              limit: int | None, console: Console) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from tuiapp.cli.generate_cmd import make_params, open_generator
    from tuiapp.engine.infer.evaluate import EvalError
    from tuiapp.engine.jobs.sweep import SweepError, evaluate_sweep

    if limit is None:
        limit = (ws.store.get_sweep(sweep_id).details or {}).get("eval_limit")
    gen, _ = open_generator(ctx, None, "auto")
    try:
        with Progress(TextColumn("scoring {task.description}"), BarColumn(), MofNCompleteColumn(),
                      console=console) as bar:
            task = bar.add_task("", total=None)

            def on_progress(done: int, total: int, ref: str) -> None:
                bar.update(task, description=ref, completed=done, total=total)

            result = evaluate_sweep(ws.store, sweep_id, gen, prompts, limit=limit,
                                    params=make_params(48, 0.0, 1.0, 0, None), progress=on_progress)
    except (SweepError, EvalError) as exc:
        fail(str(exc), code=2)
    finally:
        gen.close()
    console.print(f"scored {len(result['models'])} runs on {result['n_prompts']} prompts "
                  f"(evaluation {result['evaluation_id']})")


@app.command("show")
def show(
    ctx: typer.Context,
    sweep_id: int = typer.Argument(..., help="The sweep's id (`tuneloop sweep list`)."),
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON."),
    charts: str | None = typer.Option(None, "--charts", help="Also write the two figures as SVG "
                                      "files into this folder (params vs rank, per method)."),
) -> None:
    """Per run: method, rank, trainable parameters, peak memory, tokens/s, final loss, score."""
    ws = open_ws(ctx)
    try:
        sweep_row = ws.store.get_sweep(sweep_id)
    except LookupError:
        fail(f"no sweep with id {sweep_id} (see `tuneloop sweep list`)", code=1)
    _poll(ws)
    _show(ws.store, sweep_id, as_json)
    if charts:
        from tuiapp.engine.jobs.sweep import sweep_table
        from tuiapp.engine.jobs.sweep_charts import write_charts

        written = write_charts(sweep_table(ws.store, sweep_id), charts, f"sweep {sweep_row.id}")
        typer.echo("charts: " + ", ".join(str(p) for p in written), err=as_json)


@app.command("run")
def run_queued(
    ctx: typer.Context,
    sweep_id: int = typer.Argument(..., help="The sweep's id."),
    prompts: str | None = typer.Option(None, "--eval", help="Score the runs afterwards on this "
                                       "prompt set (default: the sweep's --eval, if any)."),
    eval_limit: int | None = typer.Option(None, "--eval-limit", help="Score on the first N prompts only."),
) -> None:
    """Train a queued sweep's runs now, one after another, then score them if it has a prompt set."""
    from tuiapp.cli.train_cmd import make_runner

    ws = open_ws(ctx)
    try:
        sweep_row = ws.store.get_sweep(sweep_id)
    except LookupError:
        fail(f"no sweep with id {sweep_id} (see `tuneloop sweep list`)", code=1)
    if prompts:
        _check_prompts(prompts, ws.store)
    runner = make_runner(ws)
    runner.recover()
    queued = [r for r in ws.store.sweep_runs(sweep_id) if r.status in ("queued", "running")]
    console = Console(highlight=False)
    code = 0
    if queued:
        code = _run_all(runner, sweep_id, queued, console)
    else:
        console.print(f"sweep {sweep_id} has no queued runs")
    if code != 130 and (prompts or sweep_row.prompts):
        _evaluate(ctx, ws, sweep_id, prompts, eval_limit, console)
    _show(ws.store, sweep_id, False)
    raise typer.Exit(code)


@app.command("eval")
def evaluate(
    ctx: typer.Context,
    sweep_id: int = typer.Argument(..., help="The sweep's id."),
    prompts: str | None = typer.Option(None, "--prompts", "-p", help="Prompt set (default: the "
                                       "sweep's --eval)."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N prompts."),
) -> None:
    """Score the sweep's completed runs on a held-out prompt set (stored as one evaluation)."""
    ws = open_ws(ctx)
    try:
        ws.store.get_sweep(sweep_id)
    except LookupError:
        fail(f"no sweep with id {sweep_id} (see `tuneloop sweep list`)", code=1)
    if prompts:
        _check_prompts(prompts, ws.store)
    console = Console(highlight=False)
    _evaluate(ctx, ws, sweep_id, prompts, limit, console)
    _show(ws.store, sweep_id, False)


@app.command("list")
def list_sweeps(ctx: typer.Context,
                as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Sweeps, newest first, with their grid and how many runs finished."""
    ws = open_ws(ctx)
    sweeps = ws.store.list_sweeps()
    if as_json:
        print_json([s.to_dict() for s in sweeps])
        return
    table = Table(title_justify="left")
    for col in ("id", "name", "kind", "grid", "runs", "completed"):
        table.add_column(col)
    for s in sweeps:
        runs = ws.store.sweep_runs(s.id)
        grid = " × ".join(f"{k}={','.join(map(str, v))}" for k, v in s.grid)
        table.add_row(str(s.id), s.name, s.kind, grid, str(len(runs)),
                      str(sum(r.status == "completed" for r in runs)))
    Console().print(table if sweeps else "no sweeps yet: `tuneloop sweep --config P --grid k=a,b`")


def _poll(ws: Any) -> None:
    """Fold in what running grid points wrote since the last look (nothing is started)."""
    from tuiapp.cli.train_cmd import make_runner

    runner = make_runner(ws)
    runner.recover()
    runner.poll()


def _show(store: Any, sweep_id: int, as_json: bool) -> None:
    from tuiapp.engine.jobs.sweep import sweep_table

    sweep = store.get_sweep(sweep_id)
    rows = sweep_table(store, sweep_id)
    if as_json:
        print_json({"sweep": sweep.to_dict(), "runs": rows})
        return
    scorer = (sweep.details or {}).get("scorer")
    others = [k for k, _ in sweep.grid if k not in ("method", "lora_r")]
    caption = f"score: {scorer} on {sweep.details.get('prompts') or sweep.prompts}" if scorer \
        else "score: none yet (`tuneloop sweep eval ID --prompts P`)"
    table = Table(title=f"sweep {sweep.id}: {sweep.name}", title_justify="left", box=box.SIMPLE,
                  caption=caption, caption_justify="left")
    cols = ("run", "status", "method", "r", *others, "params", "peak MiB", "tok/s", "loss",
            "score")
    for col in cols:
        table.add_column(col, justify="left" if col in ("status", "method", *others) else "right")
    estimated = False
    for r in rows:
        mem = _num(r["peak_memory_mb"], "{:,.0f}")
        if r["memory_source"] == "pre-flight":
            mem, estimated = f"≈{mem}", True
        table.add_row(str(r["run_id"]), r["status"], str(r["method"] or "–"),
                      str(r["lora_r"] or "–"), *(_value(r["point"].get(k)) for k in others),
                      _params(r["trainable_params"]), mem, _num(r["tokens_per_s"], "{:,.0f}"),
                      _num(r["final_loss"], "{:.4f}"), _num(r["score"], "{:.3f}"))
    console = Console(highlight=False)
    console.print(table)
    if estimated:
        console.print("≈: the pre-flight's estimate (the run has not recorded its peak yet)")
    if any(r["memory_source"] == "run" and r.get("device") == "cpu" for r in rows):
        console.print("peak MiB on CPU is the training process's peak RSS (libraries included)")


def _value(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)


def _params(n: int | None) -> str:
    if n is None:
        return "–"
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} MiB"


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)
