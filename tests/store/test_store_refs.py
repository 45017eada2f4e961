"""One spelling per model REF in stored label tasks (issue 23: `1` and `run:1` were two models)."""

from __future__ import annotations

import json
import sqlite3

from sqlite_utils import Database

from store import Store, canonical_ref
from store.migrations import MIGRATION_NAMES, migrations


def test_canonical_ref_spellings():
    assert canonical_ref("1") == canonical_ref("run:1") == canonical_ref(" RUN : 01 ") == "run:1"
    assert canonical_ref("model:03") == "model:3" and canonical_ref("Base") == "base"
    # anything else (folders, GGUF files, names) is kept as given, stripped
    assert canonical_ref(" /models/x.gguf ") == "/models/x.gguf"
    assert canonical_ref("sft:1") == "sft:1" and canonical_ref("demo") == "demo"


def test_label_tasks_are_stored_with_canonical_refs(store):
    task = store.create_label_task(
        "p", [{"model_ref": "base", "output": "x"}, {"model_ref": "1", "output": "y"}],
        task_set="s", meta={"pair": ["base", "1"], "show_swapped": True})
    assert [c["model_ref"] for c in task.candidates] == ["base", "run:1"]
    assert task.meta == {"pair": ["base", "run:1"], "show_swapped": True}
    assert store.get_label_task(task.id).candidates[1] == {"model_ref": "run:1", "output": "y"}


def test_migration_rewrites_refs_already_stored(tmp_path):
    path = tmp_path / "old.db"
    db = Database(sqlite3.connect(path, isolation_level=None))
    migrations.apply(db, stop_before="m003_canonical_label_refs")
    now = "2024-01-01T00:00:00+00:00"
    rows = [
        (1, [{"model_ref": "base", "output": "x"}, {"model_ref": "1", "output": "y"}],
         {"pair": ["base", "1"]}),
        (2, [{"model_ref": "run:1", "output": "x"}, {"model_ref": "base", "output": "y"}], {}),
        (3, [{"model_ref": "/m/a.gguf", "output": "x"}, {"model_ref": "Model:2", "output": "y"}],
         {"k": 1}),
    ]
    for id_, cands, meta in rows:
        db.execute("INSERT INTO label_tasks (id, task_set, prompt, candidates, meta, created_at)"
                   " VALUES (?, 's', 'p', ?, ?, ?)", [id_, json.dumps(cands), json.dumps(meta), now])
    db.execute("INSERT INTO label_events (task_id, kind, choice, swapped, created_at)"
               " VALUES (1, 'label', 'b', 0, ?)", [now])
    db.execute("INSERT INTO label_events (task_id, kind, choice, swapped, created_at)"
               " VALUES (2, 'label', 'a', 1, ?)", [now])
    db.close()
    with Store(path) as s:
        assert s.applied_migrations() == MIGRATION_NAMES
        refs = {t.id: [c["model_ref"] for c in t.candidates] for t in s.list_label_tasks()}
        assert refs == {1: ["base", "run:1"], 2: ["run:1", "base"], 3: ["/m/a.gguf", "model:2"]}
        assert s.get_label_task(1).meta == {"pair": ["base", "run:1"]}
        assert s.get_label_task(3).meta == {"k": 1}
        assert [e.choice for e in s.live_labels("s")] == ["b", "a"]  # labels untouched
        from tuiapp.engine.label import tasks as labels

        (row,) = labels.stats(s, "s", n_boot=10)["win_rates"]["pairs"]
        assert (row["a"], row["b"], row["wins"], row["losses"]) == ("base", "run:1", 0, 2)
