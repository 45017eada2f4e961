"""``tuneloop demo``: rebuild, check and describe the seeded demo world in sample_data/demo/."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tuiapp.engine import demo_world

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
    target = out if out is not None else demo_world.demo_dir()
    if check:
        differing = demo_world.check_demo(target, seed)
        if differing:
            typer.echo(f"{len(differing)} file(s) in {target} differ from a fresh build "
                       f"(seed {seed}):", err=True)
            for rel in differing:
                typer.echo(f"  {rel}", err=True)
            typer.echo("Run `tuneloop demo generate` to rebuild them.", err=True)
            raise typer.Exit(1)
        typer.echo(f"All {len(demo_world.GENERATED_FILES)} demo files in {target} are up to date.")
        return
    try:
        written = demo_world.generate_demo(target, seed)
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
    folder = demo_folder if demo_folder is not None else demo_world.demo_dir()
    world_file = folder / "world.json"
    world = demo_world.load_world(world_file) if world_file.is_file() else demo_world.build_world(seed)
    s = demo_world.summary(world, folder)
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
    from tuiapp.engine import demo_base
    from tuiapp.engine.config import ConfigError

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
    target = out if out is not None else demo_world.demo_dir() / "base-model"
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
    from tuiapp.engine import demo_base

    try:
        result = demo_base.probe(model, limit=limit)
    except (FileNotFoundError, OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if write:
        if limit:
            typer.echo("error: --write stores full probes only; drop --limit", err=True)
            raise typer.Exit(2)
        demo_base.record_probe(model if model is not None else demo_world.demo_dir() / "base-model", result)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    _print_probe(result)


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
