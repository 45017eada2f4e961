"""``tuneloop train``: pre-flight, queue and follow a training job from the terminal.

Exit codes: 0 completed (or queued with --queue-only), 1 refused by pre-flight or failed,
2 a config that cannot be read, 3 cancelled by someone else, 130 cancelled with Ctrl-C.
Every job kind has the same options: --config, --set, --queue-only, --json, and --print-launch
(with --num-machines, --machine-rank, --main-address, --main-port) for a cluster scheduler.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from tuiapp.cli.common import fail, open_ws, print_json

app = typer.Typer(help="Start training jobs: SFT, continued pre-training, DPO (and its variants), "
                       "KTO, reward models, PPO, GRPO and RLOO.", no_args_is_help=True)

_CONFIG_HELP = "TOML preset (see sample_data/presets/); its keys are the config fields."
_SET_HELP = "Override one field: key=value (repeatable), e.g. --set max_steps=50."
EXIT_CODES = {"completed": 0, "failed": 1, "interrupted": 1, "cancelled": 3}


GGUF_STEPS = {
    "gguf_hash": "pre-flight: hashing the GGUF file ({share:.0%})…",
    "gguf_cached": "base: the GGUF's dequantised folder is cached: {folder}",
    "gguf_check": "pre-flight: GGUF {architecture}, {file_type}: readable",
    "gguf_load": "pre-flight: dequantising {file} through transformers (once per file)…",
    "gguf_tensors": "pre-flight: dequantising tensor {done} of {total}…",
    "gguf_save": "pre-flight: writing the fp32 folder {folder}…",
    "gguf_done": "base: dequantised into {folder}",
}


@dataclasses.dataclass
class LaunchPlan:
    """--print-launch and where the group runs (several machines: one command per machine)."""

    print_launch: bool = False
    num_machines: int = 1
    machine_rank: int = 0
    main_address: str | None = None
    main_port: int = 29500


_MACHINES_HELP = "Machines of a --print-launch group (num_processes is per machine)."
_PRINT_HELP = ("Print the exact accelerate launch command and config for this job (a job folder "
               "is written, nothing is queued or run): for a cluster scheduler.")


def _train(ctx: typer.Context, kind: str, config: str, sets: list[str] | None,
           queue_only: bool, as_json: bool, plan: LaunchPlan | None = None) -> None:
    from tuiapp.engine.jobs.preflight import preflight
    from tuiapp.engine.train.config import ConfigError, load_config

    try:
        cfg = load_config(config, sets or [], kind=kind)
    except ConfigError as exc:
        fail(str(exc), code=2)
    ws = open_ws(ctx)
    console = Console(stderr=as_json, highlight=False)
    with console.status("pre-flight: reading the model and measuring the data…") as status:
        def progress(event: str, **fields) -> None:  # a GGUF base is dequantised once, here
            words = GGUF_STEPS.get(event)
            if words:
                try:
                    line = words.format(**fields)
                except (KeyError, ValueError):
                    line = words.split(":")[0] + f": {event}"
                status.update(line)
                if event in ("gguf_cached", "gguf_done"):
                    console.print(line)

        report = preflight(cfg, ws.store, ws.home, emit=progress)
    if not as_json:
        console.print(report.render())
    if not report.ok:
        if as_json:
            print_json({"preflight": report.to_dict(), "run": None})
        fail("not queued: pre-flight refused the job (reasons above)", code=1)
    runner = make_runner(ws)
    if plan is not None and plan.print_launch:
        print_launch(runner, cfg, report, plan, console, as_json)
        return
    run = runner.submit(cfg, report=report)
    console.print(f"run {run.id}")
    if queue_only:
        if as_json:
            print_json({"preflight": report.to_dict(), "run": dataclasses.asdict(run)})
        else:
            console.print("queued; it starts when nothing else is running and tuneloop next polls the queue")
        return
    runner.start_next()
    code, run = follow(runner, run.id, console)
    if as_json:
        print_json({"preflight": report.to_dict(), "run": dataclasses.asdict(run),
                    "metrics": ws.store.metric_summary(run.id)})
    raise typer.Exit(code)


def print_launch(runner: Any, cfg: Any, report: Any, plan: LaunchPlan, console: Console,
                 as_json: bool) -> None:
    from tuiapp.engine.jobs.launch import accelerate_yaml, launch_command, shell_line
    from tuiapp.engine.jobs.runner import CHILD_MARKER

    if plan.num_machines < 1 or not 0 <= plan.machine_rank < plan.num_machines:
        fail(f"--machine-rank must be in 0..{plan.num_machines - 1}", code=2)
    if plan.num_machines > 1 and not plan.main_address:
        fail("--main-address (the host of machine rank 0) is needed for several machines", code=2)
    folder = runner.prepare_launch(cfg, report)
    if cfg.num_processes * plan.num_machines == 1:
        cmd = [runner.python, "-m", CHILD_MARKER, str(folder)]
        text = None
    else:
        cmd = launch_command(cfg, folder, runner.python, num_machines=plan.num_machines,
                             machine_rank=plan.machine_rank, main_address=plan.main_address,
                             main_port=plan.main_port, device=report.device)
        text = accelerate_yaml(cfg, num_machines=plan.num_machines, machine_rank=plan.machine_rank,
                               main_address=plan.main_address, main_port=plan.main_port)
        (folder / "accelerate.yaml").write_text(text, encoding="utf-8")
    if as_json:
        print_json({"preflight": report.to_dict(), "folder": str(folder), "command": cmd,
                    "accelerate_config": text})
        return
    if text:
        console.print(f"# accelerate config (also in {escape(str(folder / 'accelerate.yaml'))}):")
        console.print(escape(text), end="")
    where = (f"machine {plan.machine_rank} of {plan.num_machines} (the others: same command, "
             "their own --machine_rank; the job folder on a file system every machine shares)"
             if plan.num_machines > 1 else "this machine")
    console.print(f"# command for {where}:")
    console.print(escape(shell_line(cmd)), soft_wrap=True)
    console.print(f"# not queued: events, logs/, checkpoints and final/ land in {escape(str(folder))}")


def make_runner(ws: Any):
    from tuiapp.engine.jobs.runner import Runner

    return Runner(ws.store, ws.home)


def follow(runner: Any, run_id: int, console: Console) -> tuple[int, Any]:
    """Poll until the run ends, drawing a progress bar; Ctrl-C asks for a cooperative stop
    (a last checkpoint is written), a second Ctrl-C leaves the job running in the background."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    stopping = False
    columns = (TextColumn("[bold]run {task.fields[run]}[/] {task.description}"), BarColumn(),
               MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
               TextColumn("{task.fields[tps]} tok/s"), TextColumn("ETA {task.fields[eta]}"))
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("starting", total=None, run=run_id, loss="–", tps="–", eta="–")

        def update(run: Any, prog: dict[str, Any]) -> None:
            fields: dict[str, Any] = {"description": run.status if run.status != "running"
                                      else ("stopping" if stopping else prog.get("phase") or "running")}
            if prog.get("total_steps"):
                fields["total"] = prog["total_steps"]
            if prog.get("step") is not None:
                fields["completed"] = prog["step"]
            if prog.get("loss") is not None:
                fields["loss"] = f"{prog['loss']:.4f}"
            if prog.get("tokens_per_s"):
                fields["tps"] = f"{prog['tokens_per_s']:,.0f}"
            if prog.get("eta_s") is not None:
                fields["eta"] = _clock(prog["eta_s"])
            bar.update(task, **fields)

        while True:
            try:
                run = runner.wait(run_id, interval=0.5, on_update=update)
                break
            except KeyboardInterrupt:
                if stopping:
                    console.print(f"left run {run_id} running in the background; "
                                  f"`tuneloop runs cancel {run_id}` stops it")
                    return 130, runner.store.get_run(run_id)
                stopping = True
                console.print("stopping: saving a last checkpoint (Ctrl-C again to leave the job "
                              "running in the background)")
                try:
                    runner.cancel(run_id)
                except ValueError:
                    pass
    report_outcome(console, runner.store, run)
    code = EXIT_CODES.get(run.status, 1)
    if run.status == "cancelled" and stopping:
        code = 130
    return code, run


