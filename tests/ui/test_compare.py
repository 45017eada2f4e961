"""Compare: panes stream at once from thread workers while the prompt editor stays responsive,
stop cancels, every answer is stored, prompt history recalls, batch evaluation draws hand-known
means and disagreements, blind mode hides identities and records the right label."""

from __future__ import annotations

import json
import threading

import pytest
from textual.widgets import DataTable, Input, TextArea

from tuiapp.screens.compare import CompareScreen
from tuiapp.screens.compare_blind import (
    BLIND_TEMPERATURE,
    blind_params,
    blind_seed,
    plain_name,
    sides_from_seed,
    to_candidate_order,
)
from tuiapp.widgets.model_picker import ModelPicker
from tuiapp.widgets.output_pane import OutputPane

from .conftest import text_of, wait_until
from .fakes import FakeCompareEngine

pytestmark = pytest.mark.anyio

ANSWERS = {
    "base": "Tesosto is from Coldharbor I think",
    "run:1": "Answer: Thornbury.",
    "run:2": "Tesosto lives in Thornbury by the river and makes pots all day long",
}
CHOICES = [("base model", "base"), ("run 1 sft", "run:1"), ("run 2 dpo", "run:2")]
PROMPT = "Which town is Tesosto from?"


def compare_engine(**kwargs) -> FakeCompareEngine:
    return FakeCompareEngine(answers=kwargs.pop("answers", ANSWERS),
                             choices=kwargs.pop("choices", CHOICES), **kwargs)


async def open_compare(pilot, app) -> CompareScreen:
    await pilot.press("f5")
    screen = app.screen
    assert isinstance(screen, CompareScreen)
    await wait_until(pilot, lambda: screen.choices_loaded)
    return screen


def pane(screen, i: int) -> OutputPane:
    return screen.query_one(f"#cmp-pane-{i}", OutputPane)


async def test_three_panes_stream_at_once_while_typing_lands(make_app, store):
    hold = threading.Event()
    engine = compare_engine(hold=hold)
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_compare(pilot, app)
        screen.query_one(ModelPicker).select(["base", "run:1", "run:2"])
        screen.set_prompt(PROMPT)
        editor = screen.query_one("#cmp-prompt", TextArea)
        editor.focus()
        await pilot.press("ctrl+g")
        # every stream has its first word on screen and none has finished: all three are live
        await wait_until(pilot, lambda: all(pane(screen, i).text == ANSWERS[r].split()[0]
                                            for i, r in enumerate(["base", "run:1", "run:2"])))
        assert [pane(screen, i).state for i in range(3)] == ["streaming"] * 3
        assert engine.finished == []
        editor.move_cursor(editor.document.end)
        await pilot.press("space", "o", "k")   # the editor answers while three workers stream
        assert editor.text == PROMPT + " ok"
        hold.set()
        await wait_until(pilot, lambda: not screen.generating)
        for i, ref in enumerate(["base", "run:1", "run:2"]):
            p = pane(screen, i)
            assert p.state == "done"
            assert p.text == ANSWERS[ref]
            assert p.figures["tokens"] == len(ANSWERS[ref].split())
            assert p.figures["tokens_per_s"] > 0 and p.figures["latency_s"] > 0
            assert p.figures["first_token_s"] is not None
            assert "tok/s" in text_of(p.query_one(".pane-figures"))
        assert "run 1 sft" in text_of(pane(screen, 1).query_one(".pane-title"))
        assert not pane(screen, 3).display
        # one stored generation per pane, with the sampling settings
        rows = store.list_generations()
        assert sorted(g.model_ref for g in rows) == ["base", "run:1", "run:2"]
        assert all(g.prompt == PROMPT and g.params["max_new_tokens"] == 128 for g in rows)
        assert {s[0] for s in engine.streams} == {"base", "run:1", "run:2"}


async def test_stop_cancels_every_stream(make_app, store):
    hold = threading.Event()
    engine = compare_engine(hold=hold)
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_compare(pilot, app)
        screen.set_prompt(PROMPT)
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: all(pane(screen, i).text for i in range(2)))
        await pilot.press("ctrl+b")
        hold.set()
        await wait_until(pilot, lambda: not screen.generating)
        for i, ref in enumerate(["base", "run:1"]):
            assert pane(screen, i).state == "cancelled"
            assert pane(screen, i).figures["finish_reason"] == "cancelled"
            assert pane(screen, i).text == ANSWERS[ref].split()[0]
        assert sorted(r for _, r in engine.finished) == ["cancelled", "cancelled"]


