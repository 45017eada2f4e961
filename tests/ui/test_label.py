"""Label screen by keyboard: every key, undo chains, rewrites, queued keys, repeats with sides
swapped and the agreement meter, new tasks generated ahead — against a real in-memory store."""

from __future__ import annotations

import json

import pytest

from .conftest import text_of, wait_until
from .fakes import FakeLabelEngine

pytestmark = pytest.mark.anyio


def make_tasks(store, n, task_set="demo", swapped=lambda i: i % 2 == 1):
    out = []
    for i in range(n):
        cands = [{"model_ref": "base", "output": f"base answer {i}"},
                 {"model_ref": "run:3", "output": f"sft answer {i}"}]
        out.append(store.create_label_task(f"prompt {i}", cands, task_set=task_set,
                                           meta={"show_swapped": swapped(i)}))
    return out


@pytest.fixture
def label_app(make_app, tmp_path):
    def make(**kw):
        return make_app(engine=FakeLabelEngine(), **kw)

    return make


async def open_label(pilot, app):
    await pilot.press("f6")
    screen = app.screen
    await wait_until(pilot, lambda: screen.loaded and bool(screen.facts))
    return screen


def shown(screen) -> tuple[str, str]:
    return (text_of(screen.query_one("#label-text-a")).strip(),
            text_of(screen.query_one("#label-text-b")).strip())


async def press_and_wait(pilot, screen, *keys):
    for key in keys:
        before = screen.drawn
        await pilot.press(key)
        await wait_until(pilot, lambda b=before: screen.drawn > b and not screen.saving)


async def test_every_choice_key_is_stored_in_candidate_order(label_app, store):
    tasks = make_tasks(store, 8)
    app = label_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_label(pilot, app)
        assert screen.task_set == "demo"
        assert shown(screen) == ("base answer 0", "sft answer 0")  # task 0: not swapped
        await press_and_wait(pilot, screen, "1")
        assert shown(screen) == ("sft answer 1", "base answer 1")  # task 1: b shown as A
        status = text_of(screen.query_one("#label-status"))
        assert f"saved task {tasks[0].id}" in status and "A was base, B was run:3" in status
        # 1 on a swapped pair means candidate b; ← → are 1 and 2
        await press_and_wait(pilot, screen, "1", "left", "2", "right", "t", "b", "s")
        live = {e.task_id: e for e in store.live_labels("demo")}
        got = [(live[t.id].choice, live[t.id].swapped) for t in tasks]
        assert got == [("a", False), ("b", True), ("a", False), ("a", True), ("b", False),
                       ("tie", True), ("both_bad", False), ("skip", True)]
        assert all(e.elapsed_ms is not None for e in live.values())
        assert screen.current is None
        assert "Nothing to label" in text_of(screen.query_one("#label-prompt"))
        await wait_until(pilot, lambda: screen.facts.get("this set", "").startswith("8/8 "))
        assert screen.facts["this set"] == "8/8 pairs labelled · 0 to go"
        assert screen.facts["all sets"].startswith("8 live labels = 8 + 0 repeats + 0 in other")


async def test_undo_chain_walks_back_twelve_labels(label_app, store):
    tasks = make_tasks(store, 14)
    app = label_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_label(pilot, app)
        await press_and_wait(pilot, screen, *["2"] * 12)
        assert len(store.live_labels("demo")) == 12
        for k in range(11):
            await press_and_wait(pilot, screen, "u")
            # the undone pair is back on screen, the newest first
            assert screen.current.task.id == tasks[11 - k].id
        assert [e.task_id for e in store.live_labels("demo")] == [tasks[0].id]
        undos = [e for e in store.label_events() if e.kind == "undo"]
        assert len(undos) == 11 and "undid the label of task" in text_of(
            screen.query_one("#label-status"))
        # relabel the pair on screen, then the queue goes on in order
        await press_and_wait(pilot, screen, "t")
        assert store.live_label(tasks[1].id).choice == "tie"
        assert screen.current.task.id == tasks[2].id
        await press_and_wait(pilot, screen, "u", "u")  # back past the relabel, across sessions' order
        assert screen.current.task.id == tasks[0].id
        assert [e.task_id for e in store.live_labels("demo")] == []


