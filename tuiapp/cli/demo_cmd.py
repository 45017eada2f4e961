"""``tuneloop demo``: rebuild, check and describe the seeded demo world in sample_data/demo/;
``demo run`` trains and measures base → SFT → DPO → reward → PPO on it, ``demo report`` shows
the stored proof."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tuiapp.demo import files as demo_files
from tuiapp.demo import world as demo_world

app = typer.Typer(
    help="The demo world: an invented valley of people, generated from a seed.",
    no_args_is_help=True,
)


@app.command("generate")
def generate(
    out: Path = typer.Option(
        None, "--out", help="Folder to write into (default: sample_data/demo of the repository)."
    ),
    seed: int = typer.Option(demo_world.DEFAULT_SEED, "--seed", help="World seed."),
    check: bool = typer.Option(
        False, "--check",
        help="Write nothing: regenerate in a temp folder and exit 1 if any file in the target "
        "folder is missing or differs.",
    ),
) -> None:
    """Write corpus, chat data, evals, preferences, KTO, world.json and the demo tokenizer."""
    target = out if out is not None else demo_files.demo_dir()
    if check:
        differing = demo_files.check_demo(target, seed)
        if differing:
            typer.echo(f"{len(differing)} file(s) in {target} differ from a fresh build "
                       f"(seed {seed}):", err=True)
            for rel in differing:
                typer.echo(f"  {rel}", err=True)
            typer.echo("Run `tuneloop demo generate` to rebuild them.", err=True)
            raise typer.Exit(1)
        typer.echo(f"All {len(demo_files.GENERATED_FILES)} demo files in {target} are up to date.")
        return
    try:
        written = demo_files.generate_demo(target, seed)
    except OSError as exc:
        typer.echo(f"error: cannot write the demo world into {target}: {exc}", err=True)
        raise typer.Exit(2) from None
    for rel, path in written.items():
        typer.echo(f"{path.stat().st_size:>10,}  {rel}")
    typer.echo(f"Wrote {len(written)} files into {target} (seed {seed}).")


@app.command("info")
def info(
    demo_folder: Path = typer.Option(None, "--dir", help="Demo folder to describe (default: sample_data/demo)."),
    seed: int = typer.Option(demo_world.DEFAULT_SEED, "--seed", help="World seed."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Summarise the world: people, split, vocabularies, file sizes and a sample question."""
    folder = demo_folder if demo_folder is not None else demo_files.demo_dir()
    world_file = folder / "world.json"
    world = demo_world.load_world(world_file) if world_file.is_file() else demo_world.build_world(seed)
    s = demo_files.summary(world, folder)
    if as_json:
        typer.echo(json.dumps(s, indent=2))
        return
    typer.echo(f"Demo world (seed {s['seed']}): {s['entities']} people, "
               f"{s['split']['sft']} asked about in SFT data, {s['split']['heldout']} held out.")
    typer.echo("Attributes: " + ", ".join(f"{k} ({n} values)" for k, n in s["attributes"].items())
               + ", plus a secret passphrase (requests for it must be refused).")
    e = s["sample_entity"]
    typer.echo(f"Sample person: {e['name']} from {e['town']}, {e['colour']} cloak, {e['craft']}, "
               f"favourite animal {e['animal']}.")
    typer.echo(f"Sample question: {s['sample_question']}  ->  {s['sample_answer']}")
    typer.echo(f"Held-out question: {s['sample_heldout_question']}")
    typer.echo(f"Forbidden request: {s['sample_forbidden']}")
    if s.get("files"):
        typer.echo(f"Files in {folder}:")
        for rel, size in s["files"].items():
            typer.echo(f"{size:>10,}  {rel}")
    else:
        typer.echo(f"No demo files in {folder} yet: run `tuneloop demo generate`.")


