"""Command groups of the ``tuneloop`` CLI; each module exposes ``app`` (a Typer)."""