async def test_undo_after_restart_uses_the_task_sets_newest_label(label_app, store):
    tasks = make_tasks(store, 3)
    store.add_label(tasks[0].id, "a")
    store.add_label(tasks[1].id, "b", swapped=True)
    app = label_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_label(pilot, app)
        assert screen.current.task.id == tasks[2].id
        await press_and_wait(pilot, screen, "u")
        assert screen.current.task.id == tasks[1].id and screen.current.swapped is True
        assert store.live_label(tasks[1].id) is None
        await pilot.press("u")
        await wait_until(pilot, lambda: store.live_label(tasks[0].id) is None)
        await pilot.press("u")
        await wait_until(pilot, lambda: "Nothing to undo" in text_of(
            screen.query_one("#label-status")))


async def test_keys_pressed_while_saving_are_queued_not_dropped(label_app, store):
    make_tasks(store, 6)
    app = label_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_label(pilot, app)
        await pilot.press("1", "2", "t", "u", "s")
        await wait_until(pilot, lambda: len(store.label_events()) == 5 and not screen.saving
                         and not screen.pending)
        assert [e.choice for e in store.live_labels("demo")] == ["a", "a", "skip"]


async def test_rewrite_becomes_the_chosen_answer(label_app, store):
    tasks = make_tasks(store, 3, swapped=lambda i: True)
    app = label_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_label(pilot, app)
        await pilot.press("e")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "EditAnswerScreen")
        editor = app.screen.query_one("#label-edit-text")
        assert editor.text == "sft answer 0"  # A shows candidate b here
        await pilot.press("ctrl+s")  # unchanged: refused in words
        assert "Unchanged" in text_of(app.screen.query_one("#label-edit-error"))
        editor.text = "a far better answer"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: store.live_label(tasks[0].id) is not None)
        label = store.live_label(tasks[0].id)
        assert (label.choice, label.edited, label.swapped) == ("b", "a far better answer", True)
        assert "rewrite beats A" in text_of(screen.query_one("#label-status"))
        # escape leaves the pair unlabelled
        await pilot.press("E")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "EditAnswerScreen")
        assert app.screen.query_one("#label-edit-text").text == "base answer 1"
        await pilot.press("escape")
        await pilot.pause()
        assert store.live_label(tasks[1].id) is None and screen.current.task.id == tasks[1].id


async def test_repeats_come_back_swapped_and_feed_the_agreement_meter(label_app, store):
    tasks = make_tasks(store, 4, swapped=lambda i: False)
    app = label_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_label(pilot, app)
        screen.repeat_share = 1.0
        await press_and_wait(pilot, screen, "1")
        rep = screen.current
        assert rep.repeat_of.id == tasks[0].id and rep.task is None and rep.swapped is True
        assert shown(screen) == ("sft answer 0", "base answer 0")
        await press_and_wait(pilot, screen, "2")  # same answer picked again: agrees
        screen.repeat_share = 0.0
        repeat_task = store.list_label_tasks("demo")[-1]
        assert repeat_task.meta["repeat_of"] == tasks[0].id
        assert store.live_label(repeat_task.id).choice == "a"
        # a second original, then its repeat labelled the other way
        screen.repeat_share = 1.0
        await press_and_wait(pilot, screen, "1")
        assert screen.current.repeat_of.id == tasks[1].id
        screen.repeat_share = 0.0
        await press_and_wait(pilot, screen, "1")  # now A is the other candidate: disagrees
        screen.refresh_stats()
        await wait_until(pilot, lambda: screen.stats and screen.stats["agreement"]["pairs"] == 2)
        meter = text_of(screen.query_one("#label-agreement"))
        assert "1/2 (50%)" in meter and "label noise ≈ 50%" in meter
        assert screen.stats["labelled"] == 2 and screen.stats["repeats"] == 2
        assert screen.facts["this set"] == "2/4 pairs labelled · 2 to go"
        assert screen.facts["repeats"].startswith("2 re-shown pairs labelled")
        assert screen.facts["all sets"] == "4 live labels = 2 + 2 repeats + 0 in other sets · 6 tasks"


