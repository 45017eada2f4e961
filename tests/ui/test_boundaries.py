"""Import boundaries, checked in fresh interpreters: the TUI starts without the ML stack, and the
store and engine never pull in Textual."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "datasets", "tokenizers", "pyarrow")


def loaded_after(statement: str, modules: tuple[str, ...]) -> list[str]:
    code = (
        f"import sys, json\n{statement}\n"
        f"print(json.dumps([m for m in {modules!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_app_and_its_factory_import_no_ml_library():
    statement = (
        "import tuiapp.app, tuiapp.engine.facade, tuiapp.workspace\n"
        "from tuiapp.app import TuiApp, Settings\n"
        "from tuiapp.engine.facade import Engine\n"
        "from store import Store\n"
        "TuiApp(store=Store(':memory:'), engine=Engine(), settings=Settings(home='.'))"
    )
    assert loaded_after(statement, HEAVY) == []


def test_store_and_engine_import_no_textual():
    statement = (
        "import store, tuiapp.engine, tuiapp.engine.facade, tuiapp.demo.files, tuiapp.demo.proof\n"
        "from tuiapp.engine import data, train, jobs, infer, label, export"
    )
    assert loaded_after(statement, ("textual",)) == []
