"""Turning SQLite rows into the dataclasses of store.models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from store.db import load_json

# JSON columns and what an absent value decodes to.
JSON_COLUMNS: dict[str, Any] = {
    "meta": {},
    "stats": {},
    "lineage": {},
    "config": {},
    "environment": {},
    "params": {},
    "metrics": {},
    "details": {},
    "parity": {},
    "model_refs": [],
    "candidates": [],
    "detail": {},
    "grid": [],
}
BOOL_COLUMNS = {"swapped"}


def row_to(cls: type, row: Mapping[str, Any], **extra: Any) -> Any:
    """Build a models dataclass from a row dict, decoding JSON and bool columns."""
    values = {}
    for name in cls.__dataclass_fields__:
        if name in extra:
            values[name] = extra[name]
        elif name in row:
            value = row[name]
            if name in JSON_COLUMNS:
                value = load_json(value, empty=JSON_COLUMNS[name])
            elif name in BOOL_COLUMNS:
                value = bool(value)
            values[name] = value
    return cls(**values)
