"""One spelling per model REF in stored labels: ``7``, ``run:7``, ``RUN: 07`` are all ``run:7``.

Label tasks made on the CLI (``--models base,1``) and blind rounds in Compare (``run:1``) named
the same run two ways, and win-rates ranked them as two models. Every REF is put through
``canonical_ref`` where a label task is stored; migration m003 rewrote the ones already stored.
The forms are model_refs' (``base``, a run id, ``model:<id>``, a path); a path is kept as given.
"""

from __future__ import annotations

import re

_ID_REF = re.compile(r"(run|model)\s*:\s*(\d+)", re.IGNORECASE)


def canonical_ref(ref: str) -> str:
    """``base``, ``run:<id>``, ``model:<id>``, or the REF as given (stripped) for anything else."""
    text = str(ref).strip()
    if text.isdigit():
        return f"run:{int(text)}"
    match = _ID_REF.fullmatch(text)
    if match:
        return f"{match.group(1).lower()}:{int(match.group(2))}"
    if text.lower() == "base":
        return "base"
    return text
