"""Leaving invalid rows out through the Engine (what the Datasets screen calls)."""

from __future__ import annotations

from pathlib import Path

import pytest

from store import Store
from tuiapp.engine.data import validate
from tuiapp.engine.facade import DatasetImportError, Engine

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real_formats"


def test_engine_import_skip_invalid(tmp_path):
    store = Store(tmp_path / "home" / "tuneloop.db")
    engine = Engine()
    with pytest.raises(DatasetImportError, match="or leave the invalid rows out"):
        engine.import_dataset(store, REAL / "hh_rlhf.jsonl", "hh")
    version = engine.import_dataset(store, REAL / "hh_rlhf.jsonl", "hh", skip_invalid=True)
    assert version.rows == 3 and version.kind == "preference"
    assert version.stats["skipped"]["lines"] == [3]
    assert version.lineage["skipped_invalid"]["count"] == 1
    assert Path(version.path).parent.parent == tmp_path / "home" / "datasets"
    assert validate(version.path, kind="preference").ok


def test_engine_skip_invalid_still_refuses_when_nothing_is_usable(tmp_path):
    store = Store(tmp_path / "tuneloop.db")
    with pytest.raises(DatasetImportError, match="multimodal"):
        Engine().import_dataset(store, REAL / "images.json", "img", skip_invalid=True)
