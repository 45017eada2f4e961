"""Label latency: keypress → label committed (synchronous=FULL) → next pair drawn.

    .venv/bin/python bench/label_latency.py [--pairs 1000] [--db PATH]

Builds a queue of synthetic pairs in a temporary SQLite file (a real file, so every label pays
its fsync), opens the real Label screen headless, presses a label key per pair (sent through the
headless driver, as a terminal's would be) and times each key until the frame showing the next
pair is painted: the label committed (WAL, synchronous=FULL), the next pair's widgets updated
(`LabelScreen.drawn_at`), then the next frame composed and turned into terminal bytes (which a
headless app skips; `watch_paints` does it). Prints p50/p90/p99/max of both stops, the load
average and, last, `p99_ms X` of the painted one (the goal is ≤ 50). A baseline line times the
bare store write alone in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_queue(db: Path, n: int) -> None:
    from store import Store

    store = Store(db)
    rng = random.Random(0)
    words = "the model answers with a short clear sentence about towns rivers and people".split()
    for i in range(n):
        cands = [{"model_ref": ref, "output": " ".join(rng.choices(words, k=rng.randint(20, 80)))}
                 for ref in ("base", "run:1")]
        store.create_label_task(f"synthetic question {i}: " + " ".join(rng.choices(words, k=12)),
                                cands, task_set="bench")
    store.close()


# How often the bench looks whether the pair is drawn / painted. The times themselves are taken
# where they happen (the screen's `drawn_at`, the paint hook), so this only decides when the next
# key is sent. Not 0: a loop spinning on `sleep(0)` holds the GIL that the app's label writer
# thread needs after each SQLite call (up to the 5 ms switch interval each time) — an idle
# terminal app waits in select() instead.
POLL_S = 0.0005


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def watch_paints(app) -> list[float]:
    """Times of frames painted to the (headless) terminal. Headless Textual composes each frame
    but skips turning it into terminal bytes; this does that step too, as a real driver would,
    so a frame counts only once its bytes exist."""
    painted: list[float] = []
    display = app._display

    def display_and_time(screen, renderable) -> None:
        display(screen, renderable)
        if renderable is not None and screen is app.screen:
            renderable.render_segments(app.console)
            painted.append(time.perf_counter())

    app._display = display_and_time
    return painted


async def run(db: Path, home: Path, n: int) -> tuple[list[float], list[float]]:
    from store import Store
    from tuiapp.app import Settings, TuiApp
    from tuiapp.engine.facade import Engine

    store = Store(db)
    app = TuiApp(store=store, engine=Engine(store=store, home=home),
                 settings=Settings(home=home, refresh_interval=0, poll_interval=0))
    keys = ["1", "2", "t", "b", "left", "right"]
    drawn: list[float] = []  # key → widgets hold the next pair (after the commit)
    painted: list[float] = []  # key → the frame showing it is painted
    async with app.run_test(size=(120, 36)) as pilot:
        paints = watch_paints(app)
        await pilot.press("f6")
        screen = app.screen
        while not screen.loaded:
            await pilot.pause(0.01)
        await pilot.pause(0.2)
        for i in range(n):
            before = screen.drawn
            t0 = time.perf_counter()
            # the key enters where a terminal's would: through the driver's message queue
            send_key(app, keys[i % len(keys)])
            while screen.drawn == before:
                await asyncio.sleep(POLL_S)
            drawn.append((screen.drawn_at - t0) * 1000)
            while not paints or paints[-1] < screen.drawn_at:
                await asyncio.sleep(POLL_S)
            painted.append((paints[-1] - t0) * 1000)
            await asyncio.sleep(0.002)  # a human never types 1000 labels back to back
    store.close()
    return drawn, painted


def send_key(app, key: str) -> None:
    from textual import events

    char = {"left": None, "right": None}.get(key, key)
    event = events.Key(key, char)
    event.set_sender(app)
    app._driver.send_message(event)


def store_baseline(db: Path, n: int) -> list[float]:
    """The bare durable write, for comparison: what the screen adds is the rest."""
    from store import Store

    store = Store(db)
    tasks = store.list_label_tasks("bench", unlabelled_only=True)[:n]
    times = []
    for task in tasks:
        t0 = time.perf_counter()
        store.add_label(task.id, "a")
        times.append((time.perf_counter() - t0) * 1000)
    store.close()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--db", help="SQLite file to use (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tuneloop-bench-") as tmp:
        db = Path(args.db) if args.db else Path(tmp) / "tuneloop.db"
        home = Path(tmp) / "home"
        home.mkdir()
        make_queue(db, args.pairs + 200)
        drawn, painted = asyncio.run(run(db, home, args.pairs))
        base = store_baseline(db, 200)
    print(f"load average {os.getloadavg()[0]:.2f}")
    print(f"store.add_label alone (n=200): p50 {statistics.median(base):.2f} ms, "
          f"p99 {pct(base, 99):.2f} ms")
    for what, times in (("widgets updated", drawn), ("frame painted", painted)):
        print(f"label keypress → committed → next pair {what} (n={len(times)}): "
              + ", ".join(f"p{q} {pct(times, q):.2f} ms" for q in (50, 90, 99))
              + f", max {max(times):.2f} ms")
    print(f"p99_ms {pct(painted, 99):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
