"""``tuneloop redteam --models REF[,REF...] [--suite FILE]``: a red-team suite through models.

Mounted as a single command: ``app.command("redteam")(redteam_cmd.redteam)`` in ``__main__``.
One table row per model and category (harmful compliance, leaked, over-refusal, correct), then a few
failures of each model; the result is stored as an evaluation linked to the runs it measured.
--json prints the per-model metrics. Exit 2 for an unknown REF or a malformed suite (file:line
named); 1 when a model fails to load or generate.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tuiapp.cli.common import fail, print_json
from tuiapp.cli.generate_cmd import REF_HELP, make_params, open_generator


def _pct(value) -> str:
    return "–" if value is None else f"{value:.0%}"


def _short(text, limit: int = 70) -> str:
    flat = " ".join(str(text).split()) if isinstance(text, str) else str(text)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


COLUMNS = (("harmful_compliance", "harmful"), ("leaked", "leaked"), ("over_refusal", "over-refusal"),
           ("correct", "correct"))


def print_result(console: Console, result: dict) -> None:
    table = Table(title=f"{result['name']} ({result['n_prompts']} prompts)", title_justify="left")
    for col in ("model", "category", "expect", "n"):
        table.add_column(col, overflow="fold")
    shown = [(key, head) for key, head in COLUMNS if key in result["scorers"]]
    for _, head in shown:
        table.add_column(head, justify="right")
    for i, ref in enumerate(result["models"]):
        m = result["metrics"][ref]
        if i:
            table.add_section()
        label = m["label"]  # once per model: the rows below are its categories
        for cat in result["categories"]:
            c = m["categories"].get(cat)
            if c:
                table.add_row(label, cat, c["expect"], str(c["n"]), *(_pct(c.get(k)) for k, _ in shown))
                label = ""
        table.add_row("", "[bold]all[/]", "", str(m["n"]), *(_pct(m["scores"].get(k)) for k, _ in shown))
    console.print(table)
    console.print("harmful: refuse-prompts answered (an empty answer is not counted); leaked: the "
                  "secret appears; over-refusal: comply-prompts refused", highlight=False)
    for ref in result["models"]:
        m = result["metrics"][ref]
        for kind, words in (("harmful_compliance", "complied with"), ("over_refusal", "refused")):
            for ex in m["examples"][kind][:2]:
                console.print(f"{m['label']} {words} [{ex['category']}] {_short(ex['prompt'])!r}: "
                              f"{_short(ex['output'])!r}", highlight=False, markup=False)
    if result["evaluation_id"] is not None:
        console.print(f"stored as evaluation {result['evaluation_id']}", highlight=False)


def redteam(
    ctx: typer.Context,
    models: str = typer.Option(..., "--models", "-m", help=f"Comma-separated REFs: {REF_HELP}."),
    suite: Path | None = typer.Option(None, "--suite", "-s", help="A suite JSONL: {\"prompt\", "
                                      "\"category\", \"expect\": \"refuse\"|\"comply\", optional "
                                      "\"reference\"} per line (default: the demo suite)."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N prompts."),
    system: str | None = typer.Option(None, "--system", help="A system prompt for every prompt."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", "-n", help="Most tokens per answer."),
    temperature: float = typer.Option(0.0, "--temperature", "-t", help="0 is greedy."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    name: str | None = typer.Option(None, "--name", help="Name of the stored evaluation."),
    base: Path | None = typer.Option(None, "--base", help="The folder REF 'base' stands for "
                                     "(default: the demo base model)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (transformers models)."),
    as_json: bool = typer.Option(False, "--json", help="Print per-model metrics as JSON."),
) -> None:
    """Score each model on a red-team suite: harmful compliance and over-refusal per category."""
    from tuiapp.engine.infer.evaluate import EvalError
    from tuiapp.engine.infer.gguf_file import GGUFFileError
    from tuiapp.engine.infer.model_refs import RefError
    from tuiapp.engine.infer.params import GenerationError
    from tuiapp.engine.infer.redteam import load_suite, run_redteam

    refs = [r.strip() for r in models.split(",") if r.strip()]
    if not refs:
        fail("--models is empty; give one or more REFs separated by commas", code=2)
    if len(set(refs)) != len(refs):
        fail(f"a model is listed twice: {models}", code=2)
    if limit is not None and limit < 1:
        fail("--limit must be at least 1", code=2)
    try:
        loaded = load_suite(suite)  # a bad suite is refused before the workspace opens a model
    except EvalError as exc:
        fail(str(exc), code=2)
    params = make_params(max_new_tokens, temperature, 1.0, seed, None)
    gen, _ws = open_generator(ctx, base, device)
    try:
        for ref in refs:
            gen.resolve(ref)
    except RefError as exc:
        gen.close()
        fail(str(exc), code=2)

    console = Console(stderr=True)
    try:
        if as_json:
            result = run_redteam(gen, refs, loaded, params=params, limit=limit, system=system, name=name)
        else:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          console=console) as bar:
                task = bar.add_task("loading", total=None)

                def on_progress(done: int, total: int, ref: str) -> None:
                    bar.update(task, description=ref, completed=done, total=total)

                result = run_redteam(gen, refs, loaded, params=params, limit=limit, system=system,
                                     name=name, progress=on_progress)
    except (RefError, EvalError) as exc:
        fail(str(exc), code=2)
    except (GenerationError, GGUFFileError) as exc:
        fail(str(exc), code=1)
    except Exception as exc:  # noqa: BLE001 - a person reads this, not a traceback
        fail(f"the red-team run failed: {type(exc).__name__}: {exc}", code=1)
    finally:
        gen.close()
    if as_json:
        print_json({k: result[k] for k in ("evaluation_id", "name", "kind", "suite", "n_prompts",
                                           "categories", "scorers", "models", "metrics")})
    else:
        print_result(Console(), result)
