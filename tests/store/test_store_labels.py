"""Label tasks and the append-only event log: duplicates, undo chains, durability."""

from __future__ import annotations

import pytest

from store import DuplicateLabel, LabelEvent, LabelTask, NotFound


def test_label_task_round_trip(store):
    gen = store.add_generation("sft:1", "Say hi", "hello!")
    cands = [
        {"model_ref": "base", "output": "hi"},
        {"model_ref": "sft:1", "output": "hello!", "generation_id": gen.id},
    ]
    task = store.create_label_task(
        "Say hi", cands, task_set="set1", system="Be nice.", source="compare", meta={"prompt_id": 4}
    )
    assert isinstance(task, LabelTask)
    assert task.candidates == cands
    assert (task.task_set, task.system, task.source, task.meta) == (
        "set1",
        "Be nice.",
        "compare",
        {"prompt_id": 4},
    )
    assert store.get_label_task(task.id) == task
    assert store.task_sets() == ["set1"]


def test_label_task_candidates_are_validated(store):
    with pytest.raises(ValueError, match="at least two candidates"):
        store.create_label_task("p", [{"model_ref": "a", "output": "x"}])
    with pytest.raises(ValueError, match="candidate 1 needs a text output"):
        store.create_label_task("p", [{"model_ref": "a", "output": "x"}, {"model_ref": "b"}])
    with pytest.raises(ValueError, match="no generation with id 9"):
        store.create_label_task(
            "p",
            [
                {"model_ref": "a", "output": "x"},
                {"model_ref": "b", "output": "y", "generation_id": 9},
            ],
        )
    assert store.list_label_tasks() == []


def test_add_label_round_trip_and_choice_validation(store, make_task):
    task = make_task()
    event = store.add_label(task.id, "both_bad", swapped=True, edited="Hi there!", elapsed_ms=1530)
    assert isinstance(event, LabelEvent)
    assert (event.task_id, event.kind, event.choice, event.swapped) == (
        task.id,
        "label",
        "both_bad",
        True,
    )
    assert (event.edited, event.elapsed_ms, event.undoes_event_id) == ("Hi there!", 1530, None)
    assert store.get_label_event(event.id) == event
    assert store.live_label(task.id) == event
    with pytest.raises(ValueError, match="Unknown label choice 'c'.*a, b, tie, both_bad, skip"):
        store.add_label(make_task().id, "c")
    with pytest.raises(NotFound, match="No label task with id 404"):
        store.add_label(404, "a")


def test_every_choice_is_accepted(store, make_task):
    for choice in ("a", "b", "tie", "both_bad", "skip"):
        assert store.add_label(make_task().id, choice).choice == choice


def test_second_live_label_is_refused_until_undone(store, make_task):
    task = make_task()
    first = store.add_label(task.id, "a")
    with pytest.raises(DuplicateLabel) as info:
        store.add_label(task.id, "b")
    assert info.value.event_id == first.id and "undo" in str(info.value)
    undo = store.undo_label()
    assert (undo.kind, undo.undoes_event_id, undo.task_id, undo.choice) == (
        "undo",
        first.id,
        task.id,
        None,
    )
    relabel = store.add_label(task.id, "b")
    assert store.live_labels() == [relabel]
    assert [e.kind for e in store.label_events(task.id)] == ["label", "undo", "label"]


def test_undo_chain_walks_back_through_labels(store, make_task):
    tasks = [make_task(prompt=f"p{i}") for i in range(3)]
    events = [store.add_label(t.id, c) for t, c in zip(tasks, ["a", "b", "tie"], strict=True)]
    assert store.undo_label().undoes_event_id == events[2].id
    assert store.live_labels() == events[:2]
    assert store.undo_label().undoes_event_id == events[1].id
    assert store.undo_label().undoes_event_id == events[0].id
    assert store.live_labels() == []
    assert store.undo_label() is None  # nothing left to undo
    # the log kept everything: three labels, three undos
    assert [e.kind for e in store.label_events()] == ["label"] * 3 + ["undo"] * 3
    assert store.list_label_tasks(unlabelled_only=True) == tasks


def test_undo_after_relabel_undoes_the_relabel(store, make_task):
    t1, t2 = make_task(), make_task()
    e1 = store.add_label(t1.id, "a")
    e2 = store.add_label(t2.id, "a")
    store.undo_label()  # undoes e2
    e2b = store.add_label(t2.id, "b")
    assert store.undo_label().undoes_event_id == e2b.id
    assert store.undo_label().undoes_event_id == e1.id
    assert store.undo_label() is None
    assert e2.id < e2b.id


def test_undo_a_specific_event(store, make_task):
    t1, t2 = make_task(), make_task()
    e1 = store.add_label(t1.id, "a")
    e2 = store.add_label(t2.id, "b")
    undo = store.undo_label(e1.id)
    assert undo.undoes_event_id == e1.id
    assert store.live_labels() == [e2]
    assert store.undo_label(e1.id) is None  # already undone
    with pytest.raises(ValueError, match="only labels can be undone"):
        store.undo_label(undo.id)
    with pytest.raises(NotFound):
        store.undo_label(999)


def test_undo_and_live_labels_scoped_to_a_task_set(store, make_task):
    in_a = make_task(task_set="A")
    in_b = make_task(task_set="B")
    ea = store.add_label(in_a.id, "a")
    eb = store.add_label(in_b.id, "b")
    assert store.live_labels("A") == [ea]
    assert store.undo_label(task_set="A").undoes_event_id == ea.id
    assert store.undo_label(task_set="A") is None  # B's newer label is not touched
    assert store.live_labels() == [eb]
    assert store.list_label_tasks("A", unlabelled_only=True) == [in_a]
    assert store.list_label_tasks("B", unlabelled_only=True) == []
    assert store.list_label_tasks("B") == [in_b]
    assert store.task_sets() == ["A", "B"]


def test_label_writes_commit_with_synchronous_full(file_store, make_task):
    task = make_task(s=file_store)
    conn = file_store.db.conn
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        event = file_store.add_label(task.id, "a")
        file_store.undo_label()
        file_store.set_meta("after", 1)
    finally:
        conn.set_trace_callback(None)
    upper = [s.strip().upper() for s in statements]

    def index(prefix, start=0):
        return next(i for i in range(start, len(upper)) if upper[i].startswith(prefix))

    for start in (0, index("PRAGMA SYNCHRONOUS = NORMAL") + 1):
        full = index("PRAGMA SYNCHRONOUS = FULL", start)
        begin = index("BEGIN", full)
        insert = index("INSERT INTO [LABEL_EVENTS]", begin)
        commit = index("COMMIT", insert)
        back = index("PRAGMA SYNCHRONOUS = NORMAL", commit)
        assert full < begin < insert < commit < back
    # ordinary writes do not pay for FULL
    meta_begin = index("INSERT INTO META")
    last_full = max(i for i, s in enumerate(upper) if s.startswith("PRAGMA SYNCHRONOUS = FULL"))
    assert last_full < meta_begin
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    assert not conn.in_transaction  # committed before add_label returned
    assert file_store.live_labels() == []
    assert event.id == 1


def test_failed_label_write_restores_normal_sync_and_rolls_back(file_store, make_task):
    task = make_task(s=file_store)
    file_store.add_label(task.id, "a")
    with pytest.raises(DuplicateLabel):
        file_store.add_label(task.id, "b")
    conn = file_store.db.conn
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    assert not conn.in_transaction
    assert len(file_store.label_events()) == 1
