"""Label screen and the AI judge: its labels keep pairs open for the person, the side panel shows
you-vs-judge agreement and flips, and `d` reviews the disagreements by keyboard (a key replaces
the person's earlier label; the judge's stays)."""

from __future__ import annotations

import pytest

from .conftest import text_of, wait_until
from .fakes import FakeLabelEngine

pytestmark = pytest.mark.anyio


def seed(store):
    tasks = [store.create_label_task(f"prompt {i}", [
        {"model_ref": "base", "output": f"base answer {i}"},
        {"model_ref": "run:3", "output": f"sft answer {i}"}], task_set="demo",
        meta={"show_swapped": False}) for i in range(4)]
    for task, mine, judge in zip(tasks[:3], "aab", "aba", strict=True):
        store.add_label(task.id, mine)
        store.add_label(task.id, judge, source="judge", principle="2", rationale=f"{judge} fits",
                        detail={"judge": "base", "consistent": judge != "b"})
    return tasks


async def test_agreement_panel_and_reviewing_disagreements(make_app, store):
    tasks = seed(store)
    app = make_app(engine=FakeLabelEngine())
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("f6")
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded and bool(screen.facts))
        assert screen.current.task.id == tasks[3].id  # the judge's labels leave pairs open
        panel = text_of(screen.query_one("#label-agreement"))
        assert "You vs judge 1/3 agree (33%)" in panel and "2 to review (d)" in panel
        assert "flipped with the sides on 1/3" in panel

        await pilot.press("d")
        await wait_until(pilot, lambda: screen.reviewing and screen.current.task.id == tasks[1].id)
        prompt = text_of(screen.query_one("#label-prompt"))
        assert "judge: B better" in prompt and "(it flipped with the sides)" in prompt
        assert "you: A" in prompt
        before = screen.drawn
        await pilot.press("2")  # the person now agrees with the judge on task 1
        await wait_until(pilot, lambda: screen.drawn > before and not screen.saving)
        assert store.live_label(tasks[1].id).choice == "b"
        assert [e.kind for e in store.label_events(tasks[1].id) if e.source == "human"] == [
            "label", "undo", "label"]  # the earlier label is undone in the log, not erased
        assert store.live_label(tasks[1].id, source="judge").choice == "b"  # untouched
        assert screen.current.task.id == tasks[2].id

        await pilot.press("d")  # back to the unlabelled pairs
        await wait_until(pilot, lambda: not screen.reviewing and screen.current is not None
                         and screen.current.task.id == tasks[3].id)
        await wait_until(pilot, lambda: "2/3 agree" in text_of(
            screen.query_one("#label-agreement")), timeout=10)


async def test_review_with_no_judge_labels_says_so(make_app, store):
    store.create_label_task("p", [{"model_ref": "a", "output": "x"},
                                  {"model_ref": "b", "output": "y"}], task_set="demo")
    app = make_app(engine=FakeLabelEngine())
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("f6")
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded and bool(screen.facts))
        await pilot.press("d")
        await wait_until(pilot, lambda: "No disagreements" in text_of(
            screen.query_one("#label-status")))
        assert not screen.reviewing