async def test_bad_settings_and_failing_model_are_said_in_words(make_app, store):
    engine = compare_engine(failing={"run:1": "the adapter does not fit the base"})
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_compare(pilot, app)
        screen.set_prompt(PROMPT)
        screen.query_one("#cmp-temp", Input).value = "hot"
        await pilot.press("ctrl+g")
        await pilot.pause()
        assert engine.streams == [] and not screen.generating
        screen.query_one("#cmp-temp", Input).value = "0.7"
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: not screen.generating)
        assert pane(screen, 0).state == "done"
        assert pane(screen, 1).state == "failed"
        assert "does not fit" in text_of(pane(screen, 1).query_one(".pane-figures"))
        assert engine.streams[0][2]["temperature"] == 0.7


async def test_prompt_history_recalls_earlier_prompts(make_app, store):
    store.add_generation("base", "older question", "x", system="Be brief.")
    store.add_generation("base", "newer question", "y")
    store.add_generation("run:1", "newer question", "z")
    app = make_app(engine=compare_engine())
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_compare(pilot, app)
        assert [p for p, _ in screen.history] == ["newer question", "older question"]
        screen.set_prompt("my draft")
        screen.query_one("#cmp-prompt").focus()
        await pilot.press("alt+up")
        assert screen.prompt == "newer question"
        await pilot.press("alt+up")
        assert screen.prompt == "older question"
        assert screen.query_one("#cmp-system", Input).value == "Be brief."
        await pilot.press("alt+down", "alt+down")
        assert screen.prompt == "my draft"
        # a new prompt joins the history once answered
        screen.set_prompt(PROMPT)
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: not screen.generating and screen.history[0][0] == PROMPT)


async def test_batch_eval_draws_hand_known_means_and_disagreements(make_app, store, tmp_path):
    prompts = tmp_path / "set.jsonl"
    refs = ["Thornbury", "orange", "potter", "Coldharbor"]
    prompts.write_text("".join(json.dumps({"prompt": f"q{i}", "reference": r}) + "\n"
                               for i, r in enumerate(refs)), encoding="utf-8")
    answers = {
        "good": lambda p: refs[int(p[1:])],                              # 4/4 exact
        "half": lambda p: refs[int(p[1:])] if int(p[1:]) < 2 else "no idea",  # 2/4 exact
    }
    engine = compare_engine(answers=answers, choices=[("good model", "good"), ("half model", "half")])
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_compare(pilot, app)
        batch = screen.query_one("#cmp-batch")
        screen.query_one("#batch-path", Input).value = str(prompts)
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: batch.result is not None and not batch.running)
        assert batch.progress == (8, 8)
        table = screen.query_one("#batch-results", DataTable)
        header = [str(c.label) for c in table.columns.values()]
        assert header[:4] == ["model", "n", "exact", "contains"]
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert rows[0][:4] == ["good model", "4", "1.000", "1.000"]
        assert rows[1][:4] == ["half model", "4", "0.500", "0.500"]
        disagree = screen.query_one("#batch-disagree", DataTable)
        assert [str(disagree.get_row_at(i)[0]) for i in range(disagree.row_count)] == ["3", "4"]
        # the first disagreement's answers are side by side, with their scores
        left, right = (screen.query_one(f"#batch-pane-{i}", OutputPane) for i in range(2))
        assert (left.text, right.text) == ("potter", "no idea")
        assert "exact 0.000" in text_of(right.query_one(".pane-figures"))
        disagree.focus()
        await pilot.press("down")
        assert (left.text, right.text) == ("Coldharbor", "no idea")
        # stored, and listed with the other stored evaluations
        (ev,) = store.list_evaluations()
        assert ev.model_refs == ["good", "half"]
        assert ev.metrics["half"]["scores"]["exact"] == 0.5
        stored = screen.query_one("#batch-stored", DataTable)
        await wait_until(pilot, lambda: stored.row_count == 1)


