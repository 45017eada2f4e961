"""The app shell: areas by key, help generated from the bindings, palette, quit, theme."""

from __future__ import annotations

import pytest
from textual.binding import Binding
from textual.widgets import DataTable, Input

from tuiapp.screens.areas import AREA_KEYS
from tuiapp.screens.help import HelpScreen, _own_bindings

from .conftest import text_of, wait_until

pytestmark = pytest.mark.anyio


async def test_every_area_has_a_function_key_and_a_letter(make_app):
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        for mode, _title, fkey, letter in AREA_KEYS:
            other, other_key = ("runs", "f4") if mode == "datasets" else ("datasets", "f2")
            await pilot.press(other_key)
            assert app.current_mode == other
            await pilot.press(fkey)
            assert app.current_mode == mode
            assert type(app.screen).AREA == mode
            await pilot.press(other_key)
            app.set_focus(None)
            await pilot.press(letter)
            assert app.current_mode == mode, f"letter {letter!r} did not open {mode}"


async def test_app_opens_on_datasets_with_the_tuneloop_theme(make_app):
    app = make_app()
    async with app.run_test(size=(120, 36)):
        assert app.current_mode == "datasets"
        assert app.theme == "tuneloop"


async def test_function_keys_switch_areas_while_typing_but_letters_are_typed(make_app):
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        path_input = app.screen.query_one("#ds-path", Input)
        path_input.focus()
        await pilot.press("r", "t")
        assert app.current_mode == "datasets"
        assert path_input.value == "rt"
        await pilot.press("f4")
        assert app.current_mode == "runs"


async def test_help_lists_every_described_binding_of_every_area(make_app):
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        table = app.screen.query_one("#help-keys", DataTable)
        await pilot.press("a")  # opened on Datasets it lists that area's; `a` lists every area's
        shown = {
            (str(table.get_row_at(i)[0]), str(table.get_row_at(i)[2]))
            for i in range(table.row_count)
        }
        expected = set()
        for b in _own_bindings(type(app)):
            if b.description and not b.system and b.id:
                expected.add(("Everywhere", b.description))
        for screen_cls in app.MODES.values():
            for b in Binding.make_bindings(screen_cls.BINDINGS):
                expected.add((screen_cls.AREA_TITLE, b.description))
        assert expected <= shown, expected - shown
        # every area's own keys are there, e.g. the Datasets import key with its id
        ids = {str(table.get_row_at(i)[3]) for i in range(table.row_count)}
        assert {"datasets.import", "runs.refresh", "runs.status_filter", "area.export"} <= ids
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("question_mark")  # ? works too when no field has focus
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("f1")  # F1 toggles it closed
        assert not isinstance(app.screen, HelpScreen)


async def test_help_shows_this_areas_keys_and_how_to_close(make_app):
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("f3")
        await pilot.press("f1")
        help_screen = app.screen
        assert isinstance(help_screen, HelpScreen)
        table = help_screen.query_one("#help-keys", DataTable)

        def sections() -> set[str]:
            return {str(table.get_row_at(i)[0]) for i in range(table.row_count)}

        assert sections() == {"Everywhere", "Train"}
        assert "Esc, F1, ? or q closes" in str(help_screen.query_one("#help-hint").render())
        await pilot.press("a")
        assert {"Datasets", "Train", "Label", "Export"} <= sections()
        await pilot.press("a")
        assert sections() == {"Everywhere", "Train"}
        await pilot.press("q")
        assert not isinstance(app.screen, HelpScreen)


async def test_every_binding_has_an_id_and_a_description(make_app):
    app = make_app()
    from tuiapp.screens.modals import ConfirmScreen, NameScreen

    classes = [type(app), *app.MODES.values(), HelpScreen, ConfirmScreen, NameScreen]
    for cls in classes:
        for b in Binding.make_bindings(cls.__dict__.get("BINDINGS", [])):
            assert b.id, f"{cls.__name__} binding {b.key} has no id"
            assert b.description, f"{cls.__name__} binding {b.key} has no description"


async def test_area_keys_are_in_the_area_bar_and_the_footer_keeps_the_screens_keys(make_app):
    from tuiapp.widgets.area_bar import AreaBar

    app = make_app()
    async with app.run_test(size=(120, 36)):
        shown = {
            binding.id for _, binding, _, _ in app.screen.active_bindings.values() if binding.show
        }
        # the area bar at the top names every area's key, so the footer leaves them out (it
        # ran past the edge with them) and keeps this screen's keys, help, palette and quit
        assert {"app.help", "app.command_palette", "app.quit", "datasets.import"} <= shown
        assert not any(i.startswith("area.") for i in shown)
        bar = text_of(app.screen.query_one(AreaBar))
        for key, title in (("F2", "Datasets"), ("F4", "Runs"), ("F7", "Export")):
            assert f"{key} {title}" in bar


async def test_command_palette_offers_areas_and_screen_actions(make_app):
    from tuiapp.screens.palette import TuneloopCommands

    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        provider = TuneloopCommands(app.screen)
        names = [hit.text async for hit in provider.discover()]
        assert "Go to Runs" in names
        assert "Datasets: Import as version" in names
        hits = [hit async for hit in provider.search("go to expo")]
        assert hits and "Export" in str(hits[0].match_display)
        app.call_later(hits[0].command)  # what the palette does with a chosen hit
        await wait_until(pilot, lambda: app.current_mode == "export")
        hits = [hit async for hit in TuneloopCommands(app.screen).search("export: refresh")]
        assert hits, "the Export screen's own keys are offered on the Export screen"


async def test_q_quits(make_app):
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        app.set_focus(None)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


async def test_quit_during_a_run_says_it_goes_on_and_asks(make_app, store):
    from tuiapp.screens.modals import ConfirmScreen

    run = store.create_run("sft", {"kind": "sft"}, name="demo SFT", status="running")
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        app.set_focus(None)
        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert f"Run #{run.id} is running" in app.screen.question
        assert "goes on after tuneloop closes" in app.screen.question
        assert app.screen.focused is not None and str(app.screen.focused.label) == "Stay"
        await pilot.press("enter")  # the focused button stays: Enter never quits by accident
        await pilot.pause()
        assert app.is_running and not isinstance(app.screen, ConfirmScreen)
        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("escape")  # stay
        await pilot.pause()
        assert app.is_running and not isinstance(app.screen, ConfirmScreen)
        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await pilot.pause()
    assert app.return_code == 0
    assert f"tuneloop runs show {run.id}" in app.farewell


def test_theme_colours_are_exact_xterm_256_entries():
    """A 256-colour terminal then shows the contrasts we chose instead of rounding them."""
    from rich._palettes import EIGHT_BIT_PALETTE
    from rich.color import parse_rgb_hex

    from tuiapp.app import TUNELOOP_THEME

    palette = {tuple(EIGHT_BIT_PALETTE[i]) for i in range(256)}
    slots = (
        "primary",
        "secondary",
        "accent",
        "warning",
        "error",
        "success",
        "foreground",
        "background",
        "surface",
        "panel",
    )
    for slot in slots:
        value = getattr(TUNELOOP_THEME, slot)
        assert tuple(parse_rgb_hex(value.lstrip("#"))) in palette, f"{slot} {value}"
