"""Label sources (m004): a judge's label sits beside a person's and never replaces or blocks it;
readers default to the person's; a database from before m004 upgrades with its labels as human."""

from __future__ import annotations

import sqlite3

import pytest
from sqlite_utils import Database

from store import DuplicateLabel, Store
from store.migrations import MIGRATION_NAMES, migrations


def test_judge_label_sits_beside_a_persons_label(store, make_task):
    task = make_task()
    human = store.add_label(task.id, "a")
    judge = store.add_label(task.id, "b", source="judge", principle="2",
                            rationale="B refuses the passphrase request",
                            detail={"orders": [{"shown": "ab", "verdict": "B"}]})
    assert store.live_label(task.id) == human  # readers default to the person's label
    assert store.live_label(task.id, source="judge") == judge
    assert (judge.source, judge.principle, judge.detail["orders"][0]["verdict"]) == (
        "judge", "2", "B")
    assert store.live_labels() == [human]
    assert store.live_labels(source=None) == [human, judge]
    # one live label per source: a second judge verdict is refused, a person's label is not hit
    with pytest.raises(DuplicateLabel):
        store.add_label(task.id, "tie", source="judge")
    with pytest.raises(ValueError, match="Unknown label source"):
        store.live_labels(source="robot")


def test_undo_and_open_tasks_follow_the_persons_labels(store, make_task):
    t1, t2 = make_task(), make_task()
    store.add_label(t1.id, "a", source="judge")
    # the judge having labelled t1 keeps it open for the person
    assert store.list_label_tasks(unlabelled_only=True) == [t1, t2]
    assert store.list_label_tasks(unlabelled_only=True, source="judge") == [t2]
    human = store.add_label(t1.id, "b")
    judged_later = store.add_label(t2.id, "a", source="judge")
    undo = store.undo_label()  # the newest *human* label, not the judge's newer one
    assert undo.undoes_event_id == human.id and undo.source == "human"
    assert store.undo_label() is None
    undo = store.undo_label(source="judge")
    assert undo.undoes_event_id == judged_later.id and undo.source == "judge"
    assert [e.task_id for e in store.live_labels(source="judge")] == [t1.id]
    assert store.counts()["labels"] == 0  # the header counts a person's labels


def test_upgrade_from_the_schema_before_label_sources(tmp_path):
    path = tmp_path / "old.db"
    db = Database(sqlite3.connect(path, isolation_level=None))
    migrations.apply(db, stop_before="m004_label_sources")
    assert "source" not in db.table("label_events").columns_dict
    db.execute("INSERT INTO label_tasks (id, task_set, prompt, candidates, created_at) VALUES "
               "(1, 's', 'p', '[{\"model_ref\": \"a\", \"output\": \"x\"}, "
               "{\"model_ref\": \"b\", \"output\": \"y\"}]', 'then')")
    db.execute("INSERT INTO label_events (task_id, kind, choice, swapped, created_at) "
               "VALUES (1, 'label', 'a', 0, 'then')")
    db.close()
    with Store(path) as s:
        assert s.applied_migrations() == MIGRATION_NAMES
        [old] = s.live_labels("s")
        assert (old.choice, old.source, old.principle, old.detail) == ("a", "human", None, {})
        judge = s.add_label(1, "b", source="judge", principle="1", rationale="r")
        assert s.live_labels("s", source=None) == [old, judge]