async def test_stats_panel_shows_counts_and_win_rates(label_app, store):
    make_tasks(store, 6, swapped=lambda i: False)
    app = label_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_label(pilot, app)
        await press_and_wait(pilot, screen, "2", "2", "2", "1", "t")
        screen.refresh_stats()
        await wait_until(pilot, lambda: screen.facts.get("this set", "").startswith("5/6 "))
        table = screen.query_one("#label-choices")
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert rows == [["A", "1"], ["B", "3"], ["tie", "1"]]  # sides not swapped here
        bars = screen.query_one("#label-winrates")
        (pair,) = bars.result["pairs"]
        assert (pair["a"], pair["b"], pair["wins"], pair["ties"], pair["losses"]) == \
            ("base", "run:3", 1, 1, 3)
        assert "Bradley-Terry" in text_of(bars) and "/min" in screen.facts["pace"]


async def test_empty_store_says_how_to_make_tasks(label_app):
    app = label_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_label(pilot, app)
        assert screen.current is None
        assert "Press n" in text_of(screen.query_one("#label-prompt"))
        await pilot.press("1")
        await pilot.pause()
        assert "Nothing to label" in text_of(screen.query_one("#label-status"))


async def test_new_tasks_are_generated_ahead_in_the_background(label_app, store, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(5)))
    app = label_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_label(pilot, app)
        await pilot.press("n")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "NewTasksScreen")
        modal = app.screen
        modal.query_one("#new-models").value = "base"
        await pilot.press("enter")
        assert "two or more" in text_of(modal.query_one("#new-error"))
        modal.query_one("#new-models").value = "base,run:3"
        modal.query_one("#new-prompts").value = str(prompts)
        modal.query_one("#new-n").value = "4"
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.current is not None)
        assert screen.task_set == "base vs run:3"
        assert screen.current.prompt == "q0"
        await press_and_wait(pilot, screen, "1", "2", "t")
        await wait_until(pilot, lambda: screen.current is not None and screen.current.prompt == "q3")
        await press_and_wait(pilot, screen, "b")
        assert screen.current is None and len(store.live_labels("base vs run:3")) == 4
        assert not screen.feeder.running and screen.feeder.made == 4


async def test_a_failing_model_is_said_in_words(label_app, store, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "q"}) + "\n")
    app = label_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_label(pilot, app)
        screen._start_feeder({"refs": ["base", "broken"], "prompts": str(prompts)})
        await wait_until(pilot, lambda: any("could not be loaded" in str(n.message)
                                            for n in app._notifications))
        assert screen.current is None


async def test_next_pair_is_drawn_without_relayout_and_long_answers_scroll(label_app, store,
                                                                         monkeypatch):
    from textual import events
    from textual.screen import Screen

    cands = [{"model_ref": "base", "output": "\n".join(f"line {i}" for i in range(60))},
             {"model_ref": "run:3", "output": "short"}]
    store.create_label_task("long one", cands, task_set="demo", meta={"show_swapped": False})
    make_tasks(store, 4)
    layouts = []
    relayout = Screen._refresh_layout
    monkeypatch.setattr(Screen, "_refresh_layout",
                        lambda self, *a, **k: (layouts.append(self), relayout(self, *a, **k)))
    app = label_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_label(pilot, app)
        answer = screen.query_one("#label-text-a")
        await wait_until(pilot, lambda: "more lines" in str(answer.border_subtitle))
        hidden = 60 - answer.size.height
        assert f"↓ {hidden} more lines" in str(answer.border_subtitle)
        for _ in range(40):  # the wheel, past the end: stops at the last line
            answer.post_message(events.MouseScrollDown(answer, 1, 1, 0, 0, 0, False, False,
                                                       False))
        await wait_until(pilot, lambda: answer.top == hidden)
        assert not answer.border_subtitle
        assert answer.render_line(0).text.strip() == f"line {hidden}"
        assert answer.render_line(answer.size.height - 1).text.strip() == "line 59"
        await pilot.pause(0.1)
        layouts.clear()
        await press_and_wait(pilot, screen, "1", "2", "t")
        await pilot.pause(0.1)
        assert layouts == []  # repainted, never re-laid out
        assert answer.top == 0 and shown(screen) == ("base answer 2", "sft answer 2")


