"""On/off state in text, not only colour: the Export screen's output types and checkboxes, and
the Train form's bool switches, read ✓/empty and on/off in a plain-text rendering."""

from __future__ import annotations

import pytest
from textual.widgets import SelectionList

from tuiapp.screens.export_panels import OUTPUT_TYPES
from tuiapp.widgets.toggles import OFF_MARK, ON_MARK, TextSwitch

from .conftest import text_of, wait_until

pytestmark = pytest.mark.anyio


def marks(types: SelectionList) -> dict[str, str]:
    """Entry value → the character drawn in its box, for every entry (scrolled into view)."""
    out: dict[str, str] = {}
    for index in range(types.option_count):
        types.scroll_to(y=index, animate=False, immediate=True)
        y = index - int(types.scroll_offset.y)
        line = types.render_line(y).text
        assert line[0] == "▐" and line[2] == "▌", line
        out[types.get_option_at_index(index).value] = line[1]
    return out


async def test_export_types_and_checkboxes_say_which_are_on(make_app):
    app = make_app()
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.press("f7")
        screen = app.screen
        await wait_until(pilot, lambda: bool(screen.facts))
        types = screen.query_one("#export-types", SelectionList)
        assert types.option_count == len(OUTPUT_TYPES) > 10
        drawn = marks(types)
        assert {v for v, m in drawn.items() if m == ON_MARK} == set(screen.quants) != set()
        assert all(m == OFF_MARK for v, m in drawn.items() if v not in screen.quants)
        types.select("q4_k_m")
        types.deselect("f16")
        await pilot.pause()
        drawn = marks(types)
        assert drawn["q4_k_m"] == ON_MARK and drawn["f16"] == OFF_MARK
        card = screen.query_one("#export-card")
        before = card.value
        assert card.render().plain[:3] == f"▐{ON_MARK if before else OFF_MARK}▌"
        card.toggle()
        await pilot.pause()
        assert card.render().plain[:3] == f"▐{OFF_MARK if before else ON_MARK}▌"


async def test_train_form_switches_read_on_or_off(make_app):
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("f3")
        screen = app.screen
        await wait_until(pilot, lambda: screen.choices_loaded)
        switches = list(screen.query(TextSwitch))
        assert switches, "the SFT form has bool fields"
        for switch in switches:
            assert text_of(switch).strip() == ("on" if switch.value else "off")
        switch = switches[0]
        was = switch.value
        switch.focus()
        await pilot.press("space")
        await pilot.pause()
        assert switch.value is not was
        assert text_of(switch).strip() == ("on" if switch.value else "off")
        name = switch.id.removeprefix("cf-")
        assert screen.form.values()[name] is switch.value
