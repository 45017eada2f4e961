"""Several processes per job (issue 21), on CPU with gloo: the accelerate launch command, the
config and pre-flight rules, and real 2-rank SFT runs through the runner — the same per-step
loss as one process with twice the per-device batch, cancel, a rank killed with SIGKILL, and
resume refusing another world size.

The 2-rank tests start real process groups (two ranks of a tiny Llama each): marked slow."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tuiapp import paths

SFT = "tuiapp.engine.train.sft:train"
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
             "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(autouse=True)
def _one_thread():
    torch = pytest.importorskip("torch")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    (h / "runs").mkdir(parents=True)
    return h


@pytest.fixture
def store(home):
    from store import Store

    s = Store(home / "tuneloop.db")
    yield s
    s.close()


@pytest.fixture(scope="module")
def sft_file(tmp_path_factory) -> Path:
    lines = (paths.DEMO_DIR / "sft.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    path = tmp_path_factory.mktemp("data") / "small_sft.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sft_config(model, data, **kw):
    from tuiapp.engine.train.config import SFTJobConfig

    base = dict(base_model=str(model), dataset=str(data), method="lora", max_steps=8,
                batch_size=2, learning_rate=1e-2, warmup_ratio=0.0, logging_steps=1,
                save_steps=100, eval_split=0.0, sample_prompts=[], max_length=64, lora_r=4,
                lora_alpha=8, lora_dropout=0.0, device="cpu", dtype="fp32")
    base.update(kw)
    return SFTJobConfig(**base)


def make_runner(store, home):
    from tuiapp.engine.jobs.runner import Runner

    return Runner(store, home, algorithms={"sft": SFT}, env=CHILD_ENV)


def losses(store, run_id):
    return {m.step: m.value for m in store.metrics(run_id, "loss")}


def wait_for(predicate, timeout=180.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------- command, config, pre-flight


def test_launch_command_is_one_accelerate_group(tmp_path, sft_file):
    from tuiapp.engine.jobs.launch import CHILD_MODULE, launch_command

    cfg = sft_config("demo", sft_file, num_processes=2)
    cmd = launch_command(cfg, tmp_path, "/py", device="cpu")
    assert cmd[:3] == ["/py", "-m", "accelerate.commands.launch"]
    assert "--multi_gpu" in cmd and "--cpu" not in cmd  # the torchrun path starts N ranks
    assert cmd[cmd.index("--num_processes") + 1] == "2"
    assert cmd[cmd.index("--main_process_port") + 1] == "0"  # a free port per group
    assert cmd[-3:] == ["--module", CHILD_MODULE, str(tmp_path)]
    # A launch over two machines names the machine rank and rank 0's address.
    multi = launch_command(cfg, tmp_path, "/py", num_machines=2, machine_rank=1,
                           main_address="10.0.0.1", main_port=29555, device="cuda")
    assert multi[multi.index("--num_processes") + 1] == "4"
    assert multi[multi.index("--machine_rank") + 1] == "1"
    assert multi[multi.index("--main_process_ip") + 1] == "10.0.0.1"
    assert multi[multi.index("--main_process_port") + 1] == "29555"
    with pytest.raises(ValueError, match="main address"):
        launch_command(cfg, tmp_path, num_machines=2)


def test_launch_flags_follow_the_strategy(tmp_path, sft_file):
    from tuiapp.engine.jobs.launch import accelerate_yaml, launch_command

    fsdp = sft_config("demo", sft_file, num_processes=4, distributed="fsdp", device="cuda",
                      dtype="bf16")
    cmd = launch_command(fsdp, tmp_path, device="cuda")
    assert "--use_fsdp" in cmd and "--multi_gpu" not in cmd
    assert cmd[cmd.index("--mixed_precision") + 1] == "bf16"  # auto follows dtype
    ds = sft_config("demo", sft_file, num_processes=2, distributed="deepspeed", zero_stage=3,
                    device="cuda", mixed_precision="fp16")
    cmd = launch_command(ds, tmp_path, device="cuda")
    assert cmd[cmd.index("--zero_stage") + 1] == "3"
    assert cmd[cmd.index("--mixed_precision") + 1] == "fp16"
    text = accelerate_yaml(ds, num_machines=2, machine_rank=0, main_address="h0")
    assert "distributed_type: DEEPSPEED" in text and "zero_stage: 3" in text
    assert "num_processes: 4" in text and "main_process_ip: h0" in text


@pytest.mark.parametrize("fields, field, words", [
    ({"num_processes": 0}, "num_processes", "at least 1"),
    ({"num_processes": 2, "distributed": "fsdp"}, "distributed", "needs CUDA"),
    ({"num_processes": 2, "mixed_precision": "fp16"}, "mixed_precision", "fp16 needs a CUDA"),
    ({"num_processes": 2, "device": "cuda", "method": "qlora", "distributed": "fsdp"},
     "distributed", "qlora runs under ddp only"),
    ({"zero_stage": 4}, "zero_stage", "0, 1, 2 or 3"),
    ({"num_processes": 2, "accelerate_config": "conf.txt"}, "accelerate_config", ".yaml"),
])
def test_config_refuses_in_words(sft_file, fields, field, words):
    from tuiapp.engine.train.config import ConfigError

    with pytest.raises(ConfigError, match=words) as err:
        sft_config("demo", sft_file, **fields)
    assert err.value.field == field


def test_every_kind_has_the_fields_and_ppo_refuses_several():
    from tuiapp.engine.train.config import CONFIG_CLASSES, ConfigError, PPOJobConfig, field_help

    for cls in CONFIG_CLASSES.values():
        names = {f["name"] for f in field_help(cls)}
        assert {"num_processes", "distributed", "zero_stage", "mixed_precision",
                "accelerate_config"} <= names, cls
    with pytest.raises(ConfigError, match="single-process loop"):
        PPOJobConfig(dataset="x", num_processes=2, device="cpu")


def test_preflight_global_batch_and_device_refusal(store, home, tiny_model, sft_file,
                                                   monkeypatch):
    from rich.console import Console

    from tuiapp.engine.jobs.preflight import preflight

    report = preflight(sft_config(tiny_model, sft_file, num_processes=2, grad_accum=3), store,
                       home)
    assert report.ok, report.refusals
    d = report.distributed
    assert (d["global_batch"], d["num_processes"], d["backend"]) == (12, 2, "gloo")
    console = Console(width=160, record=True)
    console.print(report.render())
    assert "12 = 2 per device x 2 process(es) x 3 accumulation" in console.export_text()
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    report = preflight(sft_config(tiny_model, sft_file, num_processes=3), store, home)
    assert any("3 CPU processes need 3 cores but this machine has 2" in r
               for r in report.refusals), report.refusals


class _Report:
    def __init__(self, device):
        self.device, self.refusals, self.steps, self.distributed = device, [], None, {}


def test_more_processes_than_gpus_is_refused(sft_file, monkeypatch):
    from tuiapp.engine.jobs import launch

    monkeypatch.setattr(launch, "visible_gpus", lambda: 1)
    report = _Report("cuda")
    launch.check_processes(report, sft_config("demo", sft_file, num_processes=2, device="cuda"))
    assert report.refusals and "2 processes need 2 GPUs but 1 is visible" in report.refusals[0]


def test_steps_count_the_examples_every_rank_takes(sft_file):
    from tuiapp.engine.jobs.launch import check_processes

    report = _Report("cpu")
    report.steps = 9  # one process: 9 steps of batch_size x grad_accum examples
    check_processes(report, sft_config("demo", sft_file, num_processes=2, max_steps=-1))
    assert report.steps == 5 and report.distributed["global_batch"] == 4


def test_sharded_memory_per_device(sft_file):
    from tuiapp.engine.jobs.launch import share_memory

    parts = {"weights_bytes": 800, "grads_bytes": 400, "optimizer_bytes": 1600,
             "activations_bytes": 200}
    for strategy, stage, want in (("ddp", 2, 3000), ("deepspeed", 1, 2200),
                                  ("deepspeed", 2, 2000), ("deepspeed", 3, 1600),
                                  ("fsdp", 2, 1600)):
        report = _Report("cuda")
        report.memory = {**parts, "estimate_bytes": 3000}
        share_memory(report, sft_config("demo", sft_file, num_processes=2, device="cuda",
                                        distributed=strategy, zero_stage=stage))
        assert report.memory["estimate_bytes"] == want, (strategy, stage)


def test_failure_names_the_rank_from_the_agent_summary(tmp_path):
    from tuiapp.engine.jobs.launch import group_failure

    (tmp_path / "logs").mkdir()
    (tmp_path / "child.log").write_text(
        "ChildFailedError:\n====\nRoot Cause (first observed failure):\n[0]:\n"
        "  time      : 2026-12-04_21:00:00\n  host      : box\n  rank      : 1 (local_rank: 1)\n"
        "  exitcode  : -9 (pid: 4242)\n  error_file: <N/A>\n")
    msg = group_failure(tmp_path, 1)
    assert msg.startswith("rank 1 of the process group was killed by SIGKILL")
    assert "rank-1.stderr.log" in msg


# ---------------------------------------------------------------- real process groups


def _run(store, home, cfg, timeout=600):
    runner = make_runner(store, home)
    run = runner.submit(cfg)
    runner.start_next()
    return runner, runner.wait(run.id, interval=0.3, timeout=timeout)


@pytest.mark.slow
def test_two_ranks_match_one_process_with_twice_the_batch(store, home, tiny_model, sft_file):
    runner, two = _run(store, home, sft_config(tiny_model, sft_file, num_processes=2,
                                               batch_size=2))
    assert two.status == "completed", two.error
    assert runner.progress(two.id)["world_size"] == 2
    _, one = _run(store, home, sft_config(tiny_model, sft_file, num_processes=1, batch_size=4))
    assert one.status == "completed", one.error
    a, b = losses(store, two.id), losses(store, one.id)
    assert sorted(a) == sorted(b) == list(range(1, 9))
    diffs = [abs(a[s] - b[s]) for s in a]
    print(f"sft 2 ranks vs 1 process: max |loss diff| over 8 steps = {max(diffs):.2e}")
    assert max(diffs) < 2e-3, (a, b)
    assert a[8] < a[1]  # it trained
    out = Path(two.output_dir)
    # One event stream (rank 0's), every rank's stderr and pid kept, the adapter saved once.
    assert {p.name for p in (out / "logs").glob("rank-*.stderr.log")} == {
        "rank-0.stderr.log", "rank-1.stderr.log"}
    ranks = [json.loads((out / "logs" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["exit"] for r in ranks] == [0, 0]
    assert (out / "final" / "adapter_model.safetensors").exists()
    assert len(store.metrics(two.id, "loss")) == 8


@pytest.mark.slow
def test_killing_one_rank_fails_the_run_naming_it(store, home, tiny_model, sft_file):
    runner = make_runner(store, home)
    run = runner.submit(sft_config(tiny_model, sft_file, num_processes=2, max_steps=100000,
                                   save_steps=100000))
    runner.start_next()
    logs = Path(run.output_dir) / "logs"
    wait_for(lambda: (runner.poll() or True) and runner.progress(run.id).get("step", 0) >= 2,
             what="two steps")
    victim = json.loads((logs / "rank-1.json").read_text())["pid"]
    survivor = json.loads((logs / "rank-0.json").read_text())["pid"]
    os.kill(victim, signal.SIGKILL)
    done = runner.wait(run.id, interval=0.3, timeout=180)
    assert done.status == "failed"
    assert done.error.startswith("rank 1 of the process group was killed by SIGKILL"), done.error
    from tuiapp.engine.jobs.launch import _alive

    assert not _alive(survivor) and not _alive(run.pid or done.pid)


@pytest.mark.slow
def test_cancel_stops_every_rank_and_resume_keeps_the_world_size(store, home, tiny_model,
                                                                 sft_file):
    runner = make_runner(store, home)
    run = runner.submit(sft_config(tiny_model, sft_file, num_processes=2, max_steps=100000,
                                   save_steps=100000))
    runner.start_next()
    wait_for(lambda: (runner.poll() or True) and runner.progress(run.id).get("step", 0) >= 2,
             what="two steps")
    runner.cancel(run.id)
    done = runner.wait(run.id, interval=0.3, timeout=180)
    assert done.status == "cancelled", done.error
    out = Path(run.output_dir)
    ckpts = sorted(out.glob("checkpoint-*"))
    assert len(ckpts) == 1 and (ckpts[0] / "tuneloop-complete.json").exists()
    assert sorted(p.name for p in ckpts[0].glob("rng_state_*.pth")) == [
        "rng_state_0.pth", "rng_state_1.pth"]
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "checkpoint" for e in events) == 1  # written and announced once
    ranks = [json.loads((out / "logs" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["exit"] for r in ranks] == [3, 3]  # both ranks stopped cooperatively
    with pytest.raises(ValueError, match="written by 2 process"):
        runner.resume(run.id, num_processes=1)
    again = runner.resume(run.id)
    assert again.config["num_processes"] == 2 and again.resumed_from == run.id


@pytest.mark.slow
def test_a_killed_launcher_leaves_no_rank_behind(store, home, tiny_model, sft_file):
    from tuiapp.engine.jobs.launch import _alive

    runner = make_runner(store, home)
    run = runner.submit(sft_config(tiny_model, sft_file, num_processes=2, max_steps=100000,
                                   save_steps=100000))
    started = runner.start_next()
    logs = Path(run.output_dir) / "logs"
    wait_for(lambda: (runner.poll() or True) and runner.progress(run.id).get("step", 0) >= 1,
             what="a step")
    ranks = [json.loads((logs / f"rank-{r}.json").read_text())["pid"] for r in (0, 1)]
    os.kill(started.pid, signal.SIGKILL)  # torchrun's agent gets no chance to stop its workers
    done = runner.wait(run.id, interval=0.3, timeout=120)
    assert done.status == "interrupted" and "launcher was killed by SIGKILL" in done.error
    wait_for(lambda: not any(_alive(p) for p in ranks), timeout=30, what="ranks stopped")
