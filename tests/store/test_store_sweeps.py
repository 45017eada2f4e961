"""Sweeps in the store: the m005 migration from the schema before it, and the accessors."""

from __future__ import annotations

import sqlite3

import pytest
from sqlite_utils import Database

from store import NotFound, Store
from store.migrations import MIGRATION_NAMES, migrate, migrations
from tests.store.test_store_schema import schema


def test_upgrade_from_the_schema_before_sweeps_keeps_runs_and_adds_the_table(tmp_path):
    path = tmp_path / "before.db"
    db = Database(sqlite3.connect(path, isolation_level=None))
    migrate(db, stop_before="m005_sweeps")
    applied = [m.name for m in migrations.applied(db)]
    assert "m005_sweeps" not in applied and "sweeps" not in db.table_names()
    db.execute(
        "INSERT INTO runs (id, kind, status, config, environment, created_at)"
        " VALUES (1, 'sft', 'completed', '{\"lora_r\": 8}', '{}', '2024-01-01T00:00:00+00:00')"
    )
    db.close()

    with Store(path) as s:
        assert s.applied_migrations() == MIGRATION_NAMES
        old = s.get_run(1)
        assert old.sweep_id is None and old.config == {"lora_r": 8}
        with Store(tmp_path / "blank.db") as blank:
            assert schema(s.db) == schema(blank.db)
        sweep = s.create_sweep("r", "sft", [("lora_r", [4, 8])])
        assert s.add_run_to_sweep(sweep.id, 1).sweep_id == sweep.id
        assert s.get_sweep(sweep.id).run_ids == (1,)


def test_sweep_accessors(store):
    sweep = store.create_sweep(
        "demo sweep", "sft", [("method", ["lora", "full"]), ("lora_r", [4, 8])],
        config={"lora_r": 16}, config_path="/p/demo.toml", prompts="demo/eval_heldout",
        details={"points": 4})
    assert (sweep.name, sweep.kind, sweep.config_path) == ("demo sweep", "sft", "/p/demo.toml")
    assert sweep.grid == [["method", ["lora", "full"]], ["lora_r", [4, 8]]]
    assert sweep.config == {"lora_r": 16} and sweep.run_ids == ()
    a = store.create_run("sft", {"lora_r": 4})
    b = store.create_run("sft", {"lora_r": 8})
    store.create_run("sft", {})  # not in the sweep
    store.add_run_to_sweep(sweep.id, b.id)
    store.add_run_to_sweep(sweep.id, a.id)
    assert [r.id for r in store.sweep_runs(sweep.id)] == [a.id, b.id]
    assert store.get_sweep(sweep.id).run_ids == (a.id, b.id)
    after = store.update_sweep_details(sweep.id, evaluation_id=3)
    assert after.details == {"points": 4, "evaluation_id": 3}
    assert [s.id for s in store.list_sweeps()] == [sweep.id]
    assert store.get_run(a.id).to_dict()["sweep_id"] == sweep.id


def test_sweep_refusals_name_what_is_missing(store):
    with pytest.raises(NotFound, match="No sweep with id 9"):
        store.get_sweep(9)
    with pytest.raises(ValueError, match="no sweep with id 9"):
        store.add_run_to_sweep(9, 1)
    sweep = store.create_sweep("s", "sft", [("lora_r", [1])])
    with pytest.raises(ValueError, match="no run with id 5"):
        store.add_run_to_sweep(sweep.id, 5)
    with pytest.raises(ValueError, match="at least one grid key"):
        store.create_sweep("s", "sft", [])
