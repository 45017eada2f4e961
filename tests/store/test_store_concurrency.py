"""One file, many writers: threads with their own connections, and a second process."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from store import Store, StoreError

REPO = Path(__file__).resolve().parents[2]


def test_two_threads_write_concurrently_each_on_its_own_connection(file_store):
    run = file_store.create_run("sft", {})
    tasks = [file_store.create_label_task(f"p{i}", _cands()).id for i in range(40)]
    steps = 150
    barrier = threading.Barrier(2)
    connections: dict[str, int] = {}
    errors: list[BaseException] = []

    def log_metrics():
        try:
            connections["metrics"] = id(file_store.db.conn)
            barrier.wait()
            for step in range(steps):
                file_store.log_metrics(run.id, step, {"loss": 1.0 / (step + 1), "lr": 1e-4})
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    def label():
        try:
            connections["labels"] = id(file_store.db.conn)
            barrier.wait()
            for task_id in tasks:
                file_store.add_label(task_id, "a")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=log_metrics), threading.Thread(target=label)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert connections["metrics"] != connections["labels"] != id(file_store.db.conn)
    summary = file_store.metric_summary(run.id)
    assert summary["loss"]["count"] == steps and summary["lr"]["count"] == steps
    assert summary["loss"]["last_step"] == steps - 1
    assert len(file_store.live_labels()) == len(tasks)


def test_threads_share_a_memory_store_safely(store):
    run = store.create_run("sft", {})
    errors: list[BaseException] = []

    def work(offset):
        try:
            for step in range(100):
                store.log_metrics(run.id, offset + step, {"loss": 1.0})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i * 1000,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert store.metric_summary(run.id)["loss"]["count"] == 300


READER = """
import json, sys
from store import Store
with Store(sys.argv[1]) as s:
    print(json.dumps([e.to_dict() for e in s.live_labels(sys.argv[2])]))
"""


def test_second_process_reads_a_committed_label(file_store, db_path):
    task = file_store.create_label_task("Say hi", _cands(), task_set="set1")
    event = file_store.add_label(task.id, "b", swapped=True, elapsed_ms=900)
    # The writer's connection stays open (as in the TUI): the label must already be committed.
    out = subprocess.run(
        [sys.executable, "-c", READER, str(db_path), "set1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    [seen] = json.loads(out.stdout)
    assert seen == event.to_dict()
    assert (seen["choice"], seen["swapped"], seen["elapsed_ms"]) == ("b", True, 900)

    # and an undo made here is seen there too
    file_store.undo_label()
    out = subprocess.run(
        [sys.executable, "-c", READER, str(db_path), "set1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(out.stdout) == []


def test_second_process_writes_while_first_holds_its_connection(file_store, db_path):
    run = file_store.create_run("sft", {}, status="running")
    child = (
        "import sys\nfrom store import Store\n"
        "with Store(sys.argv[1]) as s:\n"
        "    for step in range(20):\n"
        "        s.log_metrics(int(sys.argv[2]), step, {'loss': 1.0 / (step + 1)})\n"
        "    s.update_run(int(sys.argv[2]), status='completed')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", child, str(db_path), str(run.id)], cwd=REPO)
    for i in range(20):  # the parent keeps writing meanwhile
        file_store.set_meta(f"k{i}", i)
    assert proc.wait(timeout=60) == 0
    assert file_store.get_run(run.id).status == "completed"
    assert file_store.metric_summary(run.id)["loss"]["count"] == 20


def test_closed_store_reopens_connections_on_next_use(db_path):
    s = Store(db_path)
    s.set_meta("x", 1)
    s.close()
    assert s.get_meta("x") == 1  # a fresh connection for this thread
    s.close()


def _cands():
    return [{"model_ref": "base", "output": "hi"}, {"model_ref": "sft:1", "output": "hello"}]


def test_closed_memory_store_refuses_use_instead_of_starting_empty():
    s = Store()
    s.set_meta("x", 1)
    s.close()
    with pytest.raises(StoreError, match="in-memory store was closed"):
        s.get_meta("x")


def test_a_writer_blocked_past_busy_timeout_gets_a_clear_error(file_store, db_path, monkeypatch):
    import sqlite3

    import store.db as dbmod

    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # hold the write lock, as a stuck process would
    try:
        monkeypatch.setattr(dbmod, "BUSY_TIMEOUT_MS", 100)
        impatient = Store(db_path)  # migrations are done, so opening needs no write lock
        with pytest.raises(StoreError, match="stayed busy for 0.1s"):
            impatient.set_meta("k", 1)
        assert impatient.get_meta("k") is None  # readers are never blocked under WAL
        impatient.close()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    file_store.set_meta("k", 2)
    assert file_store.get_meta("k") == 2
