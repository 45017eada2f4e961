"""Runs screen: the store's runs, filters, the detail pane, the empty state."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Select

from tuiapp.app import Settings, TuiApp
from tuiapp.screens.run_rows import build_rows, duration
from tuiapp.widgets.lineage_tree import LineageTree

from .conftest import text_of, wait_until
from .runs_world import FIXED_NOW, add_three_runs

pytestmark = pytest.mark.anyio


def make_runs_app(store, engine, tmp_path):
    return TuiApp(
        store=store,
        engine=engine,
        settings=Settings(home=tmp_path, refresh_interval=0, clock=lambda: FIXED_NOW),
    )


def table_ids(screen) -> list[str]:
    table = screen.query_one("#runs-table", DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


async def open_runs(pilot, app):
    await pilot.press("f4")
    screen = app.screen
    await wait_until(pilot, lambda: screen.loaded)
    return screen


async def test_rows_come_from_the_store_newest_first(store, engine, tmp_path):
    world = add_three_runs(store)
    app = make_runs_app(store, engine, tmp_path)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_runs(pilot, app)
        assert table_ids(screen) == [
            str(world["queued"].id),
            str(world["dpo"].id),
            str(world["sft"].id),
        ]
        table = screen.query_one("#runs-table", DataTable)
        sft_row = [str(c) for c in table.get_row(str(world["sft"].id))]
        assert sft_row == [
            str(world["sft"].id),
            "sft-lora",
            "sft",
            "completed",
            "tiny-base",
            f"demo/sft #{world['data'].id}",
            "2026-03-01 09:59",
            "3m 07s",
            "1.1250",
        ]
        assert text_of(screen.query_one("#runs-count")) == "3 of 3 runs"
        assert not screen.query_one("#runs-empty").display


async def test_status_filter_hides_rows_and_kind_filter_combines(store, engine, tmp_path):
    world = add_three_runs(store)
    app = make_runs_app(store, engine, tmp_path)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_runs(pilot, app)
        screen.query_one("#runs-status", Select).value = "failed"
        await wait_until(pilot, lambda: table_ids(screen) == [str(world["dpo"].id)])
        assert text_of(screen.query_one("#runs-count")) == "1 of 3 runs"
        screen.query_one("#runs-status", Select).value = "all"
        screen.query_one("#runs-kind", Select).value = "sft"
        await wait_until(pilot, lambda: len(table_ids(screen)) == 2)
        screen.query_one("#runs-status", Select).value = "running"
        await wait_until(pilot, lambda: table_ids(screen) == [])
        assert "No run matches" in text_of(screen.query_one("#run-head"))


async def test_filter_keys_cycle_through_statuses(store, engine, tmp_path):
    add_three_runs(store)
    app = make_runs_app(store, engine, tmp_path)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_runs(pilot, app)
        screen.query_one("#runs-table").focus()
        await pilot.press("s")
        assert screen.status_filter == "queued"
        await wait_until(pilot, lambda: len(table_ids(screen)) == 1)
        await pilot.press("k", "k")
        assert screen.kind_filter == "cpt"
        await wait_until(pilot, lambda: table_ids(screen) == [])


async def test_detail_pane_shows_config_metrics_lineage_and_error(store, engine, tmp_path):
    world = add_three_runs(store)
    app = make_runs_app(store, engine, tmp_path)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_runs(pilot, app)
        # the cursor starts on the newest run; move to the failed DPO run
        await wait_until(pilot, lambda: screen.detail_run_id == world["queued"].id)
        screen.query_one("#runs-table").focus()
        await pilot.press("down")
        await wait_until(pilot, lambda: screen.detail_run_id == world["dpo"].id)
        assert '"beta": 0.1' in text_of(screen.query_one("#run-config"))
        assert "out of memory" in text_of(screen.query_one("#run-error"))
        assert screen.query_one("#run-error").display
        metrics = text_of(screen.query_one("#run-metrics"))
        assert "loss" in metrics and "0.6931" in metrics
        tree = screen.query_one("#run-lineage", LineageTree)
        labels = [str(node.label) for node in tree.root.children]
        assert any(f"dataset version #{world['prefs'].id} demo/preferences" in x for x in labels)
        assert any("model #" in x and "tiny-base" in x for x in labels)
        parent = next(node for node in tree.root.children if str(node.label) == "parent")
        assert any(f"run #{world['sft'].id} sft sft-lora" in str(n.label) for n in parent.children)

        await pilot.press("down")
        await wait_until(pilot, lambda: screen.detail_run_id == world["sft"].id)
        metrics = text_of(screen.query_one("#run-metrics"))
        assert "1.125" in metrics and "2.5" in metrics and "30" in metrics  # last, max, step
        assert '"device": "cpu"' in text_of(screen.query_one("#run-env"))
        assert not screen.query_one("#run-error").display


async def test_refresh_picks_up_a_new_run(store, engine, tmp_path):
    add_three_runs(store)
    app = make_runs_app(store, engine, tmp_path)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_runs(pilot, app)
        new = store.create_run("cpt", {"steps": 1}, name="fresh")
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: str(new.id) in table_ids(screen))


async def test_empty_store_explains_where_runs_come_from(store, engine, tmp_path):
    app = make_runs_app(store, engine, tmp_path)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_runs(pilot, app)
        empty = screen.query_one("#runs-empty")
        assert empty.display and not screen.query_one("#runs-body").display
        assert "tuneloop train sft --config" in text_of(empty)
        assert screen.query_one("#runs-table", DataTable).row_count == 0


def test_build_rows_and_duration(store):
    world = add_three_runs(store)
    rows = {row.id: row for row in build_rows(store, FIXED_NOW)}
    assert rows[world["dpo"].id].duration == "42s"
    assert rows[world["queued"].id].duration == ""
    assert rows[world["dpo"].id].last_loss == "0.6931"
    assert duration("2026-03-01T10:00:00+00:00", None, FIXED_NOW) == "2h 00m"


async def test_detail_shows_the_runs_evaluations_and_win_rates(store, engine, tmp_path):
    world = add_three_runs(store)
    sft = world["sft"].id
    store.add_evaluation(
        "eval_heldout: base vs run", ["base", f"run:{sft}"],
        {"base": {"n": 40, "scores": {"demo_exact": 0.05}, "mean_tokens": 25.0},
         f"run:{sft}": {"n": 40, "scores": {"demo_exact": 0.625, "demo_format": 1.0}, "mean_tokens": 4.0}},
        run_ids=[sft], details={"n_prompts": 40})
    # a demo-proof row is keyed by stage and carries the run id
    store.add_evaluation("demo proof", ["base", f"run:{sft}"],
                         {"rows": {"sft": {"run_id": sft, "heldout": {"n": 200, "exact": 0.59}}}},
                         run_ids=[sft])
    for i, choice in enumerate(("b", "b", "b", "a", "tie")):  # the run (b) wins 3, loses 1, 1 tie
        task = store.create_label_task(f"p{i}", [{"model_ref": "base", "output": f"x{i}"},
                                                 {"model_ref": str(sft), "output": f"y{i}"}],
                                       task_set="base vs sft")
        store.add_label(task.id, choice)
    app = make_runs_app(store, engine, tmp_path)
    async with app.run_test(size=(120, 60)) as pilot:
        screen = await open_runs(pilot, app)
        screen.query_one("#runs-table").focus()
        for _ in range(2):
            await pilot.press("down")
        await wait_until(pilot, lambda: screen.detail_run_id == sft)
        evals = text_of(screen.query_one("#run-evaluations"))
        assert "eval_heldout: base vs run" in evals and "40 prompts" in evals
        assert "demo_exact 62%" in evals and "demo_format 100%" in evals
        assert "with 1 other model" in evals
        assert "demo proof" in evals and "heldout.exact 59%" in evals
        assert "5%" not in evals  # base's score is not shown as the run's
        wins = text_of(screen.query_one("#run-winrates"))
        # from base's side: 1 won, 1 tie, 3 lost → (1 + 0.5) / 5 = 30%
        assert f"base vs run:{sft}" in wins and "30% for base" in wins
        assert "1 won · 1 tie · 0 both bad · 3 lost" in wins
        assert "Bradley-Terry" in wins
        await pilot.press("up")
        await wait_until(pilot, lambda: screen.detail_run_id == world["dpo"].id)
        assert "none yet" in text_of(screen.query_one("#run-evaluations"))
        assert "No comparisons yet" in text_of(screen.query_one("#run-winrates"))
