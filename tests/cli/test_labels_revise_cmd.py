"""`tuneloop labels revise` through typer's CliRunner with the demo base model: per-prompt
progress, the versions printed and stored with lineage, bad input refused with exit 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")

from store import Store  # noqa: E402
from tuiapp import paths  # noqa: E402
from tuiapp.cli import labels_cmd  # noqa: E402
from tuiapp.engine import data  # noqa: E402


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    runner = CliRunner()
    home = tmp_path / "home"

    def invoke(*args):
        return runner.invoke(labels_cmd.app, [str(a) for a in args], obj={"home": str(home)})

    invoke.home = home
    return invoke


def test_revise_prints_progress_and_stores_versions_with_lineage(cli, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Where does person{i} live?"}) + "\n"
                               for i in range(3)))
    common = ("--model", "base", "--base", paths.DEMO_BASE_MODEL, "--prompts", prompts,
              "--max-new-tokens", "8", "--device", "cpu")
    res = cli("revise", *common, "--limit", "2", "--principles", "1,2")
    assert res.exit_code == 0, res.output
    assert "[1/2] principle " in res.stderr and "[2/2] principle " in res.stderr
    assert "revised" in res.stdout and "of 2 answers" in res.stdout

    res = cli("revise", *common, "--limit", "2", "--principles", "1,2", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["asked"] == 2 and out["kept"] + sum(out["left_out"].values()) == 2
    assert out["prompts_sha256"] == data.content_hash(prompts)
    store = Store(cli.home / "tuneloop.db")
    sft = store.get_dataset_version(out["sft_version"]["id"])
    assert sft.kind == "sft" and sft.source == "revise"
    assert {r["principle"] for r in sft.lineage["rows"]} <= {"1", "2"}
    assert sft.lineage["model"] == "base" and sft.lineage["constitution_sha256"]

    for bad in (("--principles", "1,x"), ("--principles", "7"), ("--limit", "0")):
        res = cli("revise", *common, *bad)
        assert res.exit_code == 2, (bad, res.output)
    res = cli("revise", "--model", "run:99", "--prompts", prompts)
    assert res.exit_code == 2 and "99" in res.output
