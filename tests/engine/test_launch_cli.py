"""`tuneloop train ... --print-launch`: the exact accelerate command and config for a group
over several machines, printed after pre-flight; a job folder is written and nothing queued."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tuiapp import paths
from tuiapp.cli import train_cmd

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
eval_split = 0.0
device = "cpu"
num_processes = 2
"""


@pytest.fixture
def cli(tmp_path):
    root = typer.Typer()
    root.add_typer(train_cmd.app, name="train")
    root.add_typer(typer.Typer(), name="other")  # a group, so `train` stays a sub-command
    home = tmp_path / "home"

    def invoke(*args):
        return CliRunner().invoke(root, [str(a) for a in args], obj={"home": str(home)})

    invoke.home = home
    return invoke


@pytest.fixture
def preset(tmp_path):
    paras = (paths.DEMO_DIR / "corpus.txt").read_text(encoding="utf-8").split("\n\n")[:20]
    text = tmp_path / "valley.txt"
    text.write_text("\n\n".join(paras), encoding="utf-8")
    path = tmp_path / "tiny-cpt.toml"
    path.write_text(TINY_CPT.format(dataset=text), encoding="utf-8")
    return path


def test_print_launch_for_two_machines(cli, preset):
    result = cli("train", "cpt", "--config", preset, "--print-launch", "--num-machines", 2,
                 "--machine-rank", 1, "--main-address", "10.1.2.3", "--main-port", 29555,
                 "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output[result.output.index("{"):])
    cmd = out["command"]
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and "--multi_gpu" in cmd
    pairs = {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("--")}
    assert pairs["--num_processes"] == "4" and pairs["--num_machines"] == "2"
    assert pairs["--machine_rank"] == "1" and pairs["--main_process_ip"] == "10.1.2.3"
    assert pairs["--main_process_port"] == "29555"
    folder = Path(out["folder"])
    job = json.loads((folder / "job.json").read_text())
    assert job["run_id"] is None and job["config"]["num_processes"] == 2
    assert cmd[-1] == str(folder)
    assert "machine_rank: 1" in out["accelerate_config"]
    assert (folder / "accelerate.yaml").read_text() == out["accelerate_config"]
    from store import Store

    with Store(cli.home / paths.DB_NAME) as store:
        assert store.list_runs() == []  # printed, not queued


def test_print_launch_plain_text_is_a_shell_line(cli, preset):
    result = cli("train", "cpt", "--config", preset, "--print-launch")
    assert result.exit_code == 0, result.output
    assert "global batch" in result.output and "8 = 4 per device x 2 process(es)" in result.output
    line = next(x for x in result.output.splitlines() if "accelerate.commands.launch" in x)
    argv = shlex.split(line)
    assert argv[argv.index("--num_processes") + 1] == "2" and "--machine_rank" not in argv
    assert "# not queued" in result.output


def test_print_launch_needs_the_main_address(cli, preset):
    result = cli("train", "cpt", "--config", preset, "--print-launch", "--num-machines", 2)
    assert result.exit_code == 2 and "--main-address" in result.output