def report_outcome(console: Console, store: Any, run: Any) -> None:
    if run.status == "completed":
        loss = store.metric_summary(run.id).get("loss", {}).get("last")
        where = ""
        if run.adapter_model_id:
            model = store.get_model(run.adapter_model_id)
            where = f"; model {model.id} at {escape(model.path)}"
        shown = f"final loss {loss:.4f}" if loss is not None else "no loss recorded"
        console.print(f"[green]✓[/] run {run.id} completed: {shown}{where}")
    elif run.status == "cancelled":
        console.print(f"run {run.id} cancelled; continue it with `tuneloop runs resume {run.id}`")
    else:
        console.print(f"[red]✗[/] run {run.id} {run.status}: {escape(run.error or 'no reason given')}")


def _clock(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@app.command("sft")
def sft(
    ctx: typer.Context,
    config: str = typer.Option(..., "--config", "-c", help=_CONFIG_HELP),
    sets: list[str] | None = typer.Option(None, "--set", help=_SET_HELP),
    queue_only: bool = typer.Option(False, "--queue-only", help="Queue the job without starting it."),
    as_json: bool = typer.Option(False, "--json", help="Print the pre-flight and the run as JSON."),
    print_launch: bool = typer.Option(False, "--print-launch", help=_PRINT_HELP),
    num_machines: int = typer.Option(1, "--num-machines", help=_MACHINES_HELP),
    machine_rank: int = typer.Option(0, "--machine-rank", help="This machine's rank (--print-launch)."),
    main_address: str | None = typer.Option(None, "--main-address", help="Host of machine rank 0."),
    main_port: int = typer.Option(29500, "--main-port", help="Port on machine rank 0."),
) -> None:
    """Supervised fine-tuning (full / LoRA / QLoRA) from a config file."""
    _train(ctx, "sft", config, sets, queue_only, as_json,
           LaunchPlan(print_launch, num_machines, machine_rank, main_address, main_port))


@app.command("cpt")
def cpt(
    ctx: typer.Context,
    config: str = typer.Option(..., "--config", "-c", help=_CONFIG_HELP),
    sets: list[str] | None = typer.Option(None, "--set", help=_SET_HELP),
    queue_only: bool = typer.Option(False, "--queue-only", help="Queue the job without starting it."),
    as_json: bool = typer.Option(False, "--json", help="Print the pre-flight and the run as JSON."),
    print_launch: bool = typer.Option(False, "--print-launch", help=_PRINT_HELP),
    num_machines: int = typer.Option(1, "--num-machines", help=_MACHINES_HELP),
    machine_rank: int = typer.Option(0, "--machine-rank", help="This machine's rank (--print-launch)."),
    main_address: str | None = typer.Option(None, "--main-address", help="Host of machine rank 0."),
    main_port: int = typer.Option(29500, "--main-port", help="Port on machine rank 0."),
) -> None:
    """Continued pre-training on raw text (or pre-training a fresh model from scratch)."""
    _train(ctx, "cpt", config, sets, queue_only, as_json,
           LaunchPlan(print_launch, num_machines, machine_rank, main_address, main_port))


def _add_kind(name: str, help_text: str) -> None:
    """A sub-command of the same shape as sft/cpt for one alignment job kind."""

    def command(
        ctx: typer.Context,
        config: str = typer.Option(..., "--config", "-c", help=_CONFIG_HELP),
        sets: list[str] | None = typer.Option(None, "--set", help=_SET_HELP),
        queue_only: bool = typer.Option(False, "--queue-only", help="Queue the job without starting it."),
        as_json: bool = typer.Option(False, "--json", help="Print the pre-flight and the run as JSON."),
        print_launch: bool = typer.Option(False, "--print-launch", help=_PRINT_HELP),
        num_machines: int = typer.Option(1, "--num-machines", help=_MACHINES_HELP),
        machine_rank: int = typer.Option(0, "--machine-rank", help="This machine's rank (--print-launch)."),
        main_address: str | None = typer.Option(None, "--main-address", help="Host of machine rank 0."),
        main_port: int = typer.Option(29500, "--main-port", help="Port on machine rank 0."),
    ) -> None:
        _train(ctx, name, config, sets, queue_only, as_json,
               LaunchPlan(print_launch, num_machines, machine_rank, main_address, main_port))

    command.__doc__ = help_text
    command.__name__ = f"train_{name}"
    app.command(name)(command)


for _name, _help in {
    "dpo": "Direct preference optimisation (or IPO, hinge, robust, SimPO, ORPO …) on preference "
           "pairs, on top of an SFT run (start_from) or a base model.",
    "kto": "KTO on unpaired examples labelled desirable / undesirable.",
    "reward": "Train a reward model (Bradley-Terry, LoRA + scalar head) on preference pairs.",
    "ppo": "PPO against a reward model run or a verifier, starting from an SFT run.",
    "grpo": "GRPO against a reward model run or a verifier.",
    "rloo": "RLOO against a reward model run or a verifier.",
}.items():
    _add_kind(_name, _help)
