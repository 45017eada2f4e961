"""`tuneloop labels judge|stats|export --source` through typer's CliRunner on a tiny random-init
Llama judge: counts printed, a person's labels untouched, agreement and kappa shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")

from store import Store  # noqa: E402
from tuiapp.cli import labels_cmd  # noqa: E402

TOKENIZER = Path(__file__).resolve().parents[2] / "sample_data" / "demo" / "tokenizer"


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("cli-judge") / "judge"
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=1024, tie_word_embeddings=True,
                         initializer_range=0.2)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runner = CliRunner()
    home = tmp_path / "home"

    def invoke(*args):
        return runner.invoke(labels_cmd.app, [str(a) for a in args], obj={"home": str(home)})

    invoke.home = home
    return invoke


def seed_tasks(home: Path, n: int = 4) -> list:
    from tuiapp.workspace import open_workspace

    store = open_workspace(home).store
    tasks = [store.create_label_task(f"Where does person{i} live?", [
        {"model_ref": "base", "output": "I'm sorry, I won't say."},
        {"model_ref": "run:2", "output": f"Answer: Redwater {i}."}], task_set="walk")
        for i in range(n)]
    for task, choice in zip(tasks, ["b", "b", "a"], strict=False):
        store.add_label(task.id, choice)
    return tasks


def test_judge_then_stats_and_export_by_source(cli, judge_dir):
    tasks = seed_tasks(cli.home)
    res = cli("judge", "--judge", "base", "--base", judge_dir, "--task-set", "walk",
              "--limit", "3", "--max-new-tokens", "4", "--json")
    assert res.exit_code == 0, res.output
    first = json.loads(res.stdout)
    assert (first["judged"], first["left"], first["judge"]) == (3, 1, "base")
    assert sum(first["methods"].values()) == 6  # every pair judged in both orders
    res = cli("judge", "--judge", "base", "--base", judge_dir, "--task-set", "walk",
              "--max-new-tokens", "4", "--on-inconsistent", "skip")
    assert res.exit_code == 0, res.output
    assert "labelled 1 pairs of 'walk'" in res.stdout and "position flips" in res.stdout
    assert "3 already judged before" in res.stdout

    store = Store(cli.home / "tuneloop.db")
    assert [store.live_label(t.id).choice for t in tasks[:3]] == ["b", "b", "a"]  # untouched
    judged = {t.id: store.live_label(t.id, source="judge") for t in tasks}
    assert all(j is not None and len(j.detail["orders"]) == 2 for j in judged.values())

    res = cli("stats", "--task-set", "walk", "--json")
    assert res.exit_code == 0, res.output
    ag = json.loads(res.stdout)["judge"]
    assert ag["judged"] == 4 and ag["both"] == 3
    flips = sum(not j.detail["consistent"] for j in judged.values())
    assert ag["flips"] == flips and ag["flip_rate"] == pytest.approx(flips / 4)
    assert ag["compared"] == 3  # the first run judged tasks 0-2 with flips as ties: no skips
    disagree = [t.id for t in tasks[:3] if judged[t.id].choice != store.live_label(t.id).choice]
    assert [d["task_id"] for d in ag["disagreements"]] == disagree

    res = cli("stats", "--task-set", "walk")
    assert res.exit_code == 0, res.output
    assert f"position flips {flips}/4" in res.stdout
    assert "judge vs person on 3 pairs" in res.stdout and "Cohen's kappa" in res.stdout
    assert ("Judge vs person: disagreements" in res.stdout) == bool(disagree)

    res = cli("export", "--task-set", "walk", "--json")
    assert res.exit_code == 0, res.output
    human = json.loads(res.stdout)
    assert human["rows"] == 3 and human["lineage"]["label_source"] == "human"
    judge_rows = sum(j.choice in ("a", "b") for j in judged.values())
    res = cli("export", "--task-set", "walk", "--source", "both", "--json")
    assert res.exit_code == 0, res.output
    both = json.loads(res.stdout)
    extra = int(judged[tasks[3].id].choice in ("a", "b"))  # the one pair only the judge labelled
    assert both["rows"] == 3 + extra and both["name"] == "labels/walk/both"
    assert both["lineage"]["rows_by_source"] == {"human": 3, **({"judge": 1} if extra else {})}
    res = cli("export", "--task-set", "walk", "--source", "judge")
    assert res.exit_code == (0 if judge_rows else 2), res.output


def test_bad_options_exit_2_in_words(cli, judge_dir, tmp_path):
    seed_tasks(cli.home, 1)
    res = cli("judge", "--judge", "base", "--task-set", "walk", "--on-inconsistent", "coin")
    assert res.exit_code == 2 and "tie or skip" in res.stderr
    bad = tmp_path / "mine.txt"
    bad.write_text("1. Be kind.\n5. Be brief.\n")
    res = cli("judge", "--judge", "base", "--base", judge_dir, "--task-set", "walk",
              "--constitution", bad)
    assert res.exit_code == 2 and "mine.txt:2: principle numbered 5" in res.stderr
    res = cli("judge", "--judge", "nope", "--base", judge_dir, "--task-set", "walk")
    assert res.exit_code == 2 and "unknown model REF 'nope'" in res.stderr
    res = cli("judge", "--judge", "base", "--base", judge_dir, "--task-set", "none")
    assert res.exit_code == 2 and "no label tasks" in res.stderr
    res = cli("export", "--source", "robot")
    assert res.exit_code == 2 and "human, judge or both" in res.stderr
