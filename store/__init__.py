"""tuneloop's SQLite store: ``Store(path)`` plus the row dataclasses it returns.

No Textual (or torch) import here or below: the engine, child processes and the CLI use it too.
"""

import sys as _sys

# sqlite-utils imports pandas and numpy when they are installed (they are: datasets pulls them
# in) only to map their scalar types to column types. The store only writes Python values, and
# those two imports cost ~0.4 s of the TUI's start-up, so they are hidden while sqlite-utils
# loads. If something imported them earlier, nothing is hidden and nothing changes.
if "sqlite_utils" not in _sys.modules:
    _hidden = {m: _sys.modules.get(m) for m in ("pandas", "numpy") if m not in _sys.modules}
    for _m in _hidden:
        _sys.modules[_m] = None  # type: ignore[assignment]  # makes `import pandas` raise ImportError
    try:
        import sqlite_utils  # noqa: F401
    finally:
        for _m in _hidden:
            del _sys.modules[_m]

from store.errors import DuplicateLabel, NotFound, StoreError
from store.models import (
    LABEL_CHOICES,
    LABEL_SOURCES,
    MODEL_KINDS,
    RUN_STATUSES,
    DatasetVersion,
    Evaluation,
    ExportRow,
    Generation,
    LabelEvent,
    LabelTask,
    Metric,
    ModelRow,
    Run,
    Sweep,
)
from store.refs import canonical_ref
from store.store import Store

__all__ = [
    "Store",
    "canonical_ref",
    "StoreError",
    "NotFound",
    "DuplicateLabel",
    "ModelRow",
    "DatasetVersion",
    "Run",
    "Sweep",
    "Metric",
    "Generation",
    "Evaluation",
    "LabelTask",
    "LabelEvent",
    "ExportRow",
    "RUN_STATUSES",
    "LABEL_CHOICES",
    "LABEL_SOURCES",
    "MODEL_KINDS",
]
