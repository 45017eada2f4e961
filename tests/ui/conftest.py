"""Fixtures for the Pilot tests: an in-memory store, a scripted engine, small data files."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import pytest
from rich.console import Console

from .fakes import FakeEngine, FakeProblem, FakeReport

GOOD_LINES = [
    f'{{"messages": [{{"role": "user", "content": "q{i}"}}, '
    f'{{"role": "assistant", "content": "a{i}"}}]}}'
    for i in range(1, 11)
]
BAD_LINES = [
    '{"messages": [{"role": "user", "content": "fine"}, {"role": "assistant", "content": "ok"}]}',
    '{"messages": [{"role": "user", "content": "fine"}, {"role": "assistant", "content": "ok"}]}',
    '{"messages": [{"role": "user", "content": "no answer"}]}   ',
    '{"messages": [{"role": "user", "content": "fine"}, {"role": "assistant", "content": "ok"}]}',
    '{"messages": [{"role": "user", "content": "fine"}, {"role": "assistant", "content": "ok"}]}',
    '{"messages": [{"role": "user", "content": "fine"}, {"role": "assistant", "content": "ok"}]}',
    '{"messages": [{"role": "robot", "content": "who?"}, {"role": "assistant", "content": "x"}]}',
    '{"messages": [{"role": "user", "content": "fine"}, {"role": "assistant", "content": ""}]}',
]

# Shaped like tuiapp.engine.data.compute_stats output; lengths 12 20 33 40 41 44 52 77 90 131.
STATS = {
    "rows": 10,
    "format": "messages",
    "kind": "sft",
    "tokenizer": "demo",
    "max_length": 1024,
    "tokens": {"min": 12, "mean": 42.5, "p50": 41, "p90": 90, "p99": 131, "max": 131, "total": 540},
    "histogram": {"edges": [12, 32, 52, 72, 92, 112, 132], "counts": [2, 4, 1, 2, 0, 1]},
    "truncated": {"count": 1, "share": 0.1},
    "duplicates": {"count": 3, "pairs": [[5, 2]]},
    "roles": {"user": {"messages": 10, "tokens": 50}, "assistant": {"messages": 10, "tokens": 77}},
}
EXAMPLES = ["<|user|>\nq1\n<|assistant|>\na1", "<|user|>\nq2\n<|assistant|>\na2"]


@pytest.fixture
def store():
    from store import Store

    s = Store(":memory:")
    yield s
    close = getattr(s, "close", None)
    if close:
        close()


@pytest.fixture
def data_files(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "data"
    folder.mkdir()
    good = folder / "good.jsonl"
    good.write_text("\n".join(GOOD_LINES) + "\n", encoding="utf-8")
    bad = folder / "bad.jsonl"
    bad.write_text("\n".join(BAD_LINES) + "\n", encoding="utf-8")
    return {"good": good, "bad": bad}


def reports_for(files: dict[str, Path]) -> dict[str, FakeReport]:
    good, bad = files["good"], files["bad"]
    return {
        good.name: FakeReport(
            str(good),
            "messages",
            "sft",
            10,
            records=[{"messages": []}] * 10,
            line_numbers=list(range(1, 11)),
        ),
        bad.name: FakeReport(
            str(bad),
            "messages",
            "sft",
            8,
            problems=[
                FakeProblem(str(bad), 3, "messages", "the conversation has no assistant turn"),
                FakeProblem(
                    str(bad),
                    7,
                    "messages[0].role",
                    'unknown role "robot"; use system, user or assistant [sic]',
                ),
                FakeProblem(str(bad), 8, "messages[1].content", "empty answer", severity="warning"),
            ],
            records=[{"messages": []}] * 5,
        ),
    }


@pytest.fixture
def engine(data_files) -> FakeEngine:
    return FakeEngine(
        files=[data_files["good"], data_files["bad"]],
        reports=reports_for(data_files),
        stats=STATS,
        examples=EXAMPLES,
    )


@pytest.fixture
def make_app(store, engine, tmp_path):
    from tuiapp.app import Settings, TuiApp

    def make(**overrides):
        return TuiApp(
            store=overrides.get("store", store),
            engine=overrides.get("engine", engine),
            settings=Settings(home=tmp_path / "home", refresh_interval=0),
        )

    (tmp_path / "home").mkdir(exist_ok=True)
    return make


async def wait_until(pilot, predicate, timeout: float = 5.0) -> None:
    """Let workers finish and messages land until `predicate()` holds (fails after timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        await pilot.pause()
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        await asyncio.sleep(0.02)


def text_of(widget) -> str:
    """What a Static shows, as plain text (rich renderables rendered at width 120)."""
    content = getattr(widget, "content", None)
    if content is None:
        content = widget.render()
    if isinstance(content, str):
        return content
    console = Console(width=120, file=io.StringIO(), record=True, color_system=None)
    console.print(content)
    return console.export_text()


@pytest.fixture
def anyio_backend():
    """Pilot tests run on asyncio through anyio's pytest plugin (no pytest-asyncio needed)."""
    return "asyncio"
