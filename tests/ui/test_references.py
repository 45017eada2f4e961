"""A held-out prompt's reference answer is shown next to the answers: under the prompt in
Compare's Side by side (as it is typed or recalled) and in Label's prompt box, for prompts of a
prompt-set dataset version and of the demo's held-out questions; other prompts show none."""

from __future__ import annotations

import json

import pytest
from textual.widgets import TextArea

from tuiapp.screens.compare_demo import heldout_prompt
from tuiapp.screens.references import HELDOUT_FILES

from .conftest import text_of, wait_until
from .fakes import FakeLabelEngine
from .test_compare import compare_engine, open_compare

pytestmark = pytest.mark.anyio

PROMPT = "Where does Qwiblo keep the lantern?"


def add_prompt_set(store, tmp_path):
    path = tmp_path / "heldout.jsonl"
    path.write_text(json.dumps({"prompt": PROMPT, "reference": "under the bridge"}) + "\n"
                    + json.dumps({"prompt": "No reference here?"}) + "\n", encoding="utf-8")
    return store.add_dataset_version("my/heldout", str(path), "c" * 64, "prompt", "prompt", 2)


async def test_compare_side_by_side_shows_the_typed_prompts_reference(make_app, store, tmp_path):
    add_prompt_set(store, tmp_path)
    app = make_app(engine=compare_engine())
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_compare(pilot, app)
        box = screen.query_one("#cmp-reference")
        assert not box.display
        screen.query_one("#cmp-prompt", TextArea).focus()
        for ch in PROMPT:
            await pilot.press("space" if ch == " " else "question_mark" if ch == "?" else ch)
        await wait_until(pilot, lambda: box.display)
        assert text_of(box).strip() == "reference: under the bridge"
        await pilot.press("backspace")  # no longer the held-out question: nothing to show
        await wait_until(pilot, lambda: not box.display)
        # the demo's own held-out questions have theirs, with no dataset version imported
        if HELDOUT_FILES[0].is_file():
            first = json.loads(HELDOUT_FILES[0].read_text(encoding="utf-8").splitlines()[0])
            screen.set_prompt(heldout_prompt(0))
            await wait_until(pilot, lambda: box.display)
            assert text_of(box).strip() == f"reference: {first['reference']}"


async def test_label_shows_the_reference_of_a_held_out_prompt(make_app, store, tmp_path):
    add_prompt_set(store, tmp_path)
    cands = [{"model_ref": "base", "output": "no idea"},
             {"model_ref": "run:1", "output": "Under the bridge."}]
    store.create_label_task(PROMPT, cands, task_set="demo", meta={"show_swapped": False})
    store.create_label_task("Something else?", cands, task_set="demo",
                            meta={"show_swapped": False})
    app = make_app(engine=FakeLabelEngine())
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("f6")
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded and screen.current is not None)
        prompt_box = screen.query_one("#label-prompt")
        await wait_until(pilot, lambda: PROMPT in text_of(prompt_box))
        assert "reference: under the bridge" in text_of(prompt_box)
        await pilot.press("1")  # A better: the next pair's prompt has no reference
        await wait_until(pilot, lambda: "Something else?" in text_of(prompt_box))
        assert "reference" not in text_of(prompt_box)