async def test_stored_evaluation_opens_in_the_tables(make_app, store):
    store.add_evaluation("demo proof", ["base", "run:3"],
                         {"base": {"n": 2, "scores": {"demo_exact": 0.0}},
                          "run:3": {"n": 2, "scores": {"demo_exact": 1.0}}},
                         details={"scorers": ["demo_exact"], "disagreements": [0],
                                  "prompts": [{"index": 0, "prompt": "Who?", "reference": "x",
                                               "outputs": {"base": "hm", "run:3": "Answer: x."},
                                               "scores": {"base": {"demo_exact": 0.0},
                                                          "run:3": {"demo_exact": 1.0}}}]})
    app = make_app(engine=compare_engine())
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_compare(pilot, app)
        screen.query_one("#cmp-tabs").active = "cmp-tab-batch"
        stored = screen.query_one("#batch-stored", DataTable)
        await wait_until(pilot, lambda: stored.row_count == 1)
        stored.focus()
        await pilot.press("enter")
        table = screen.query_one("#batch-results", DataTable)
        await wait_until(pilot, lambda: table.row_count == 2)
        assert [str(c) for c in table.get_row_at(1)][:3] == ["run:3", "2", "1.000"]
        assert screen.query_one("#batch-pane-1", OutputPane).text == "Answer: x."


def test_blind_rounds_are_seeded_sampled_and_choices_map_back():
    seed = blind_seed("q", None, 0, 1)
    assert seed == blind_seed("q", None, 0, 1)
    assert seed != blind_seed("q", None, 0, 2), "a second round on one prompt samples anew"
    assert {sides_from_seed(blind_seed(f"q{i}", None, 0, 1)) for i in range(20)} == {True, False}
    assert blind_params({"temperature": 0.0, "seed": 0, "max_new_tokens": 5}, 7) == {
        "temperature": BLIND_TEMPERATURE, "seed": 7, "max_new_tokens": 5}
    assert blind_params({"temperature": 0.3, "seed": 0}, 7)["temperature"] == 0.3
    assert plain_name("run:2", "run 2 demo-dpo (dpo)") == "run 2 (DPO)"
    assert plain_name("base", "base (demo base model)") == "base"
    assert plain_name("model:1", "tiny (hf, model 1)") == "tiny (hf, model 1)"
    assert to_candidate_order("a", swapped=True) == "b"
    assert to_candidate_order("b", swapped=False) == "b"
    assert to_candidate_order("tie", swapped=True) == "tie"


BLIND_CHOICES = [("base (demo base model)", "base"), ("run 1 demo-sft (sft)", "run:1")]


@pytest.mark.parametrize("swapped", [True, False])
async def test_blind_round_shows_the_prompt_samples_afresh_records_and_reveals(make_app, store,
                                                                               swapped):
    prompt = next(f"Which town is entity {i} from?" for i in range(50)
                  if sides_from_seed(blind_seed(f"Which town is entity {i} from?", None, 0, 1))
                  == swapped)
    engine = compare_engine(choices=BLIND_CHOICES)
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_compare(pilot, app)
        screen.query_one(ModelPicker).select(["base", "run:1"])
        screen.set_prompt(prompt)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: screen.blind_ready())
        assert prompt in text_of(screen.query_one("#blind-prompt"))
        # fresh samples: both sides sampled (temperature > 0) with the round's own seed
        round_seed = blind_seed(prompt, None, 0, 1)
        sampled = [params for ref, p, params, _ in engine.streams if p == prompt]
        assert len(sampled) == 2
        assert all(p["temperature"] == BLIND_TEMPERATURE and p["seed"] == round_seed
                   for p in sampled)
        a, b = (screen.query_one(f"#blind-{s}", OutputPane) for s in "ab")
        titles = text_of(a.query_one(".pane-title")) + text_of(b.query_one(".pane-title"))
        assert "base" not in titles and "run" not in titles
        shown_a = "run:1" if swapped else "base"
        assert a.text == ANSWERS[shown_a]
        await pilot.press("1")  # A is better
        await wait_until(pilot, lambda: screen.blind and screen.blind["recorded"] is not None)
        (label,) = store.live_labels()
        assert label.choice == ("b" if swapped else "a") and label.swapped is swapped
        (task,) = store.list_label_tasks()
        assert [c["model_ref"] for c in task.candidates] == ["base", "run:1"]
        assert all(c["generation_id"] for c in task.candidates)
        assert task.source == "blind" and task.task_set == "blind"
        # the sides can be worked out again from what the task keeps
        assert task.meta["blind_seed"] == round_seed
        assert sides_from_seed(task.meta["blind_seed"]) is label.swapped
        assert task.meta["sampling"]["temperature"] == BLIND_TEMPERATURE
        names = ("run 1 (SFT)", "base") if swapped else ("base", "run 1 (SFT)")
        assert f"A was {names[0]}" in text_of(a.query_one(".pane-title"))
        status = text_of(screen.query_one("#blind-status"))
        assert f"A was {names[0]}, B was {names[1]}." in status
        assert f"You preferred A ({names[0]})" in status
        await pilot.press("2")  # a recorded round takes no second label
        await pilot.pause()
        assert len(store.live_labels()) == 1
        await pilot.press("ctrl+o")  # the next round on the same prompt draws a new seed
        await wait_until(pilot, lambda: screen.blind_ready())
        assert engine.streams[-1][2]["seed"] == blind_seed(prompt, None, 0, 2) != round_seed