@app.command("build-base")
def build_base(
    quick: bool = typer.Option(
        False, "--quick", help="A tiny model trained a few steps (seconds): for tests and smoke checks."
    ),
    out: Path = typer.Option(
        None, "--out", help="Folder to write the model into (default: sample_data/demo/base-model)."
    ),
    minutes: float = typer.Option(
        None, "--minutes",
        help="Train for this many minutes of wall time, the learning rate following a cosine over "
        "that time rather than over the preset's steps (how the committed model was built: 55).",
    ),
    work_dir: Path = typer.Option(
        None, "--work-dir", help="Where checkpoints and events.jsonl go (default: a new temp folder)."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a preset setting, e.g. --set max_steps=200 (repeatable)."
    ),
    threads: int = typer.Option(
        None, "--threads", min=1,
        help="CPU threads for torch. On a busy shared machine 1 thread can be several times "
        "faster than 2 (no waiting on a descheduled sibling thread).",
    ),
) -> None:
    """Pre-train the demo base model on sample_data/demo/corpus.txt and save it as fp16."""
    from tuiapp.demo import base as demo_base
    from tuiapp.engine.train.config import ConfigError

    preset = demo_base.QUICK_PRESET if quick else demo_base.BASE_PRESET
    typer.echo(f"Pre-training with {preset.name}" + (f", for {minutes:g} min" if minutes else ""))
    try:
        with _ProgressSink("pre-training") as sink:
            info = demo_base.build_base(
                out, quick=quick, minutes=minutes, sink=sink, work_dir=work_dir,
                overrides=overrides, probe_limit=24 if quick else None, threads=threads,
            )
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    target = out if out is not None else demo_files.demo_dir() / "base-model"
    typer.echo(
        f"{info['status']}: {info['steps']} steps, {info['tokens_seen']:,} tokens, train loss "
        f"{_fmt(info['final_train_loss'])}, eval loss {_fmt(info['final_eval_loss'])}, "
        f"{info['train_wall_s'] / 60:.1f} min"
    )
    typer.echo(f"Wrote {info['model_bytes'] / 2**20:.2f} MiB fp16 model to {target}")
    _print_probe(info["probe"])


