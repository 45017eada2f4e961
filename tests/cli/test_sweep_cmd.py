"""`tuneloop sweep …` through typer's CliRunner: refusals, queue-only, and one real --run."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from tuiapp import paths
from tuiapp.cli import runs_cmd, sweep_cmd

torch.set_num_threads(1)
PRESET = paths.PRESETS_DIR / "demo-sft-lora.toml"


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the jobs' child processes
    root = typer.Typer()
    root.add_typer(sweep_cmd.app, name="sweep")
    root.add_typer(runs_cmd.app, name="runs")
    runner = CliRunner()
    home = tmp_path / "home"

    def invoke(*args):
        return runner.invoke(root, [str(a) for a in args], obj={"home": str(home)})

    invoke.home = home
    return invoke


@pytest.fixture
def small(tmp_path):
    """A 32-row slice of the demo SFT data and 3 held-out prompts: every step is a few tokens."""
    rows = (paths.DEMO_DIR / "sft.jsonl").read_text(encoding="utf-8").splitlines()[:32]
    data = tmp_path / "sft-slice.jsonl"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    held = (paths.DEMO_DIR / "eval_heldout.jsonl").read_text(encoding="utf-8").splitlines()[:3]
    prompts = tmp_path / "held.jsonl"
    prompts.write_text("\n".join(held) + "\n", encoding="utf-8")
    return data, prompts


def _store(home):
    from store import Store

    return Store(home / paths.DB_NAME)


def test_unknown_grid_key_and_missing_grid_are_usage_errors(cli):
    result = cli("sweep", "--config", PRESET, "--grid", "rank=4,8")
    assert result.exit_code == 2
    assert "--grid rank: not a sft setting; the keys a sft sweep can vary are:" in result.output
    assert "lora_r" in result.output
    result = cli("sweep", "--config", PRESET)
    assert result.exit_code == 2 and "at least one --grid" in result.output
    result = cli("sweep", "--config", PRESET, "--grid", "method=lora,sideways")
    assert result.exit_code == 2 and "point method=sideways: method: 'sideways' is not one of" in result.output


def test_queue_only_sweep_records_runs_and_shows_estimates(cli, small):
    data, prompts = small
    result = cli("sweep", "--config", PRESET, "--set", f"dataset={data}", "--grid", "lora_r=4,8",
                 "--eval", prompts, "--name", "ranks")
    assert result.exit_code == 0, result.output
    assert "sweep 1: 2 runs queued (1, 2)" in result.output and "queued; they start" in result.output
    store = _store(cli.home)
    sweep = store.get_sweep(1)
    assert sweep.name == "ranks" and sweep.grid == [["lora_r", [4, 8]]]
    assert sweep.prompts == str(prompts) and sweep.config_path == str(PRESET)
    runs = store.sweep_runs(1)
    assert [(r.status, r.config["lora_r"]) for r in runs] == [("queued", 4), ("queued", 8)]
    result = cli("sweep", "show", 1, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["runs"]
    assert [r["memory_source"] for r in rows] == ["pre-flight", "pre-flight"]
    assert rows[1]["trainable_params"] > rows[0]["trainable_params"]
    result = cli("sweep", "show", 1)
    assert "≈" in result.output and "pre-flight's estimate" in result.output
    result = cli("sweep", "list")
    assert "ranks" in result.output and "lora_r=4,8" in result.output
    assert cli("sweep", "show", 7).exit_code == 1


def test_a_refused_point_queues_nothing(cli, small, tmp_path):
    data, _ = small
    result = cli("sweep", "--config", PRESET, "--set", f"dataset={data}",
                 "--grid", f"base_model=demo,{tmp_path / 'nope'}")
    assert result.exit_code == 1
    assert "nothing of the sweep was queued" in result.output
    assert f"base_model={tmp_path / 'nope'}: " in result.output
    assert _store(cli.home).list_runs() == []


def test_an_unreadable_prompt_set_is_refused_before_training(cli, small, tmp_path):
    data, _ = small
    result = cli("sweep", "--config", PRESET, "--set", f"dataset={data}", "--grid", "lora_r=4",
                 "--eval", tmp_path / "none.jsonl", "--run")
    assert result.exit_code == 2 and "--eval: prompt set" in result.output
    assert _store(cli.home).list_runs() == []


@pytest.mark.slow
def test_sweep_run_trains_each_point_and_scores_them(cli, small):
    data, prompts = small
    result = cli("sweep", "--config", PRESET, "--set", f"dataset={data}", "--set", "max_steps=3",
                 "--set", "logging_steps=1", "--set", "save_steps=50", "--set", "eval_split=0",
                 "--set", "sample_prompts=Hi", "--set", "train_template_tokens=false",
                 "--grid", "lora_r=4,8", "--eval", prompts, "--run")
    assert result.exit_code == 0, result.output
    assert "sweep 1: run 1 of 2 (lora_r=4)" in result.output
    assert "sweep 1: run 2 of 2 (lora_r=8)" in result.output
    assert "scored 2 runs on 3 prompts" in result.output
    rows = json.loads(cli("sweep", "show", 1, "--json").stdout)["runs"]
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert {r["trainable_source"] for r in rows} == {"run"}   # counted by the job itself
    assert {r["memory_source"] for r in rows} == {"run"}
    a, b = rows
    assert b["trainable_params"] == 2 * a["trainable_params"]  # no token rows: pure r * sum
    for r in rows:
        assert r["final_loss"] > 0 and r["tokens_per_s"] > 0 and r["peak_memory_mb"] > 0
        assert r["score"] is not None and "demo_format" in r["scores"]
    store = _store(cli.home)
    ev = store.get_evaluation(store.get_sweep(1).details["evaluation_id"])
    assert set(ev.run_ids) == {a["run_id"], b["run_id"]}
