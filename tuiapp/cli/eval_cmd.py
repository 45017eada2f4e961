"""``tuneloop eval --models REF[,REF...] --prompts FILE``: a prompt set through models, scored.

Mounted as a single command: ``app.command("eval")(eval_cmd.eval_models)`` in ``__main__``.
A Rich progress bar (stderr), then one table row per model with the mean of each score; the
evaluation is stored and linked to the runs it measured. --json prints the per-model scores.
Exit 2 for an unknown REF, prompt set or scorer; 1 when a model fails to load or generate.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tuiapp.cli.common import fail, print_json
from tuiapp.cli.generate_cmd import REF_HELP, make_params, open_generator


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def print_table(console: Console, result: dict) -> None:
    table = Table(title=f"{result['name']} ({result['n_prompts']} prompts)", title_justify="left")
    table.add_column("model", overflow="fold")
    for s in result["scorers"]:
        table.add_column(s, justify="right")
    table.add_column("tokens", justify="right")
    table.add_column("tokens/s", justify="right")
    for ref in result["models"]:
        m = result["metrics"][ref]
        rate = f"{m['tokens_per_s']:.1f}" if m["tokens_per_s"] else "–"
        table.add_row(m["label"], *(_fmt(m["scores"][s]) for s in result["scorers"]),
                      f"{m['mean_tokens']:.1f}", rate)
    console.print(table)
    if len(result["models"]) > 1:
        console.print(f"{len(result['disagreements'])} of {result['n_prompts']} prompts scored "
                      "differently between the models", highlight=False)
    if result["evaluation_id"] is not None:
        console.print(f"stored as evaluation {result['evaluation_id']}", highlight=False)


def eval_models(
    ctx: typer.Context,
    models: str = typer.Option(..., "--models", "-m", help=f"Comma-separated REFs: {REF_HELP}."),
    prompts: str = typer.Option(..., "--prompts", "-p", help="A JSONL with \"prompt\" and optional "
                                "\"reference\", or a dataset version id or name."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N prompts."),
    scorers: str | None = typer.Option(None, "--scorers", help="Comma-separated: exact, contains, regex, "
                                       "demo_format, demo_exact, demo_refusal, demo_verify "
                                       "(default: what the prompt set supports)."),
    system: str | None = typer.Option(None, "--system", help="A system prompt for every question."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", "-n", help="Most tokens per answer."),
    temperature: float = typer.Option(0.0, "--temperature", "-t", help="0 is greedy."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    name: str | None = typer.Option(None, "--name", help="Name of the stored evaluation."),
    base: Path | None = typer.Option(None, "--base", help="The folder REF 'base' stands for "
                                     "(default: the demo base model)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (transformers models)."),
    general: bool = typer.Option(False, "--general", help="A regression check: every prompt must "
                                 "have a reference; `runs show` then lists base vs tuned on it "
                                 "(sample_data/suites/demo-general.jsonl for the demo)."),
    as_json: bool = typer.Option(False, "--json", help="Print per-model scores as JSON."),
) -> None:
    """Answer a prompt set with each model and score the answers; stored as an evaluation."""
    from tuiapp.engine.infer.evaluate import EvalError, load_prompt_set, run_eval
    from tuiapp.engine.infer.gguf_file import GGUFFileError
    from tuiapp.engine.infer.model_refs import RefError
    from tuiapp.engine.infer.params import GenerationError

    refs = [r.strip() for r in models.split(",") if r.strip()]
    if not refs:
        fail("--models is empty; give one or more REFs separated by commas", code=2)
    if limit is not None and limit < 1:
        fail("--limit must be at least 1", code=2)
    params = make_params(max_new_tokens, temperature, 1.0, seed, None)
    kind = "general" if general else None
    gen, ws = open_generator(ctx, base, device)
    try:
        prompt_set = load_prompt_set(prompts, ws.store)
        if general:
            from tuiapp.engine.infer.redteam import check_general

            check_general(prompt_set)
        chosen = [s.strip() for s in scorers.split(",") if s.strip()] if scorers else None
        for ref in refs:
            gen.resolve(ref)  # an unknown REF is refused before any model loads
    except (RefError, EvalError) as exc:
        gen.close()
        fail(str(exc), code=2)

    console = Console(stderr=True)
    try:
        if as_json:
            result = run_eval(gen, refs, prompt_set, scorers=chosen, params=params, limit=limit,
                              system=system, name=name, kind=kind)
        else:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console) as bar:
                task = bar.add_task("loading", total=None)

                def on_progress(done: int, total: int, ref: str) -> None:
                    bar.update(task, description=ref, completed=done, total=total)

                result = run_eval(gen, refs, prompt_set, scorers=chosen, params=params, limit=limit,
                                  progress=on_progress, system=system, name=name, kind=kind)
    except (RefError, EvalError) as exc:
        fail(str(exc), code=2)
    except (GenerationError, GGUFFileError) as exc:
        fail(str(exc), code=1)
    except Exception as exc:  # noqa: BLE001 - a person reads this, not a traceback
        fail(f"the evaluation failed: {type(exc).__name__}: {exc}", code=1)
    finally:
        gen.close()
    if as_json:
        print_json({k: result[k] for k in ("evaluation_id", "name", "prompt_set", "n_prompts", "scorers",
                                           "models", "metrics", "disagreements")})
    else:
        print_table(Console(), result)
