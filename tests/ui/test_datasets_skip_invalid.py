"""Datasets screen, Skip invalid rows: unticked, a file with errors is refused and the refusal
names the box; ticked, the valid rows are imported and the rows left out are counted (fake engine, then the
real facade on an hh-rlhf-shaped file whose line 3 has an empty reply)."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Checkbox, Input

from tuiapp.screens.modals import NameScreen

from .conftest import text_of, wait_until
from .test_datasets import pick

pytestmark = pytest.mark.anyio
HH = Path(__file__).resolve().parents[1] / "fixtures" / "real_formats" / "hh_rlhf.jsonl"


async def _import(pilot, app, screen, name: str) -> None:
    await pilot.press("ctrl+s")
    await wait_until(pilot, lambda: isinstance(app.screen, NameScreen))
    app.screen.query_one("#name-input", Input).value = name
    await pilot.press("enter")
    await wait_until(pilot, lambda: screen.last_version is not None)


async def test_unticked_refuses_and_names_the_box_ticked_imports_the_valid_rows(
        make_app, store, data_files, engine):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await pick(pilot, screen, data_files["bad"])
        assert "tick Skip invalid rows" in text_of(screen.query_one("#ds-summary"))
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert not isinstance(app.screen, NameScreen)
        assert "Skip invalid" in screen.last_error and store.list_dataset_versions() == []

        screen.query_one("#ds-skip-invalid", Checkbox).value = True
        await wait_until(pilot, lambda: "Ready to import the valid rows"
                         in text_of(screen.query_one("#ds-summary")))
        await _import(pilot, app, screen, "bad-valid")
        assert ("import_dataset", ("bad.jsonl", "bad-valid", None, "skip_invalid")) in engine.calls
        [version] = store.list_dataset_versions()
        assert version.rows == 5 and version.stats["skipped"]["count"] == 3


async def test_a_clean_file_imports_whole_with_the_box_ticked(make_app, store, data_files, engine):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await pick(pilot, screen, data_files["good"])
        screen.query_one("#ds-skip-invalid", Checkbox).value = True
        await _import(pilot, app, screen, "good")
        assert ("import_dataset", ("good.jsonl", "good", None)) in engine.calls  # nothing to skip


async def test_real_engine_leaves_the_empty_reply_out_and_lists_its_line(store, tmp_path):
    from tuiapp.app import Settings, TuiApp
    from tuiapp.engine.facade import Engine

    (tmp_path / "home").mkdir()
    app = TuiApp(store=store, engine=Engine(), settings=Settings(home=tmp_path / "home",
                                                                 refresh_interval=0))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await pilot.press("ctrl+o")
        screen.query_one("#ds-path", Input).value = str(HH)
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.report is not None, timeout=30)
        screen.query_one("#ds-skip-invalid", Checkbox).value = True
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, NameScreen))
        app.screen.query_one("#name-input", Input).value = "hh"
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.last_version is not None, timeout=30)
        [version] = store.list_dataset_versions()
        assert version.rows == 3 and version.stats["skipped"]["lines"] == [3]
        assert version.lineage["skipped_invalid"]["lines"] == [3]
