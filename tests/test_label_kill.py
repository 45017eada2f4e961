"""Durability: the real app, labelling in a child process, is SIGKILLed at random moments; every
label it showed as saved must be in the store afterwards, and no task may hold two live labels.

Each trial forks a child that opens the Label screen of the real app on a real SQLite file,
presses random label/undo keys and writes "SAVED task event" (or "UNDONE event") to its pipe only
once the screen shows it — then the parent kills it. The same file runs the driver alone:
`python tests/test_label_kill.py DB HOME SEED`.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import sys
import time
from pathlib import Path

TRIALS = 50  # kills in all, STREAMS at a time
STREAMS = 2
TASKS = 400
REPO = Path(__file__).resolve().parents[1]
KEYS = ["1", "2", "left", "right", "t", "b", "s", "1", "2", "u"]


async def _drive(db: str, home: str, seed: int) -> None:
    from textual import events

    from store import Store
    from tuiapp.app import Settings, TuiApp
    from tuiapp.engine.facade import Engine

    out = os.dup(1)
    say = lambda line: os.write(out, (line + "\n").encode())  # noqa: E731
    store = Store(db)
    app = TuiApp(store=store, engine=Engine(store=store, home=home),
                 settings=Settings(home=Path(home), refresh_interval=0, poll_interval=0))
    rng = random.Random(seed)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("f6")
        screen = app.screen
        while not screen.loaded:
            await pilot.pause(0.01)
        say("READY")
        saved, undone = screen.last_saved, screen.last_undone
        while True:
            key = "u" if screen.current is None and rng.random() < 0.5 else rng.choice(KEYS)
            event = events.Key(key, key if len(key) == 1 else None)
            event.set_sender(app)
            app._driver.send_message(event)  # as a terminal's key arrives
            await asyncio.sleep(0.003)
            while screen.saving or screen.pending:
                await asyncio.sleep(0.001)
            if screen.last_saved != saved:
                saved = screen.last_saved
                say(f"SAVED {saved[0]} {saved[1]}")
            if screen.last_undone != undone:
                undone = screen.last_undone
                say(f"UNDONE {undone}")


def _make_tasks(db: Path) -> None:
    from store import Store

    store = Store(db)
    for i in range(TASKS):
        cands = [{"model_ref": "base", "output": f"base {i}"},
                 {"model_ref": "run:1", "output": f"sft {i}"}]
        store.create_label_task(f"prompt {i}", cands, task_set="kill")
    store.close()


def _fork_driver(db: Path, home: Path, seed: int):
    """A child labelling until it is killed. It is forked from this process after the app's
    modules are imported (a fresh interpreter would spend seconds importing); it is a separate
    process with its own SQLite connections, so SIGKILL means what it does for a TUI."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: label until killed, never return into pytest
        try:
            os.close(read_fd)
            os.dup2(write_fd, 1)
            asyncio.run(_drive(str(db), str(home), seed))
        finally:
            os._exit(1)
    os.close(write_fd)
    return pid, os.fdopen(read_fd, "rb")


def _trials(streams: list[tuple[Path, Path]], seed: int, rng: random.Random) -> list[str]:
    """One child per stream (own DB) at once — two cores, half the wall time — each killed
    at its own random moment after it is ready."""
    children = [_fork_driver(db, home, seed * len(streams) + k)
                for k, (db, home) in enumerate(streams)]
    lines: list[str] = []
    for _pid, pipe in children:
        first = pipe.readline()
        assert first == b"READY\n", f"driver did not start: {first!r}"
    kills = sorted((rng.uniform(0.0, 0.6), k) for k in range(len(children)))
    start = time.monotonic()
    for at, k in kills:  # the kill lands anywhere: mid-save, mid-draw, idle
        time.sleep(max(0.0, start + at - time.monotonic()))
        os.kill(children[k][0], signal.SIGKILL)
    for k, (pid, pipe) in enumerate(children):
        with pipe:
            lines += [f"{k} {line}" for line in pipe.read().decode().splitlines()]
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    return lines


def test_sigkill_at_random_moments_loses_no_saved_label(tmp_path):
    import numpy  # noqa: F401

    import tuiapp.app  # noqa: F401  (imported once here, before the children are forked)
    import tuiapp.engine.label.tasks
    import tuiapp.engine.label.winrate
    import tuiapp.screens.label  # noqa: F401

    streams = []
    for k in range(STREAMS):
        db, home = tmp_path / f"tuneloop-{k}.db", tmp_path / f"home-{k}"
        home.mkdir()
        _make_tasks(db)
        streams.append((db, home))
    rng = random.Random(2024)
    reported: list[list[tuple[int, int]]] = [[] for _ in streams]
    undone_reported: list[set[int]] = [set() for _ in streams]
    for round_ in range(TRIALS // STREAMS):
        for line in _trials(streams, round_, rng):
            k, kind, *nums = line.split()
            if kind == "SAVED":
                reported[int(k)].append((int(nums[0]), int(nums[1])))
            elif kind == "UNDONE":
                undone_reported[int(k)].add(int(nums[0]))
    assert sum(map(len, reported)) > TRIALS  # kills landed while labelling, not at start-up
    for (db, _), saved, undos in zip(streams, reported, undone_reported, strict=True):
        _check(db, saved, undos)


def _check(db: Path, reported: list[tuple[int, int]], undone_reported: set[int]) -> None:
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    events = {r[0]: r[1:] for r in con.execute(
        "SELECT id, task_id, kind, undoes_event_id FROM label_events")}
    undone = {u for _, kind, u in events.values() if kind == "undo"}
    for task_id, event_id in reported:
        assert event_id in events, f"label {event_id} of task {task_id} was shown saved, then lost"
        assert events[event_id][:2] == (task_id, "label")
        # not live only if an undo for it is committed (the user pressed u)
    assert undone_reported <= undone
    per_task = con.execute(
        "SELECT task_id, COUNT(*) FROM label_events e WHERE kind = 'label' AND NOT EXISTS "
        "(SELECT 1 FROM label_events u WHERE u.undoes_event_id = e.id) GROUP BY task_id "
        "HAVING COUNT(*) > 1").fetchall()
    assert per_task == []
    assert all(u is None or events.get(u, (None, "label"))[1] == "label" for u in undone)
    con.close()


if __name__ == "__main__":
    asyncio.run(_drive(sys.argv[1], sys.argv[2], int(sys.argv[3])))
