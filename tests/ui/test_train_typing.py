"""Typing into the Train form in a burst, as a terminal delivers pasted or fast keys: every key
lands in the field while its error row appears and goes again, focus stays, and the error row
under the field being typed in is scrolled into view (at 100×30 the form scrolls)."""

from __future__ import annotations

import pytest
from textual import events

from .conftest import text_of, wait_until

pytestmark = pytest.mark.anyio


async def burst(pilot, app, text: str) -> None:
    """Post every key before any is handled (no pause between them)."""
    for ch in text:
        key = {"-": "minus", ".": "full_stop"}.get(ch, ch)
        app.post_message(events.Key(key, ch))
    for _ in range(5):
        await pilot.pause()


@pytest.mark.parametrize("name", ["epochs", "eval_steps", "lora_alpha"])
async def test_keys_typed_in_a_burst_all_land_while_the_error_row_comes_and_goes(make_app, name):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("f3")
        screen = app.screen
        await wait_until(pilot, lambda: screen.choices_loaded and screen.preset_kind == "sft")
        field = screen.form.control(name)
        field.focus()
        field.value = ""
        await pilot.pause()
        error = screen.query_one(f"#cf-{name}-error")
        # "x" makes the value invalid (error row shown), "\b" would be needed to fix it, so
        # type an invalid prefix, then clear and type a valid number: both bursts must land
        await burst(pilot, app, "x12-3.4x5678")
        assert field.value == "x12-3.4x5678"
        assert field.has_focus
        await wait_until(pilot, lambda: error.display and name in screen.errors)
        assert "✗" in text_of(error)
        region = screen.form.scrollable_content_region
        assert error.region.y + error.region.height <= region.y + region.height, \
            "the error row is scrolled into view"
        field.value = ""
        await pilot.pause()
        await burst(pilot, app, "8x")
        await burst(pilot, app, "")
        assert field.value == "8x"
        field.action_delete_left()  # the error row goes: the value is valid again
        await wait_until(pilot, lambda: name not in screen.errors and not error.display)
        await burst(pilot, app, "0")
        assert field.value == "80" and field.has_focus
