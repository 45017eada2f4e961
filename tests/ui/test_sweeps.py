"""The Sweeps screen: opened from the palette, a sweep's runs as a table and two plotext charts,
`e` saves the figures and the screen as SVG; a snapshot of a four-run sweep."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from tuiapp.app import Settings, TuiApp
from tuiapp.screens.palette import TuneloopCommands
from tuiapp.screens.sweeps import EMPTY, SweepsScreen, open_sweeps

from .test_snapshots import settle

SIZE = (120, 36)


def add_sweep(store) -> dict:
    """A method x rank sweep of four runs, three measured, one only pre-flighted."""
    sweep = store.create_sweep("demo sweep", "sft", [("method", ["lora", "full"]),
                                                      ("lora_r", [4, 8, 16])])
    pre, runs = {}, []
    for method, r, params, status in (("lora", 4, 78592, "completed"), ("lora", 8, 156672,
                                      "completed"), ("lora", 16, 312832, "completed"),
                                      ("full", 4, 3710000, "queued")):
        run = store.create_run("sft", {"method": method, "lora_r": r}, status=status,
                               name=f"{method} r{r}")
        store.add_run_to_sweep(sweep.id, run.id)
        pre[str(run.id)] = {"trainable_params": params, "memory_bytes": (70 + r) * 2**20,
                            "point": {"method": method, "lora_r": r}, "device": "cpu"}
        if status == "completed":
            store.log_metrics(run.id, 10, {"loss": 2.0 - r / 20, "tokens_per_s": 600.0 + r,
                                           "memory_mb": 600.0 + r})
        runs.append(run)
    ev = store.add_evaluation("sweep", [f"run:{r.id}" for r in runs[:3]],
                              {f"run:{r.id}": {"scores": {"demo_exact": 0.2 * (i + 1)}}
                               for i, r in enumerate(runs[:3])},
                              details={"scorers": ["demo_exact"]})
    store.update_sweep_details(sweep.id, preflight=pre, evaluation_id=ev.id, scorer="demo_exact")
    return {"sweep": sweep, "runs": runs}


def app_for(store, engine, tmp_path) -> TuiApp:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return TuiApp(store=store, engine=engine,
                  settings=Settings(home=home, refresh_interval=0, poll_interval=0))


@pytest.mark.anyio
async def test_palette_opens_sweeps_and_the_charts_show_the_runs(store, engine, tmp_path):
    world = add_sweep(store)
    app = app_for(store, engine, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        hits = [hit async for hit in TuneloopCommands(app.screen).search("sweeps: compare")]
        assert hits
        app.call_later(hits[0].command)
        await settle(pilot, lambda: isinstance(app.screen, SweepsScreen) and app.screen.rows)
        screen = app.screen
        assert screen.sweep.id == world["sweep"].id
        table = screen.query_one("#sweep-runs")
        assert table.row_count == 4
        assert [str(c) for c in table.get_row(str(world["runs"][3].id))][:5] == [
            str(world["runs"][3].id), "queued", "full", "–", "3.71M"]
        assert str(table.get_row(str(world["runs"][3].id))[5]) == "≈74"  # pre-flight estimate
        assert str(table.get_row(str(world["runs"][1].id))[8]) == "0.400"
        rank = screen.query_one("#chart-rank").render().plain
        assert "trainable parameters vs LoRA rank" in rank and "313K" in rank
        bars = screen.query_one("#chart-methods").render().plain
        assert "per method" in bars and "params" in bars and "score" in bars
        legend = str(screen.query_one("#chart-legend").render())
        assert "1 lora r4" in legend and "3 lora r16" in legend and "4 full" in legend
        await pilot.press("e")
        await settle(pilot, lambda: len(screen.saved) == 3)
        folder = tmp_path / "home" / "reports" / f"sweep-{world['sweep'].id}"
        assert sorted(p.name for p in folder.iterdir()) == ["methods.svg", "params-vs-rank.svg",
                                                            "screen.svg"]
        rank_svg = ET.parse(folder / "params-vs-rank.svg").getroot()
        titles = [t.text for t in rank_svg.iter("{http://www.w3.org/2000/svg}title")]
        assert titles == ["lora r=4: 78,592", "lora r=8: 156,672", "lora r=16: 312,832"]
        bars_svg = ET.parse(folder / "methods.svg").getroot()
        labels = [t.text for t in bars_svg.iter("{http://www.w3.org/2000/svg}title")]
        assert "full: 3.71M" in labels and "lora r16: 0.60" in labels
        await pilot.press("escape")
        await settle(pilot, lambda: not isinstance(app.screen, SweepsScreen))


@pytest.mark.anyio
async def test_no_sweeps_says_how_to_start_one(store, engine, tmp_path):
    app = app_for(store, engine, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        open_sweeps(app)
        await settle(pilot, lambda: isinstance(app.screen, SweepsScreen))
        screen = app.screen
        await settle(pilot, lambda: screen.query_one("#sweeps-empty").display)
        assert "tuneloop sweep --config" in EMPTY
        assert not screen.query_one("#sweeps-body").display
        await pilot.press("e")  # nothing to save: says so, writes nothing
        assert not (tmp_path / "home" / "reports").exists()


def test_sweeps_snapshot(snap_compare, store, engine, tmp_path):
    add_sweep(store)
    app = app_for(store, engine, tmp_path)

    async def run_before(pilot):
        open_sweeps(app)
        await settle(pilot, lambda: isinstance(app.screen, SweepsScreen) and app.screen.rows)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
