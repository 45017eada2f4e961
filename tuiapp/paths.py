"""Where things live: the repository's sample data and the user's workspace defaults."""

from __future__ import annotations

import os
from pathlib import Path

# tuneloop installs in editable mode from its repository; sample_data/ sits beside the package.
REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DATA = REPO_ROOT / "sample_data"
DEMO_DIR = SAMPLE_DATA / "demo"
PRESETS_DIR = SAMPLE_DATA / "presets"
DEMO_TOKENIZER = DEMO_DIR / "tokenizer"
DEMO_BASE_MODEL = DEMO_DIR / "base-model"

DB_NAME = "tuneloop.db"


def default_home() -> Path:
    """The user's XDG data dir for tuneloop (``$XDG_DATA_HOME/tuneloop``)."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "tuneloop"