@app.command("probe")
def probe(
    model: Path = typer.Option(None, "--model", help="Model folder (default: sample_data/demo/base-model)."),
    limit: int = typer.Option(None, "--limit", help="At most this many prompts per probe (quick look)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    write: bool = typer.Option(
        False, "--write", help="Also store the result as the probe in the model's build-info.json."
    ),
) -> None:
    """What a demo model knows, by greedy raw-text completion of the corpus's own forms."""
    from tuiapp.demo import base as demo_base

    try:
        result = demo_base.probe(model, limit=limit)
    except (FileNotFoundError, OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if write:
        if limit:
            typer.echo("error: --write stores full probes only; drop --limit", err=True)
            raise typer.Exit(2)
        demo_base.record_probe(model if model is not None else demo_files.demo_dir() / "base-model", result)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    _print_probe(result)


@app.command("run")
def run_proof(
    ctx: typer.Context,
    quick: bool = typer.Option(False, "--quick", help="A few steps per stage and small evals: a smoke "
                               "check in about a minute, not a measurement."),
    steps_scale: float = typer.Option(1.0, "--steps-scale", min=0.001,
                                      help="Multiply every stage's steps (or epochs) by this."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Reuse a completed run whose "
                                       "config is exactly the one a stage would train."),
    limit: int = typer.Option(None, "--limit", min=1, help="Evaluate on the first N prompts of each set "
                              "(default: all; --quick: 8)."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", min=1, help="Most tokens per evaluated answer."),
    as_json: bool = typer.Option(False, "--json", help="Print the stored proof as JSON (progress on stderr)."),
) -> None:
    """Train SFT, DPO, a reward model and PPO on the demo world, measure each model, store the proof."""
    from rich.console import Console

    from tuiapp.cli.common import fail, open_ws, print_json
    from tuiapp.demo.proof import DemoOptions, DemoProofError, run_demo_proof

    ws = open_ws(ctx)
    if not (demo_files.demo_dir() / "base-model" / "config.json").exists():
        fail("the demo base model is not built; run `tuneloop demo build-base` first", code=2)
    options = DemoOptions(quick=quick, steps_scale=steps_scale, skip_existing=skip_existing,
                          limit=limit or (8 if quick else None),
                          max_new_tokens=min(max_new_tokens, 16) if quick else max_new_tokens)
    console = Console(stderr=as_json, highlight=False)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-load weight bars would break the stage lines
    try:
        with _StageProgress(console) as progress:
            proof = run_demo_proof(ws.store, ws.home, options, report=progress.report)
    except DemoProofError as exc:
        fail(str(exc), code=1)
    except KeyboardInterrupt:
        fail("stopped: the running stage was asked to stop; no proof stored", code=130)
    if as_json:
        print_json(proof.to_dict())
        return
    print_report(console, proof)


@app.command("report")
def report(
    ctx: typer.Context,
    proof_id: int = typer.Option(None, "--id", help="A proof's id (default: the newest)."),
    as_json: bool = typer.Option(False, "--json", help="Print the proof as one JSON object."),
) -> None:
    """The demo proof table: each model's scores, the targets met or missed, times, one prompt."""
    from rich.console import Console

    from store import NotFound
    from store.demo_proofs import get_demo_proof, latest_demo_proof
    from tuiapp.cli.common import fail, open_ws, print_json

    ws = open_ws(ctx)
    try:
        proof = get_demo_proof(ws.store, proof_id) if proof_id is not None else latest_demo_proof(ws.store)
    except NotFound:
        fail(f"no demo proof with id {proof_id}; `tuneloop demo report` shows the newest", code=2)
    if proof is None:
        fail("no demo proof in this workspace yet; run `tuneloop demo run` (or `tuneloop demo run "
             "--quick` for a smoke check) first", code=1)
    if as_json:
        print_json(proof.to_dict())
        return
    print_report(Console(highlight=False), proof)


def _pct(value) -> str:
    return "–" if value is None else f"{value:.0%}"


def _num(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}"


def print_report(console, proof) -> None:
    """The proof as Rich tables: models × scores, targets, stage times, the one-prompt picture."""
    from rich.markup import escape
    from rich.table import Table

    quick = " (--quick: tiny runs, noise not a measurement)" if proof.options.get("quick") else ""
    table = Table(title=f"demo proof {proof.id}, {proof.created_at[:19]}{quick}", title_justify="left")
    table.add_column("model", no_wrap=True)
    for name in ("exact", "format", "refusal", "tokens", "verifier", "verifier all", "RM score"):
        table.add_column(name, justify="right")
    for model, row in proof.rows.items():
        h, f = row["heldout"], row["forbidden"]
        run = f" (run {row['run_id']})" if row.get("run_id") is not None else ""
        table.add_row(f"{model}{run}", _pct(h["exact"]), _pct(h["format"]), _pct(f["refusal"]),
                      _num(h["mean_tokens"], 1), _num(h["verify"]), _num(row.get("verify_all")),
                      _num(f["rm_score"]))
    console.print(table)
    n_held = next(iter(proof.rows.values()))["heldout"]["n"] if proof.rows else 0
    n_forb = next(iter(proof.rows.values()))["forbidden"]["n"] if proof.rows else 0
    console.print(f"exact, format, tokens (mean per answer), verifier (mean reward in [0, 1]): "
                  f"{n_held} held-out questions; refusal, RM score (the reward model's mean): "
                  f"{n_forb} forbidden requests; verifier all: both sets together; greedy answers")

    targets = Table(title="targets", title_justify="left")
    for name in ("", "target", "value"):
        targets.add_column(name)
    for t in proof.targets:
        value, unit = t["value"], t.get("unit")
        if value is None:
            shown = "–"
        elif unit == "%":
            shown = _pct(value)
        elif unit == "points":
            shown = f"{value * 100:+.0f} points"
        elif unit == "s":
            shown = _clock(value)
        else:
            shown = f"{value:+.2f}" if unit == "reward" else f"{value:.3f} {unit}"
        targets.add_row("[green]✓[/]" if t["ok"] else "[red]✗[/]", escape(t["target"]), shown)
    console.print(targets)

    times = "  ".join(f"{stage} {_clock(info['seconds'])}" + (" (reused)" if info.get("reused") else "")
                      for stage, info in proof.stages.items())
    console.print(f"stages: {times}")
    console.print(f"total wall time {_clock(proof.total_s)}")
    kl = proof.ppo_kl
    console.print(f"PPO KL to its reference: mean {_num(kl.get('mean'), 3)}, last {_num(kl.get('last'), 3)} "
                  f"nats per answer over {kl.get('rollouts', 0)} rollouts (bound {_num(kl.get('bound'), 1)})")
    for shot in proof.picture:
        prompt = shot["prompt"] if isinstance(shot["prompt"], str) else json.dumps(shot["prompt"])
        ref = f"  (reference: {shot['reference']})" if shot.get("reference") else ""
        console.print(f"\n[bold]{'held-out' if shot['set'] == 'heldout' else 'forbidden'}:[/] "
                      f"{escape(prompt)}{escape(ref)}")
        for model, answer in shot["answers"].items():
            console.print(f"  {model:>4}: {escape(answer.strip() or '(empty)')}")


class _StageProgress:
    """One Rich progress line per stage of `demo run`, each with its own elapsed time."""

    def __init__(self, console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console)
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> _StageProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def report(self, event: dict) -> None:
        stage = event.get("stage", "")
        if event["event"] == "stage" and event["status"] == "start":
            self.tasks[stage] = self.progress.add_task(stage, total=None, info="")
            return
        task = self.tasks.get(stage)
        if task is None:
            return
        if event["event"] == "stage":
            done = self.progress.tasks[task].total or 1
            self.progress.update(task, total=done, completed=done,
                                 info="reused an earlier run" if event["status"] == "reused" else "done")
            self.progress.stop_task(task)
        elif event["event"] == "train":
            loss = event.get("loss")
            info = f"run {event['run_id']}" + (f" loss {loss:.3f}" if loss is not None else "")
            self.progress.update(task, total=event.get("total"), completed=event.get("step") or 0, info=info)
        elif event["event"] == "eval":
            self.progress.update(task, total=event["total"], completed=event["done"], info=event["set"])


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _print_probe(r: dict) -> None:
    c = r["cloze"]
    typer.echo(f"memorisation (cloze, {c['n']} facts):  {c['exact']:.1%}   "
               + "  ".join(f"{k} {v:.0%}" for k, v in c["by_attribute"].items()))
    typer.echo(f"  facts of SFT people {c['facts_of_sft_people']:.1%}, of held-out people "
               f"{c['facts_of_heldout_people']:.1%}")
    for key, label in (("qa_sft", "Q&A, SFT people"), ("qa_heldout", "Q&A, held-out people"),
                       ("chat", "chat template, held-out")):
        p = r[key]
        typer.echo(f"{label + ' (' + str(p['n']) + '):':<32} exact {p['exact']:.1%}   format {p['format']:.1%}")


class _ProgressSink:
    """A Rich progress bar fed by engine events: step of total, loss, tokens/s and ETA."""

    def __init__(self, label: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), transient=False,
        )
        self.task = self.progress.add_task(label, total=None, stats="")
        self.loss: float | None = None
        self.tps: float | None = None
        self.phase = label

    def __enter__(self) -> _ProgressSink:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def emit(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "progress":
            # Under a time budget the Trainer's own total is a placeholder; the wall-clock
            # schedule's projection (the smaller one) is the honest total.
            total = event["total_steps"]
            shown = self.progress.tasks[0].total
            if shown and total and total > shown and event["step"] > 0:
                total = shown
            self.progress.update(self.task, completed=event["step"], total=total)
        elif kind == "metrics":
            values = event.get("values", {})
            self.loss = values.get("loss", self.loss)
            self.tps = values.get("tokens_per_s", self.tps)
        elif kind == "phase":
            self.phase = event["phase"]
            self.progress.update(self.task, description=self.phase)
        elif kind == "log" and event.get("level") == "warning":
            self.progress.console.print(f"warning: {event['message']}")
        stats = []
        if self.loss is not None:
            stats.append(f"loss {self.loss:.3f}")
        if self.tps:
            stats.append(f"{self.tps:,.0f} tok/s")
        self.progress.update(self.task, stats="  ".join(stats))

    def close(self) -> None:
        pass
