"""In-screen tabs by keyboard: `[` / `]` on Datasets and Compare, ctrl+pageup / ctrl+pagedown
while a text field has focus, listed in the footer and the help; a bad file brings the Validation
tab forward; a missing path lists every accepted file type and clears what the last file showed."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Input, TabbedContent, TextArea

from tuiapp.engine.data.read import FILE_TYPES
from tuiapp.screens.help import key_rows
from tuiapp.widgets.file_preview import FilePreview

from .conftest import text_of, wait_until
from .test_compare import compare_engine, open_compare
from .test_datasets import pick

pytestmark = pytest.mark.anyio


def active(screen, tabs_id: str) -> str:
    return screen.query_one(f"#{tabs_id}", TabbedContent).active


def footer_keys(screen) -> list[str]:
    return [f"{k.key_display} {k.description}" for k in screen.query("FooterKey")]


async def test_brackets_step_the_datasets_tabs_and_ctrl_page_keys_work_while_typing(make_app):
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        await pilot.pause()
        assert active(screen, "ds-tabs") == "tab-validation"
        seen = []
        for _ in range(3):
            await pilot.press("right_square_bracket")
            seen.append(active(screen, "ds-tabs"))
        assert seen == ["tab-stats", "tab-examples", "tab-validation"]
        await pilot.press("left_square_bracket")
        assert active(screen, "ds-tabs") == "tab-examples"
        assert "] Next tab" in footer_keys(screen)
        await pilot.press("ctrl+o")  # into the path field: brackets are text there
        field = screen.query_one("#ds-path", Input)
        assert field.has_focus
        await pilot.press("right_square_bracket")
        assert field.value == "]" and active(screen, "ds-tabs") == "tab-examples"
        await pilot.press("ctrl+pagedown")
        assert active(screen, "ds-tabs") == "tab-validation"
        await pilot.press("ctrl+pageup")
        assert active(screen, "ds-tabs") == "tab-examples"
        assert field.has_focus
        ids = {row.binding_id for row in key_rows(app)}
        assert {"datasets.next_tab", "datasets.previous_tab",
                "compare.next_tab", "compare.previous_tab"} <= ids


async def test_a_bad_file_brings_the_validation_tab_forward(make_app, data_files):
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        await pick(pilot, screen, data_files["good"])
        await pilot.press("right_square_bracket", "right_square_bracket")
        assert active(screen, "ds-tabs") == "tab-examples"
        await pick(pilot, screen, data_files["bad"])
        await wait_until(pilot, lambda: active(screen, "ds-tabs") == "tab-validation")
        assert screen.query_one("#ds-problems", DataTable).row_count == 3
        # a clean file leaves the tab the person chose
        await pilot.press("right_square_bracket")
        await pick(pilot, screen, data_files["good"])
        for _ in range(3):
            await pilot.pause()
        assert active(screen, "ds-tabs") == "tab-stats"


async def test_a_missing_path_lists_every_accepted_type_and_clears_the_last_file(make_app,
                                                                                 data_files):
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        await pick(pilot, screen, data_files["bad"])
        preview = screen.query_one("#ds-preview", FilePreview)
        await wait_until(pilot, lambda: preview.line == 3)
        await pilot.press("ctrl+o")
        screen.query_one("#ds-path", Input).value = str(data_files["good"].parent / "nope.csv")
        await pilot.press("enter")
        await pilot.pause()
        error = screen.last_error or ""
        assert "No file at" in error
        for suffix in FILE_TYPES:
            assert suffix in error
        assert "save_to_disk" in error
        assert screen.current_path is None and screen.report is None
        assert screen.query_one("#ds-problems", DataTable).row_count == 0
        assert preview.line is None and preview.lines == []
        assert "bad.jsonl" not in text_of(preview)


async def test_brackets_step_the_compare_tabs_and_ctrl_page_keys_work_in_the_prompt(make_app):
    app = make_app(engine=compare_engine())
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_compare(pilot, app)
        app.set_focus(None)
        seen = []
        for _ in range(3):
            await pilot.press("right_square_bracket")
            seen.append(active(screen, "cmp-tabs"))
        assert seen == ["cmp-tab-batch", "cmp-tab-blind", "cmp-tab-side"]
        await pilot.press("left_square_bracket")
        assert active(screen, "cmp-tabs") == "cmp-tab-blind"
        await pilot.press("ctrl+pagedown")
        assert active(screen, "cmp-tabs") == "cmp-tab-side"
        editor = screen.query_one("#cmp-prompt", TextArea)
        editor.focus()
        await pilot.press("right_square_bracket")
        assert editor.text == "]" and active(screen, "cmp-tabs") == "cmp-tab-side"
        await pilot.press("ctrl+pagedown")
        assert active(screen, "cmp-tabs") == "cmp-tab-batch"
        await pilot.press("ctrl+pageup")
        assert active(screen, "cmp-tabs") == "cmp-tab-side"