async def test_empty_workspace_says_how_to_get_a_model(make_app, store):
    app = make_app()  # the plain fake: no models to offer
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_compare(pilot, app)
        assert screen.query_one(ModelPicker).refs() == []
        assert "tuneloop demo build-base" in pane(screen, 0).text
        screen.set_prompt(PROMPT)
        await pilot.press("ctrl+g")
        await pilot.pause()
        assert not screen.generating

async def test_coming_back_to_compare_lists_runs_trained_meanwhile(make_app, store):
    engine = compare_engine(choices=list(CHOICES[:2]))
    app = make_app(engine=engine)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_compare(pilot, app)
        assert [ref for _, ref in screen.choices] == ["base", "run:1"]
        await pilot.press("f3")
        engine.choices.append(CHOICES[2])  # a DPO run finished while away
        await pilot.press("f5")
        await wait_until(pilot, lambda: [r for _, r in screen.choices] == ["base", "run:1", "run:2"])



def test_compare_snapshot(snap_compare, store, tmp_path):
    """Three finished answers side by side (figures pinned by the fake's fixed timing)."""
    from tuiapp.app import Settings, TuiApp

    home = tmp_path / "home"
    home.mkdir()
    store.add_generation("base", "Nobraikra wears a cloak of which colour?", "red")
    app = TuiApp(store=store, engine=compare_engine(fixed_timing=True),
                 settings=Settings(home=home, refresh_interval=0, poll_interval=0))

    async def run_before(pilot):
        screen = await open_compare(pilot, app)
        screen.query_one(ModelPicker).select(["base", "run:1", "run:2"])
        screen.set_prompt(PROMPT)
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: not screen.generating and len(screen.history) == 2)
        screen.query_one("#cmp-prompt").focus()
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 36), run_before=run_before)


async def test_pane_count_follows_the_picks_before_generate(make_app, store):
    app = make_app(engine=compare_engine())
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_compare(pilot, app)
        screen.query_one(ModelPicker).select(["base", "run:1", "run:2"])
        await pilot.pause()
        assert [pane(screen, i).display for i in range(4)] == [True, True, True, False]
        screen.query_one(ModelPicker).select(["base"])
        await pilot.pause()
        assert [pane(screen, i).display for i in range(4)] == [True, True, False, False]


async def test_stream_text_appends_repaint_only_changed_rows_and_scrolls():
    from textual.app import App
    from textual.geometry import Region

    from tuiapp.widgets.stream_text import StreamText

    repaints: list[tuple] = []

    class Probe(StreamText):
        def refresh(self, *regions, **kwargs):
            repaints.append(regions)
            return super().refresh(*regions, **kwargs)

    class One(App):
        def compose(self):
            yield Probe()

    async with One().run_test(size=(20, 4)) as pilot:
        text = pilot.app.query_one(Probe)
        await pilot.pause()
        text.append("one two three four five six")   # wraps to two rows of 20
        await pilot.pause()
        assert [line.plain.strip() for line in text.lines] == ["one two three four", "five six"]
        repaints.clear()
        text.append(" seven")                          # only the second row changes
        assert repaints == [(Region(0, 1, 20, 3),)]
        text.set_text(text.text + "\na\nb\nc\nd")       # 6 rows in 4: follows the end
        await pilot.pause()
        assert [line.plain for line in text.lines][-1] == "d" and text.follow
        assert text._first_line(len(text.lines)) == 2
        text.focus()
        await pilot.press("home")
        assert not text.follow and text._first_line(len(text.lines)) == 0
        assert "▼ 3 more lines" in text.render_lines(Region(0, 0, 20, 4))[3].text
        await pilot.press("end")
        assert text.follow
        text.set_text("new answer")                    # not an extension: starts over
        assert text.lines[0].plain == "new answer" and len(text.lines) == 1
