"""The ``tuneloop`` command: with no sub-command it opens the TUI; sub-commands run headless."""

from __future__ import annotations

import typer

from tuiapp.cli import (
    data_cmd,
    demo_cmd,
    eval_cmd,
    export_cmd,
    generate_cmd,
    labels_cmd,
    merge_cmd,
    redteam_cmd,
    runs_cmd,
    sweep_cmd,
    train_cmd,
)

app = typer.Typer(
    name="tuneloop",
    help="The local adaptation loop of a language model: data → SFT → compare → label → "
    "DPO/PPO → GGUF. Run without a command to open the terminal UI.",
    invoke_without_command=True,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_cmd.app, name="data")
app.add_typer(train_cmd.app, name="train")
app.add_typer(runs_cmd.app, name="runs")
app.add_typer(sweep_cmd.app, name="sweep")
app.add_typer(export_cmd.app, name="export")
app.command("generate")(generate_cmd.generate)
app.command("eval")(eval_cmd.eval_models)
app.command("redteam")(redteam_cmd.redteam)
app.command("merge")(merge_cmd.merge)
app.add_typer(labels_cmd.app, name="labels")
app.add_typer(demo_cmd.app, name="demo")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"tuneloop {version('tuneloop')}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    home: str | None = typer.Option(
        None,
        "--home",
        envvar="TUNELOOP_HOME",
        help="Workspace folder holding tuneloop.db and artifacts "
        "(default: $XDG_DATA_HOME/tuneloop). A fresh one is seeded with the demo world.",
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    ctx.obj = {"home": home}
    _quiet_library_noise()
    if ctx.invoked_subcommand is None:
        open_tui(home)


def _quiet_library_noise() -> None:
    """Messages the libraries print that a tuneloop user can do nothing about: bitsandbytes'
    offer of a hub kernel (there is no hub here) and a transformers deprecation PEFT triggers."""
    import logging
    import warnings

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)


def build_app(home: str | None):
    """The one factory that wires the real store, engine and settings into the TUI."""
    from tuiapp.app import Settings, TuiApp
    from tuiapp.engine.facade import Engine
    from tuiapp.workspace import open_workspace, resolve_home

    ws = open_workspace(resolve_home(home))
    return TuiApp(store=ws.store, engine=Engine(), settings=Settings(home=ws.home))


def open_tui(home: str | None) -> None:
    from tuiapp.workspace import WorkspaceError

    try:
        tui = build_app(home)
    except WorkspaceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    tui.run()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
