"""Snapshots (second line of defence, after the state assertions): fixed size, fixed content,
pinned times. Update after a deliberate visual change with `pytest tests/ui --snapshot-update`."""

from __future__ import annotations

import time

from tuiapp.app import Settings, TuiApp

from .runs_world import FIXED_NOW, add_three_runs

SIZE = (120, 36)


async def settle(pilot, predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "screen did not settle"
        await pilot.pause(0.05)
    await pilot.pause()


def app_for(store, engine, tmp_path) -> TuiApp:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return TuiApp(
        store=store,
        engine=engine,
        settings=Settings(home=home, refresh_interval=0, clock=lambda: FIXED_NOW),
    )


def test_datasets_validation_snapshot(snap_compare, store, engine, data_files, tmp_path):
    app = app_for(store, engine, tmp_path)

    async def run_before(pilot):
        screen = app.screen
        await settle(pilot, lambda: len(screen.file_paths) == 2)
        screen.open_path(data_files["bad"])
        await settle(pilot, lambda: screen.report is not None and screen.stats is not None)
        preview = screen.query_one("#ds-preview")
        await settle(pilot, lambda: preview.line == 3)
        screen.query_one("#ds-problems").focus()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_datasets_stats_snapshot(snap_compare, store, engine, data_files, tmp_path):
    app = app_for(store, engine, tmp_path)

    async def run_before(pilot):
        screen = app.screen
        await settle(pilot, lambda: len(screen.file_paths) == 2)
        screen.open_path(data_files["good"])
        await settle(pilot, lambda: screen.stats is not None and screen.examples is not None)
        screen.query_one("#ds-tabs").active = "tab-stats"

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_runs_snapshot(snap_compare, store, engine, tmp_path):
    world = add_three_runs(store)
    app = app_for(store, engine, tmp_path)

    async def run_before(pilot):
        await pilot.press("f4")
        screen = app.screen
        await settle(pilot, lambda: screen.detail_run_id == world["queued"].id)
        screen.query_one("#runs-table").focus()
        await pilot.press("down")
        await settle(pilot, lambda: screen.detail_run_id == world["dpo"].id)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_runs_empty_snapshot(snap_compare, store, engine, tmp_path):
    app = app_for(store, engine, tmp_path)

    async def run_before(pilot):
        await pilot.press("f4")
        screen = app.screen
        await settle(pilot, lambda: screen.loaded)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_help_snapshot(snap_compare, store, engine, tmp_path):
    app = app_for(store, engine, tmp_path)
    assert snap_compare(app, terminal_size=SIZE, press=["f1"])
