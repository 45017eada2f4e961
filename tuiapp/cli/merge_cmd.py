"""``tuneloop merge``: combine adapters or fine-tuned models into one new model row.

    tuneloop merge run:3,run:5 --method ties --weights 1,1 --density 0.5 [--name N]
    tuneloop merge run:3,run:5 --method cat            (LoRA adapters of one base, PEFT)
    tuneloop merge model:4,model:7 --method slerp --weights 0.5,0.5 --base base
    tuneloop merge run:3 --method task_arithmetic --weights -1   (subtract a task vector)

The result is printed as ``model:<id>``, a REF for generate, eval, label tasks, DPO start_from;
export it by its folder. Exit codes: 0 merged, 1 refused, 2 arguments that cannot be read.
"""

from __future__ import annotations

import typer

from tuiapp.cli.common import fail, open_ws, print_json, quiet_transformers


def merge(
    ctx: typer.Context,
    refs: str = typer.Argument(..., help="The models to merge, REF,REF[,...] (run:3, model:4, a folder)."),
    method: str = typer.Option(..., "--method", "-m", help="Adapters (PEFT): linear, cat, svd, ties, "
                               "dare_linear, dare_ties, magnitude_prune. Whole models: task_arithmetic "
                               "(add), ties, dare_linear, dare_ties, slerp."),
    weights: str | None = typer.Option(None, "--weights", "-w", help="One weight per input, w1,w2 "
                                       "(default 1 each; slerp 0.5,0.5 = t 0.5). Negative subtracts."),
    density: float | None = typer.Option(None, "--density", "-d", help="Share of each delta kept by "
                                         "ties / dare / magnitude_prune, in (0, 1] (default 0.5)."),
    name: str | None = typer.Option(None, "--name", "-n", help="Name of the merged model."),
    base: str | None = typer.Option(None, "--base", help="The base REF task vectors are taken "
                                    "against (whole models without a recorded base)."),
    full: bool = typer.Option(False, "--full", help="Merge adapters as whole models (task vectors "
                              "against the base) even where PEFT could merge them as adapters."),
    seed: int = typer.Option(0, "--seed", help="Seed of DARE's random drop."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Merge adapters or fine-tuned models; the result is a new model row (model:<id>)."""
    from tuiapp.engine.export.merge_models import MergeError, parse_refs, plan_merge, run_merge

    ws = open_ws(ctx)
    try:
        plan = plan_merge(parse_refs(refs), method, weights, density, ws.store, base=base, full=full,
                          home=ws.home)
    except MergeError as exc:
        fail(str(exc), code=1)
    quiet_transformers()
    try:
        result = run_merge(plan, ws.store, ws.models_dir, name=name, seed=seed)
    except MergeError as exc:
        fail(str(exc), code=1)
    if as_json:
        print_json(result)
        return
    ins = ", ".join(f"{i['ref']} x {i['weight']:g}" for i in result["inputs"])
    extra = f", density {result['density']:g}" if result["density"] is not None else ""
    typer.echo(f"merged {ins} with {result['method']} ({result['library']}{extra})")
    typer.echo(f"{result['ref']}: {result['kind']} in {result['path']}")
    typer.echo(f"use {result['ref']} with generate / eval; give the folder to `tuneloop export` "
               "or as a DPO start_from")
