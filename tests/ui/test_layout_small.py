"""At 100×30 the screens degrade instead of breaking: the footer's keys fit without overlapping
(no palette key drawn over them), Train's loss chart stays on screen, Runs' metric names stay
whole and distinct, Compare's answer panes stay wide enough to read. State first, then
snapshots at that size."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from tuiapp.messages import RunProgress
from tuiapp.widgets.loss_chart import LossChart
from tuiapp.widgets.model_picker import ModelPicker
from tuiapp.widgets.output_pane import OutputPane

from .conftest import wait_until
from .fakes import FakeTrainingEngine
from .runs_world import add_three_runs
from .test_compare import compare_engine, open_compare
from .test_train import add_run, open_train, train_app

SMALL = (100, 30)
AREAS = ("f2", "f3", "f4", "f5", "f6", "f7")


def monitor_world(store):
    store.add_model("tiny-base", "hf", "/models/tiny-base")
    store.add_dataset_version("demo/sft", "/d/sft.jsonl", "a" * 64, "messages", "sft", 288)
    run = add_run(store, "running")
    for step in range(5, 125, 5):
        store.log_metrics(run.id, step, {"loss": 2.8 * 0.985**step + 0.4, "learning_rate": 8e-4,
                                         "grad_norm": 0.9, "tokens_per_s": 2150.0,
                                         "memory_mb": 690.0, "epoch": step / 144})
    store.log_metrics(run.id, 100, {"eval_loss": 1.1})
    return run


async def watch_mid_run(pilot, app, run):
    screen = await open_train(pilot, app)
    await wait_until(pilot, lambda: screen.monitor.run_id == run.id)
    app.post_message(RunProgress({
        "run_id": run.id, "status": "running", "step": 120, "total_steps": 288, "eta_s": 140.0,
        "loss": 0.87, "tokens_per_s": 2150.0, "phase": "train"}))
    await wait_until(pilot, lambda: screen.monitor.step == 120)
    return screen


def runs_world(store):
    world = add_three_runs(store)
    for step in (10, 20, 30):
        store.log_metrics(world["sft"].id, step, {"eval_loss": 1.5, "eval_accuracy": 0.5,
                                                  "eval_rewards_margin": 0.2})
    return world


async def three_answers(pilot, app):
    screen = await open_compare(pilot, app)
    screen.query_one(ModelPicker).select(["base", "run:1", "run:2"])
    screen.set_prompt("Which town is Tesosto from?")
    await pilot.press("ctrl+g")
    await wait_until(pilot, lambda: not screen.generating)
    return screen


# ---- state ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_every_footer_fits_100_columns_without_overlap(make_app):
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        for key in AREAS:
            await pilot.press(key)
            for _ in range(5):
                await pilot.pause()
            app.set_focus(None)
            await pilot.pause()
            keys = list(app.screen.query("FooterKey"))
            shown = [f"{k.key_display} {k.description}" for k in keys]
            assert "^p Palette" in shown and "F1 Help" in shown, shown
            assert not any(k.has_class("-command-palette") for k in keys)  # no docked key
            spans = sorted((k.region.x, k.region.right) for k in keys)
            assert spans[-1][1] <= SMALL[0], f"{app.screen} footer runs past the edge: {shown}"
            assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), shown


@pytest.mark.anyio
async def test_train_chart_stays_visible_at_100x30(store, tmp_path):
    run = monitor_world(store)
    app = train_app(store, FakeTrainingEngine(), tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        screen = await watch_mid_run(pilot, app, run)
        await pilot.pause(0.1)
        chart = screen.query_one(LossChart)
        region = chart.region
        assert region.height >= 6 and region.width >= 40, region
        assert region.bottom <= SMALL[1] - 1 and region.right <= SMALL[0]  # above the footer


@pytest.mark.anyio
async def test_runs_metric_names_stay_whole_at_100x30(store, tmp_path):
    world = runs_world(store)
    app = train_app(store, FakeTrainingEngine(), tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("f4")
        screen = app.screen
        await wait_until(pilot, lambda: screen.detail_run_id is not None)
        screen.query_one("#runs-table").focus()
        await pilot.press("down", "down")
        await wait_until(pilot, lambda: screen.detail_run_id == world["sft"].id)
        metrics = screen.query_one("#run-metrics")
        await pilot.pause()
        width = metrics.size.width
        assert width < 60  # the detail column is narrow here
        console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
        console.print(metrics.content)
        shown = console.export_text()
        for name in ("eval_accuracy", "eval_loss", "eval_rewards_margin", "learning_rate"):
            assert name in shown, shown
        assert "…" not in shown
        assert all(len(line) <= width for line in shown.splitlines())


@pytest.mark.anyio
async def test_compare_panes_stay_readable_at_100x30(make_app):
    app = make_app(engine=compare_engine())
    async with app.run_test(size=SMALL) as pilot:
        screen = await three_answers(pilot, app)
        await pilot.pause()
        panes = [screen.query_one(f"#cmp-pane-{i}", OutputPane) for i in range(3)]
        assert all(p.size.width >= 24 for p in panes), [p.size for p in panes]
        assert panes[2].text.startswith("Tesosto lives in Thornbury")
    app = make_app(engine=compare_engine())
    async with app.run_test(size=(160, 40)) as pilot:  # wide: one row, as before
        screen = await three_answers(pilot, app)
        ys = {screen.query_one(f"#cmp-pane-{i}").region.y for i in range(3)}
        assert len(ys) == 1


# ---- snapshots at 100×30 ----------------------------------------------------------------------


def test_train_mid_run_snapshot_100x30(snap_compare, store, tmp_path):
    run = monitor_world(store)
    app = train_app(store, FakeTrainingEngine(), tmp_path)

    async def run_before(pilot):
        await watch_mid_run(pilot, app, run)
        app.screen.form.control("learning_rate").focus()
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=SMALL, run_before=run_before)


def test_runs_detail_snapshot_100x30(snap_compare, store, tmp_path):
    world = runs_world(store)
    app = train_app(store, FakeTrainingEngine(), tmp_path)

    async def run_before(pilot):
        await pilot.press("f4")
        screen = app.screen
        await wait_until(pilot, lambda: screen.detail_run_id is not None)
        screen.query_one("#runs-table").focus()
        await pilot.press("down", "down")
        await wait_until(pilot, lambda: screen.detail_run_id == world["sft"].id)
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=SMALL, run_before=run_before)


def test_compare_three_panes_snapshot_100x30(snap_compare, store, tmp_path):
    app = train_app(store, compare_engine(fixed_timing=True), tmp_path)

    async def run_before(pilot):
        await three_answers(pilot, app)
        app.set_focus(None)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and app.screen.generating:
            await pilot.pause(0.05)
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=SMALL, run_before=run_before)
