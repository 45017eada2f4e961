"""``tuneloop labels new|judge|revise|export|stats``: label tasks from models, an AI judge's labels
by a constitution, critique-and-revise SFT data by a constitution, labels → a preference dataset
version, and counts / self-agreement / win-rates / judge-vs-person agreement.

Mounted as a group: ``app.add_typer(labels_cmd.app, name="labels")`` in ``__main__``. Exit 2 for bad input (REFs, prompt sets, nothing to export).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tuiapp.cli.common import fail, open_ws, print_json

app = typer.Typer(help="Preference labelling tasks, export and statistics.", no_args_is_help=True)


@app.command("new")
def new(
    ctx: typer.Context,
    models: str = typer.Option(..., "--models", "-m", help="Two or more REFs, comma-separated "
                               "(base, run:N, model:N, a folder or a .gguf); every pair is asked."),
    prompts: str = typer.Option(..., "--prompts", "-p", help="A JSONL with \"prompt\" (or SFT "
                                "conversations), or a dataset version id or name."),
    n: int | None = typer.Option(None, "--n", help="Only the first N prompts."),
    task_set: str | None = typer.Option(None, "--task-set", help="Name of the task set "
                                        "(default: the REFs joined by ' vs ')."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Most tokens per answer."),
    temperature: float = typer.Option(0.7, "--temperature", "-t", help="0 is greedy."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed; also draws the sides."),
    base: Path | None = typer.Option(None, "--base", help="The folder REF 'base' stands for."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    as_json: bool = typer.Option(False, "--json", help="Print the new task ids as JSON."),
) -> None:
    """Generate label tasks: each model answers each prompt, every pair becomes a task."""
    from tuiapp.cli.generate_cmd import make_params, open_generator
    from tuiapp.engine.infer.model_refs import RefError
    from tuiapp.engine.label import tasks as labels

    if n is not None and n < 1:
        fail("--n must be at least 1", code=2)
    refs = [r.strip() for r in models.split(",") if r.strip()]
    params = make_params(max_new_tokens, temperature, 1.0, seed, None)
    gen, ws = open_generator(ctx, base, device)
    try:
        labels.pairs_of(refs)
        for ref in refs:
            gen.resolve(ref)  # unknown REFs are refused before any model loads
        prompt_rows = labels.load_prompts(prompts, ws.store, n)
        if as_json:
            tasks = labels.new_tasks(ws.store, gen, refs, prompt_rows, task_set=task_set,
                                     seed=seed, params=params)
        else:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            with Progress(TextColumn("generating pairs"), BarColumn(), MofNCompleteColumn(),
                          console=Console(stderr=True)) as bar:
                job = bar.add_task("pairs", total=None)
                tasks = labels.new_tasks(
                    ws.store, gen, refs, prompt_rows, task_set=task_set, seed=seed, params=params,
                    progress=lambda done, total: bar.update(job, completed=done, total=total))
    except (RefError, labels.LabelsError) as exc:
        fail(str(exc), code=2)
    except Exception as exc:  # noqa: BLE001 - a person reads this, not a traceback
        fail(f"making label tasks failed: {type(exc).__name__}: {exc}", code=1)
    finally:
        gen.close()
    name = tasks[0].task_set if tasks else task_set
    if as_json:
        print_json({"task_set": name, "task_ids": [t.id for t in tasks]})
    else:
        typer.echo(f"{len(tasks)} label tasks in task set {name!r}; label them on the Label "
                   "screen (tuneloop, F6).")


@app.command("judge")
def judge(
    ctx: typer.Context,
    judge_ref: str = typer.Option(..., "--judge", "-j", help="The judging model's REF (base, "
                                  "run:N, model:N, a folder or a .gguf)."),
    task_set: str = typer.Option(..., "--task-set", help="The task set to label."),
    constitution: Path | None = typer.Option(None, "--constitution", help="A text file of "
                                             "principles, one a line (default: the demo's, "
                                             "sample_data/constitution.txt)."),
    limit: int | None = typer.Option(None, "--limit", help="Judge at most N tasks."),
    on_inconsistent: str = typer.Option("tie", "--on-inconsistent", help="When the two orders "
                                        "disagree (position bias): record a tie, or a skip."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Most tokens per verdict."),
    base: Path | None = typer.Option(None, "--base", help="The folder REF 'base' stands for."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """An AI judge labels each pair by a constitution, shown in both orders; a person's labels
    are never touched (judge labels are stored with source = judge)."""
    from tuiapp.cli.generate_cmd import open_generator
    from tuiapp.engine.infer.model_refs import RefError
    from tuiapp.engine.infer.params import GenerationError
    from tuiapp.engine.label import judge as judging
    from tuiapp.engine.label import tasks as labels

    if on_inconsistent not in judging.ON_INCONSISTENT:
        fail("--on-inconsistent must be tie or skip", code=2)
    if limit is not None and limit < 1:
        fail("--limit must be at least 1", code=2)
    gen, ws = open_generator(ctx, base, device)
    try:
        constitution_ = judging.load_constitution(constitution)
        progress, bar = None, nullcontext()
        if not as_json:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            bar = Progress(TextColumn("judging pairs (both orders)"), BarColumn(),
                           MofNCompleteColumn(), console=Console(stderr=True))
            job = bar.add_task("pairs", total=None)
            progress = lambda done, total: bar.update(job, completed=done, total=total)  # noqa: E731
        with bar:
            result = judging.judge_tasks(ws.store, gen, judge_ref, task_set,
                                         constitution=constitution_, limit=limit,
                                         on_inconsistent=on_inconsistent,
                                         max_new_tokens=max_new_tokens, progress=progress)
    except (RefError, labels.LabelsError, GenerationError) as exc:
        fail(str(exc), code=2)
    except Exception as exc:  # noqa: BLE001 - a person reads this, not a traceback
        fail(f"judging failed: {type(exc).__name__}: {exc}", code=1)
    finally:
        gen.close()
    if as_json:
        print_json(result)
        return
    flip = "" if result["flip_rate"] is None else f" ({result['flip_rate']:.0%})"
    typer.echo(f"judge {result['judge']} labelled {result['judged']} pairs of {task_set!r} by "
               f"{result['constitution']}: "
               + (", ".join(f"{k} {v}" for k, v in sorted(result["by_choice"].items())) or "none")
               + f"; position flips {result['flips']}{flip} → {on_inconsistent}")
    methods = result["methods"]
    if methods.get("logprob"):
        typer.echo(f"  {methods['logprob']} of {sum(methods.values())} verdicts had no readable "
                   "verdict in the text and were scored by the log-probability of A vs B")
    if result["already_judged"] or result["left"]:
        typer.echo(f"  {result['already_judged']} already judged before, {result['left']} left "
                   "(beyond --limit)")
    typer.echo("Compare with your own labels: tuneloop labels stats --task-set "
               f"{task_set!r}")


@app.command("revise")
def revise_cmd(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", "-m", help="The model that answers, critiques and "
                              "rewrites (base, run:N, model:N, a folder or a .gguf)."),
    prompts: str = typer.Option(..., "--prompts", "-p", help="A JSONL with \"prompt\" (or SFT "
                                "conversations), or a dataset version id or name."),
    constitution: Path | None = typer.Option(None, "--constitution", help="A text file of "
                                             "principles, one a line (default: the demo's, "
                                             "sample_data/constitution.txt)."),
    principles: str | None = typer.Option(None, "--principles", help="Only these principle "
                                          "numbers, comma-separated (e.g. 1,2,3)."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N prompts."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Most tokens per answer, "
                                       "critique and rewrite."),
    temperature: float = typer.Option(0.0, "--temperature", "-t", help="0 is greedy."),
    seed: int = typer.Option(0, "--seed", help="Draws the principles' rotation (and sampling)."),
    base: Path | None = typer.Option(None, "--base", help="The folder REF 'base' stands for."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts and versions as JSON."),
) -> None:
    """Critique and revise (Constitutional AI): the model answers each prompt, critiques its
    answer against one principle and rewrites it; the rewrites become an SFT dataset version and
    original-vs-rewrite a preference version, both with lineage."""
    from tuiapp.cli.generate_cmd import make_params, open_generator
    from tuiapp.engine.infer.model_refs import RefError
    from tuiapp.engine.infer.params import GenerationError
    from tuiapp.engine.label import revise as revising
    from tuiapp.engine.label import tasks as labels

    if limit is not None and limit < 1:
        fail("--limit must be at least 1", code=2)
    numbers = None
    if principles:
        try:
            numbers = [int(x) for x in principles.split(",") if x.strip()]
        except ValueError:
            fail(f"--principles: numbers separated by commas, e.g. 1,2,3 (got {principles!r})",
                 code=2)
    params = make_params(max_new_tokens, temperature, 1.0, seed, None)
    err = Console(stderr=True, highlight=False)

    def progress(done: int, total: int, row: dict) -> None:
        if as_json:
            return
        what = {"kept": "revised", "empty": "left out (empty rewrite)",
                "identical": "left out (rewrite same as the answer)"}[row["status"]]
        err.print(f"[{done}/{total}] principle {row['principle']}: {what}  "
                  f"{row['original'][:40]!r} → {row['revised'][:40]!r}")

    gen, ws = open_generator(ctx, base, device)
    try:
        result = revising.revise_prompts(ws.store, gen, model, prompts, home=ws.home,
                                         constitution=constitution, limit=limit, seed=seed,
                                         principles=numbers, params=params, progress=progress)
    except (RefError, labels.LabelsError, GenerationError) as exc:
        fail(str(exc), code=2)
    except Exception as exc:  # noqa: BLE001 - a person reads this, not a traceback
        fail(f"revising failed: {type(exc).__name__}: {exc}", code=1)
    finally:
        gen.close()
    if as_json:
        print_json(result)
        return
    left = ", ".join(f"{v} {k}" for k, v in sorted(result["left_out"].items())) or "none"
    sft = result["sft_version"]
    typer.echo(f"{result['model']} revised {result['kept']} of {result['asked']} answers by "
               f"{result['constitution']} (left out: {left})")
    typer.echo(f"  SFT version {sft['id']} {sft['name']}: {sft['rows']} rows, sha256 "
               f"{sft['content_hash'][:16]}")
    pairs = result["pairs_version"]
    if pairs:
        typer.echo(f"  preference version {pairs['id']} {pairs['name']}: {pairs['rows']} pairs "
                   "(chosen = rewrite, rejected = original)")
    typer.echo(f"Train on it: dataset = {sft['id']} (or \"{sft['name']}\") in an SFT job.")


@app.command("export")
def export(
    ctx: typer.Context,
    task_set: str | None = typer.Option(None, "--task-set", help="Only this task set."),
    out: Path | None = typer.Option(None, "--out", help="Also write the JSONL here."),
    source: str = typer.Option("human", "--source", help="Whose labels: human, judge, or both "
                               "(a person's label where there is one, else the judge's)."),
    as_json: bool = typer.Option(False, "--json", help="Print the dataset version as JSON."),
) -> None:
    """Labels → a new immutable preference dataset version (ties and skips left out)."""
    from tuiapp.engine.label import tasks as labels

    if source not in labels.EXPORT_SOURCES:
        fail("--source must be human, judge or both", code=2)
    ws = open_ws(ctx)
    try:
        version = labels.export(ws.store, task_set, out, home=ws.home, source=source)
    except labels.LabelsError as exc:
        fail(str(exc), code=2)
    if as_json:
        print_json(version.to_dict())
        return
    typer.echo(f"dataset version {version.id} {version.name}: {version.rows} preference pairs "
               f"({version.stats.get('both_bad', 0)} both bad, {version.stats.get('edited', 0)} "
               f"rewritten), sha256 {version.content_hash[:16]}")
    typer.echo(f"  {version.path}")
    typer.echo(f"Train on it: dataset = {version.id} (or \"{version.name}\") in a DPO or reward "
               "job.")


@app.command("stats")
def stats(
    ctx: typer.Context,
    task_set: str | None = typer.Option(None, "--task-set", help="Only this task set."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Label counts, pace, self-agreement, per-model win-rates (Bradley-Terry, 95% CI) and, where
    a judge labelled too, its position-flip rate and agreement with you (raw, Cohen's kappa)."""
    from tuiapp.engine.label import tasks as labels

    ws = open_ws(ctx)
    st = labels.stats(ws.store, task_set)
    if as_json:
        print_json(st)
        return
    console = Console()
    for line in labels.summary_lines(st):
        console.print(line, highlight=False)
    wr = st["win_rates"]
    if wr["pairs"]:
        table = Table(title="Wins per pair", title_justify="left")
        for col in ("a", "b", "wins", "ties", "both bad", "losses", "win rate"):
            table.add_column(col, justify="left" if col in ("a", "b") else "right")
        for row in wr["pairs"]:
            table.add_row(row["a"], row["b"], str(row["wins"]), str(row["ties"]),
                          str(row["both_bad"]), str(row["losses"]), f"{row['win_rate']:.0%}")
        console.print(table)
    if wr["strengths"]:
        table = Table(title="Bradley-Terry strength (log, mean 0)", title_justify="left")
        for col in ("model", "score", "95% low", "95% high"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for s in wr["strengths"]:
            table.add_row(s["model"], f"{s['score']:+.2f}", f"{s['low']:+.2f}",
                          f"{s['high']:+.2f}")
        console.print(table)
    judged = st["judge"]
    if judged["disagreements"]:
        table = Table(title="Judge vs person: disagreements", title_justify="left")
        for col in ("task", "prompt", "you", "judge", "principle", "rationale"):
            table.add_column(col, justify="right" if col == "task" else "left")
        for d in judged["disagreements"]:
            judge_said = d["judge"] + ("" if d["consistent"] is not False else " (flip)")
            table.add_row(str(d["task_id"]), d["prompt"][:50], d["human"], judge_said,
                          d["principle"] or "-", (d["rationale"] or "")[:60])
        console.print(table)
