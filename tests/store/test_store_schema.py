"""Schema: blank databases, upgrading from the first schema, pragmas, refusing newer schemas."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlite_utils import Database

from store import Store, StoreError
from store.migrations import MIGRATION_NAMES, MIGRATION_SET, migrations

TABLES = {
    "meta",
    "models",
    "dataset_versions",
    "runs",
    "metrics",
    "generations",
    "evaluations",
    "evaluation_runs",
    "label_tasks",
    "label_events",
    "exports",
    "sweeps",
}
REPO = Path(__file__).resolve().parents[2]


def schema(db: Database) -> dict[str, list[tuple]]:
    """Every table's columns (name, type, notnull, default, pk) and index definitions."""
    out: dict[str, list[tuple]] = {}
    for table in db.table_names():
        if table == migrations.migrations_table:
            continue
        cols = db.execute(f"PRAGMA table_info([{table}])").fetchall()
        out[table] = [tuple(c[1:]) for c in cols]
        idx = db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL"
            " ORDER BY name",
            [table],
        ).fetchall()
        out[table] += [("index", i[0]) for i in idx]
    return out


def test_blank_database_has_every_table_and_all_migrations(store):
    assert TABLES <= set(store.db.table_names())
    assert store.applied_migrations() == MIGRATION_NAMES
    assert MIGRATION_NAMES[0] == "m001_initial"
    assert store.counts() == {
        "runs": 0,
        "dataset_versions": 0,
        "models": 0,
        "labels": 0,
        "exports": 0,
    }
    # the metrics lookup the charts do is indexed
    metric_indexes = {tuple(i.columns) for i in store.db.table("metrics").indexes}
    assert ("run_id", "name", "step") in metric_indexes


def test_reopening_applies_nothing_and_keeps_data(db_path):
    with Store(db_path) as s:
        s.set_meta("k", {"v": 1})
    with Store(db_path) as s:
        assert s.get_meta("k") == {"v": 1}
        rows = s.db.execute(f"SELECT COUNT(*) FROM [{migrations.migrations_table}]").fetchone()
        assert rows[0] == len(MIGRATION_NAMES)


def first_schema_db(path: Path) -> Database:
    """A database as the very first release left it: only m001 applied."""
    conn = sqlite3.connect(path, isolation_level=None)
    db = Database(conn)
    stop = MIGRATION_NAMES[1] if len(MIGRATION_NAMES) > 1 else None
    migrations.apply(db, stop_before=stop)
    assert [m.name for m in migrations.applied(db)] == ["m001_initial"]
    return db


def test_upgrade_from_first_schema_keeps_rows_and_adds_new_schema(tmp_path):
    old_path = tmp_path / "old.db"
    db = first_schema_db(old_path)
    now = "2024-01-01T00:00:00+00:00"
    db.execute(
        "INSERT INTO models (id, name, kind, path, meta, created_at) VALUES (1, 'base', 'hf', '/m', '{\"x\": 1}', ?)",
        [now],
    )
    db.execute(
        "INSERT INTO dataset_versions (id, name, path, content_hash, format, kind, rows, stats,"
        " lineage, created_at) VALUES (1, 'demo/sft', '/d.jsonl', 'abc', 'messages', 'sft', 3,"
        " '{\"tokens\": 9}', '{}', ?)",
        [now],
    )
    db.execute(
        "INSERT INTO runs (id, kind, status, config, environment, base_model_id, dataset_version_id,"
        " created_at) VALUES (1, 'sft', 'completed', '{\"lr\": 0.001}', '{}', 1, 1, ?)",
        [now],
    )
    db.execute(
        "INSERT INTO metrics (run_id, step, name, value, t) VALUES (1, 5, 'loss', 0.5, ?)", [now]
    )
    db.execute(
        "INSERT INTO label_tasks (id, task_set, prompt, candidates, created_at)"
        ' VALUES (1, \'s\', \'p\', \'[{"model_ref": "a", "output": "x"},'
        ' {"model_ref": "b", "output": "y"}]\', ?)',
        [now],
    )
    db.execute(
        "INSERT INTO label_events (task_id, kind, choice, swapped, created_at)"
        " VALUES (1, 'label', 'b', 1, ?)",
        [now],
    )
    db.close()

    with Store(old_path) as s:
        assert s.applied_migrations() == MIGRATION_NAMES
        run = s.get_run(1)
        assert (run.kind, run.status, run.config) == ("sft", "completed", {"lr": 0.001})
        assert s.get_model(1).meta == {"x": 1}
        assert s.get_dataset_version(1).stats == {"tokens": 9}
        assert s.metric_summary(1)["loss"]["last"] == 0.5
        [label] = s.live_labels("s")
        assert (label.choice, label.swapped) == ("b", True)
        # columns added after m001 exist, with their defaults filled in for old rows
        assert run.notes == ""
        assert s.get_label_task(1).meta == {}
        # and the upgraded schema is exactly what a blank database gets
        with Store(tmp_path / "blank.db") as blank:
            assert schema(s.db) == schema(blank.db)
        # the old rows keep working with new writes
        s.update_run(1, notes="first run")
        assert s.get_run(1).notes == "first run"


def test_file_database_uses_wal_busy_timeout_and_foreign_keys(file_store, db_path):
    db = file_store.db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL outside label writes
    assert Path(str(db_path) + "-wal").exists()


def test_memory_store_is_one_shared_connection_and_file_store_one_per_thread(store, file_store):
    import threading

    seen = {}

    def grab(name):
        seen[name] = (store.db, file_store.db)

    t = threading.Thread(target=grab, args=("other",))
    t.start()
    t.join()
    grab("main")
    assert seen["main"][0] is seen["other"][0]
    assert seen["main"][1] is not seen["other"][1]
    assert file_store.db is file_store.db  # stable within a thread


def test_database_from_a_newer_tuneloop_is_refused(db_path):
    with Store(db_path) as s:
        s.db.table(migrations.migrations_table).insert(
            {"migration_set": MIGRATION_SET, "name": "m999_from_the_future", "applied_at": "x"}
        )
    with pytest.raises(StoreError, match="newer tuneloop"):
        Store(db_path)


def test_unopenable_path_gives_a_clear_error(tmp_path):
    not_a_db = tmp_path / "junk.db"
    not_a_db.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="Cannot open the tuneloop database"):
        Store(not_a_db)


def test_two_processes_migrating_a_fresh_database_at_once(tmp_path):
    path = tmp_path / "race.db"
    code = "import sys; from store import Store; Store(sys.argv[1]).close()"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=REPO, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=60)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    with Store(path) as s:
        assert s.applied_migrations() == MIGRATION_NAMES


def test_store_does_not_import_textual_or_torch():
    code = (
        "import sys, store; s = store.Store(); s.counts(); "
        "bad = [m for m in ('textual', 'torch', 'transformers') if m in sys.modules]; "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
