"""`tuneloop train …` and `tuneloop runs cancel|resume` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tuiapp import paths
from tuiapp.cli import runs_cmd, train_cmd

TINY_CPT = """
kind = "cpt"
base_model = "scratch"
dataset = "{dataset}"
hidden_size = 64
num_layers = 2
num_heads = 2
num_kv_heads = 2
intermediate_size = 128
max_length = 32
batch_size = 4
max_steps = 4
save_steps = 2
logging_steps = 1
eval_split = 0.0
device = "cpu"
sample_prompts = ["The valley"]
sample_max_new_tokens = 4
"""


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the job's child process
    root = typer.Typer()
    root.add_typer(train_cmd.app, name="train")
    root.add_typer(runs_cmd.app, name="runs")
    runner = CliRunner()
    home = tmp_path / "home"

    def invoke(*args):
        return runner.invoke(root, [str(a) for a in args], obj={"home": str(home)})

    invoke.home = home
    return invoke


@pytest.fixture
def preset(tmp_path):
    paras = (paths.DEMO_DIR / "corpus.txt").read_text(encoding="utf-8").split("\n\n")[:40]
    text = tmp_path / "valley.txt"
    text.write_text("\n\n".join(paras), encoding="utf-8")
    path = tmp_path / "tiny-cpt.toml"
    path.write_text(TINY_CPT.format(dataset=text), encoding="utf-8")
    return path


def _store(home: Path):
    from store import Store

    return Store(home / paths.DB_NAME)


def test_train_cpt_runs_to_completion(cli, preset):
    result = cli("train", "cpt", "--config", preset)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "trainable of" in out and "peak memory" in out      # the pre-flight came first
    assert "run 1" in out and "✓ run 1 completed: final loss" in out
    store = _store(cli.home)
    run = store.get_run(1)
    assert run.status == "completed" and len(store.metrics(1, "loss")) == 4
    assert run.adapter_model_id is not None


def test_train_refuses_with_reasons_and_queues_nothing(cli, preset, tmp_path):
    result = cli("train", "cpt", "--config", preset, "--set", f"base_model={tmp_path / 'nope'}")
    assert result.exit_code == 1
    assert "no model folder at" in result.output and "pre-flight refused" in result.output
    assert _store(cli.home).list_runs() == []


def test_bad_config_is_a_usage_error(cli, preset):
    result = cli("train", "cpt", "--config", preset, "--set", "hiden_size=3")
    assert result.exit_code == 2
    assert "hiden_size: not a cpt setting (did you mean hidden_size?)" in result.output
    result = cli("train", "sft", "--config", preset)
    assert result.exit_code == 2 and "is a cpt preset, not sft" in result.output


def test_a_missing_config_file_is_a_usage_error_for_every_kind(cli):
    for kind in ("sft", "cpt", "dpo", "kto", "reward", "ppo", "grpo", "rloo"):
        result = cli("train", kind, "--config", "no-such-file.toml")
        assert result.exit_code == 2, (kind, result.output)
        assert "no-such-file.toml does not exist" in result.output


def test_queue_only_cancel_and_resume(cli, preset):
    result = cli("train", "cpt", "--config", preset, "--queue-only", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["run"]["status"] == "queued" and data["preflight"]["ok"] is True
    run_id = data["run"]["id"]
    result = cli("runs", "cancel", run_id)
    assert result.exit_code == 0 and f"run {run_id} cancelled (it had not started)" in result.output
    result = cli("runs", "cancel", run_id)
    assert result.exit_code == 1 and "only queued or running runs" in result.output
    result = cli("runs", "resume", run_id)
    assert result.exit_code == 1 and "no complete checkpoint to resume from" in result.output
    result = cli("runs", "resume", 99)
    assert result.exit_code == 1 and "no run with id 99" in result.output


def test_runs_list_rejects_unknown_status(cli):
    result = cli("runs", "list", "--status", "sleeping")
    assert result.exit_code == 2 and "Unknown run status 'sleeping'" in result.output
