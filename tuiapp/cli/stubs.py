"""Command groups whose capability is not built yet.

They exist so ``tuneloop --help`` shows the whole shape of the tool, and they say plainly what is
missing and exit 2 — never fake output.
"""

from __future__ import annotations

import typer

_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def missing(command: str, capability: str) -> None:
    typer.echo(
        f"`tuneloop {command}` needs {capability}, which this version of tuneloop does not have "
        "yet. Nothing was run.",
        err=True,
    )
    raise typer.Exit(2)


def _group(name: str, help_text: str, capability: str, subcommands: dict[str, str]) -> typer.Typer:
    group = typer.Typer(help=help_text, no_args_is_help=True)
    for sub, sub_help in subcommands.items():

        def command(ctx: typer.Context, _sub: str = sub) -> None:
            missing(f"{name} {_sub}", capability)

        command.__doc__ = sub_help
        group.command(sub, context_settings=_PASSTHROUGH)(command)
    return group


labels_app = _group(
    "labels",
    "Preference labelling tasks, export and statistics.",
    "preference labelling",
    {
        "new": "Generate label tasks from two or more models over a prompt set.",
        "export": "Export labels as a new preference dataset version.",
        "stats": "Label counts, agreement and win-rates.",
    },
)
