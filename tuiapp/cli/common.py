"""Small helpers shared by the command groups."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer


def home_from(ctx: typer.Context) -> str | None:
    """The ``--home`` given to the top-level command (None: TUNELOOP_HOME / XDG default)."""
    obj = ctx.find_root().obj or {}
    return obj.get("home")


def open_ws(ctx: typer.Context):
    from tuiapp.workspace import WorkspaceError, open_workspace, resolve_home

    try:
        return open_workspace(resolve_home(home_from(ctx)))
    except WorkspaceError as exc:
        fail(str(exc), code=2)


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def quiet_transformers() -> None:
    """CLI output is tuneloop's own: no weight-loading bars, no deprecation/info chatter from
    transformers (errors still show). Called by commands that load models in this process."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