async def test_full_collections_wait_for_a_pause_while_labelling(label_app, store):
    import gc

    make_tasks(store, 3)
    before = gc.get_threshold()
    app = label_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_label(pilot, app)
        assert gc.get_threshold()[:2] == before[:2] and gc.get_threshold()[2] > 10_000
        await pilot.press("f2")  # another area: the usual thresholds again
        await wait_until(pilot, lambda: app.screen is not screen)
        assert gc.get_threshold() == before
        await pilot.press("f6")
        await wait_until(pilot, lambda: gc.get_threshold()[2] > 10_000)
    assert gc.get_threshold() == before


async def test_labels_by_key_count_the_key_pressed_not_the_stored_side(label_app, store):
    """Issue 23: sides are swapped per task, so pressing A four times stores a, b, a, b."""
    tasks = make_tasks(store, 5)  # tasks 1 and 3 show candidate b as A
    app = label_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_label(pilot, app)
        await press_and_wait(pilot, screen, "1", "1", "1", "1", "2")
        live = {e.task_id: e.choice for e in store.live_labels("demo")}
        assert [live[t.id] for t in tasks] == ["a", "b", "a", "b", "b"]
        screen.refresh_stats()
        await wait_until(pilot, lambda: screen.facts.get("this set", "").startswith("5/5 "))
        table = screen.query_one("#label-choices")
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert rows == [["A", "4"], ["B", "1"]]
        assert screen.stats["by_choice"] == {"a": 2, "b": 3}  # stored, candidate order


def labels_of(modal) -> str:
    return " ".join(text_of(w) for w in modal.query("Label"))


async def test_new_tasks_dialog_is_prefilled_with_real_values_enter_starts(label_app, store):
    """Issue 23: dim placeholders read as values (a prompt file that did not exist) and Enter
    said "Give two or more model REFs". Now the fields hold real defaults: Enter just starts."""
    from tuiapp.screens.label_modals import DEFAULT_PROMPTS

    assert DEFAULT_PROMPTS.is_file()
    app = label_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_label(pilot, app)
        await pilot.press("n")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "NewTasksScreen")
        modal = app.screen
        values = [modal.query_one(f"#new-{k}").value for k in ("models", "prompts", "n")]
        assert values == ["base,run:12", str(DEFAULT_PROMPTS), "20"]  # base + the newest run
        placeholders = [modal.query_one(f"#new-{k}").placeholder for k in ("models", "prompts")]
        assert all(p.startswith("e.g. ") for p in placeholders)
        assert "can answer: base, run:3, run:12, model:1" in labels_of(modal)
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.current is not None)
        assert app.screen is screen  # the dialog closed without an error
        assert app.engine.calls[-1] == ("start_label_feeder",
                                        (["base", "run:12"], str(DEFAULT_PROMPTS), None, 20))
        assert screen.task_set == "base vs run:12" and screen.feeder.total == 20


async def test_new_tasks_dialog_without_models_says_so(make_app):
    app = make_app(engine=FakeLabelEngine(choices=[]))
    async with app.run_test(size=(120, 36)) as pilot:
        await open_label(pilot, app)
        await pilot.press("n")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "NewTasksScreen")
        modal = app.screen
        assert modal.query_one("#new-models").value == ""
        assert "no trained models yet" in labels_of(modal)
        await pilot.press("enter")
        assert "two or more" in text_of(modal.query_one("#new-error"))


async def test_x_exports_the_labels_as_a_preference_version_and_names_it(label_app, store, tmp_path):
    make_tasks(store, 3, swapped=lambda i: False)
    app = label_app()
    app.engine.home = tmp_path
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_label(pilot, app)
        await pilot.press("x")
        await wait_until(pilot, lambda: "Not exported" in text_of(screen.query_one("#label-status")))
        await press_and_wait(pilot, screen, "1", "2", "t")
        await pilot.press("x")
        await wait_until(pilot, lambda: screen.last_export is not None)
        v = screen.last_export
        assert v.kind == "preference" and v.rows == 2 and v.name == "labels/demo"
        assert f"dataset version 'labels/demo' (id {v.id})" in text_of(screen.query_one("#label-status"))
        assert store.get_dataset_version(v.id).source == "labels"
