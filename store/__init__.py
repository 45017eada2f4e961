"""tuneloop's SQLite store: ``Store(path)`` plus the row dataclasses it returns.

No Textual (or torch) import here or below: the engine, child processes and the CLI use it too.
"""

from .errors import DuplicateLabel, NotFound, StoreError
from .models import (
    LABEL_CHOICES,
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
)
from .store import Store

__all__ = [
    "Store",
    "StoreError",
    "NotFound",
    "DuplicateLabel",
    "ModelRow",
    "DatasetVersion",
    "Run",
    "Metric",
    "Generation",
    "Evaluation",
    "LabelTask",
    "LabelEvent",
    "ExportRow",
    "RUN_STATUSES",
    "LABEL_CHOICES",
    "MODEL_KINDS",
]
