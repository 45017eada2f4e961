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
