"""The job runner end to end: real child processes training a tiny random Llama (cpt from
scratch, fp32 on CPU) on a few paragraphs of the demo corpus; pre-flight and resolution.

Test-only algorithms live at the bottom of this file; the child loads them by file path
(``/path/test_runner.py:function``), the same mechanism a plug-in algorithm would use.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tuiapp import paths

HERE = Path(__file__).resolve()
CPT = "tuiapp.engine.train.cpt:train"
TINY = dict(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=128,
            max_length=32, batch_size=4, logging_steps=1, eval_split=0.0, device="cpu",
            sample_prompts=["The valley"], sample_max_new_tokens=4, learning_rate=1e-3)
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
             "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


# ---------------------------------------------------------------- fixtures


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
def text_file(tmp_path_factory):
    paras = (paths.DEMO_DIR / "corpus.txt").read_text(encoding="utf-8").split("\n\n")[:60]
    path = tmp_path_factory.mktemp("data") / "valley.txt"
    path.write_text("\n\n".join(paras), encoding="utf-8")
    return path


def cpt_config(text_file, **over):
    from tuiapp.engine.train.config import CPTJobConfig

    return CPTJobConfig(dataset=str(text_file), **{**TINY, **over})


def make_runner(store, home, **algos):
    from tuiapp.engine.jobs.runner import Runner

    return Runner(store, home, algorithms={"cpt": CPT, **algos}, env=CHILD_ENV)


def losses(store, run_id):
    return {m.step: m.value for m in store.metrics(run_id, "loss")}


def wait_for(predicate, timeout=60.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------- a run through the child


def test_run_completes_and_lands_in_the_store(store, home, text_file):
    runner = make_runner(store, home)
    run = runner.submit(cpt_config(text_file, max_steps=8, save_steps=4))
    assert run.status == "queued" and Path(run.output_dir) == home / "runs" / str(run.id)
    assert run.config["kind"] == "cpt" and run.config["max_steps"] == 8 and run.seed == 42
    env = run.environment
    assert env["versions"]["torch"] and env["versions"]["transformers"] and env["device"] == "cpu"
    assert env["dataset_hash"] == store.get_dataset_version(run.dataset_version_id).content_hash
    job = json.loads((Path(run.output_dir) / "job.json").read_text())
    assert job["algorithm"] == CPT and job["dataset_path"] and job["resume_from"] is None

    started = runner.start_next()
    assert started.id == run.id and started.status == "running" and started.pid
    done = runner.wait(run.id, interval=0.2, timeout=120)
    assert done.status == "completed", done.error
    assert sorted(losses(store, run.id)) == list(range(1, 9))
    names = {m.name for m in store.metrics(run.id)}
    assert {"loss", "learning_rate", "grad_norm", "tokens_per_s", "memory_mb"} <= names
    samples = store.list_generations(run_id=run.id)
    assert sorted(g.step for g in samples) == [4, 8]
    assert {g.model_ref for g in samples} == {f"run:{run.id}@4", f"run:{run.id}@8"}
    model = store.get_model(done.adapter_model_id)
    assert model.kind == "hf" and Path(model.path) == Path(run.output_dir) / "final"
    assert (Path(model.path) / "model.safetensors").exists()
    assert runner.progress(run.id)["step"] == 8
    # A second reader replays nothing twice.
    make_runner(store, home).poll()
    assert len(store.metrics(run.id, "loss")) == 8


def test_sft_lora_run_registers_its_adapter(store, home, tiny_model, tmp_path):
    from tuiapp.engine.jobs.runner import Runner
    from tuiapp.engine.train.config import SFTJobConfig

    lines = (paths.DEMO_DIR / "sft.jsonl").read_text(encoding="utf-8").splitlines()[:48]
    data = tmp_path / "sft_small.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = SFTJobConfig(base_model=str(tiny_model), dataset=str(data), method="lora", lora_r=4,
                       max_length=128, max_steps=4, save_steps=2, logging_steps=1, batch_size=4,
                       eval_split=0.0, device="cpu", sample_prompts=["Who are you?"],
                       sample_max_new_tokens=4)
    runner = Runner(store, home, env=CHILD_ENV)  # the real algorithm table
    run = runner.submit(cfg)
    runner.start_next()
    done = runner.wait(run.id, interval=0.2, timeout=120)
    assert done.status == "completed", done.error
    assert sorted(losses(store, run.id)) == [1, 2, 3, 4]
    adapter = store.get_model(done.adapter_model_id)
    assert adapter.kind == "adapter" and adapter.base_model_id == run.base_model_id
    assert store.get_model(run.base_model_id).path == str(tiny_model)
    assert (Path(adapter.path) / "adapter_config.json").exists()
    assert sorted(g.step for g in store.list_generations(run_id=run.id)) == [2, 4]


def test_queue_runs_in_submit_order_one_at_a_time(store, home, text_file):
    runner = make_runner(store, home)
    first = runner.submit(cpt_config(text_file, max_steps=3, save_steps=100, name="first"))
    second = runner.submit(cpt_config(text_file, max_steps=3, save_steps=100, name="second"))
    assert runner.start_next().id == first.id
    assert runner.start_next() is None                   # one running job per machine
    assert store.get_run(second.id).status == "queued"
    runner.wait(second.id, interval=0.2, timeout=180)    # wait() keeps the queue moving
    a, b = store.get_run(first.id), store.get_run(second.id)
    assert a.status == b.status == "completed"
    assert b.started_at >= a.finished_at


def test_cancel_queued_is_immediate(store, home, text_file):
    runner = make_runner(store, home)
    run = runner.submit(cpt_config(text_file, max_steps=3))
    assert runner.cancel(run.id).status == "cancelled"
    assert runner.start_next() is None
    with pytest.raises(ValueError, match="only queued or running"):
        runner.cancel(run.id)


def test_cancel_running_saves_a_resumable_checkpoint(store, home, text_file):
    from tuiapp.engine.context import latest_checkpoint

    runner = make_runner(store, home, cpt=f"{HERE}:slow_cpt")
    run = runner.submit(cpt_config(text_file, max_steps=40, save_steps=100))
    runner.start_next()
    wait_for(lambda: (runner.poll(), len(losses(store, run.id)) >= 2)[1], what="two steps")
    runner.cancel(run.id)
    done = runner.wait(run.id, interval=0.2, timeout=60)
    assert done.status == "cancelled" and done.error is None
    ckpt = latest_checkpoint(done.output_dir)
    assert ckpt is not None and 2 <= int(ckpt.name.split("-")[1]) < 40
    assert (ckpt / "optimizer.pt").exists()


@pytest.mark.slow  # two real trainings of 12 steps (~30 s on 2 cores)
def test_kill9_then_resume_follows_the_uninterrupted_trajectory(store, home, text_file):
    cfg = dict(max_steps=12, save_steps=4)
    runner = make_runner(store, home, cpt=f"{HERE}:slow_cpt")
    base = make_runner(store, home).submit(cpt_config(text_file, **cfg, name="straight"))
    make_runner(store, home).start_next()
    straight = make_runner(store, home).wait(base.id, interval=0.2, timeout=120)
    assert straight.status == "completed", straight.error

    victim = runner.submit(cpt_config(text_file, **cfg, name="victim"))
    runner.start_next()
    ckpt = Path(victim.output_dir) / "checkpoint-4" / "tuneloop-complete.json"
    wait_for(ckpt.exists, what="checkpoint-4")
    wait_for(lambda: (runner.poll(), max(losses(store, victim.id), default=0) >= 5)[1],
             what="step 5")
    os.kill(store.get_run(victim.id).pid, signal.SIGKILL)
    runner._procs[victim.id].wait()  # the old parent reaps; a new one must not see it alive

    fresh = make_runner(store, home)  # as if tuneloop started again after the kill
    changed = fresh.recover()
    assert [r.id for r in changed] == [victim.id]
    row = store.get_run(victim.id)
    assert row.status == "interrupted" and f"tuneloop runs resume {victim.id}" in row.error

    resumed = fresh.resume(victim.id)
    assert resumed.resumed_from == victim.id and resumed.config == row.config
    assert (Path(resumed.output_dir) / "checkpoint-4" / "tuneloop-complete.json").exists()
    fresh.start_next()
    done = fresh.wait(resumed.id, interval=0.2, timeout=120)
    assert done.status == "completed", done.error
    want, got = losses(store, straight.id), losses(store, resumed.id)
    assert sorted(got) == list(range(1, 13))          # steps 1-4 copied, 5-12 trained
    for step in range(1, 13):
        assert abs(got[step] - want[step]) < 1e-3, (step, got[step], want[step])
    assert got[12] < got[1]  # it learned something, so matching is not trivial


def test_induced_oom_is_stored_in_words(store, home, text_file):
    runner = make_runner(store, home, cpt=f"{HERE}:oom_cpt")
    run = runner.submit(cpt_config(text_file, max_steps=3, batch_size=8))
    runner.start_next()
    done = runner.wait(run.id, interval=0.2, timeout=60)
    assert done.status == "failed"
    assert done.error.startswith("Out of memory while training. It asked for 2.00 GiB with "
                                 "512.00 MiB free.")
    assert "batch_size (8 → 4)" in done.error and "grad_accum (1 → 2)" in done.error
    assert "Traceback" not in done.error


def test_crash_keeps_traceback_out_of_the_message(store, home, text_file):
    runner = make_runner(store, home, cpt=f"{HERE}:crashing_cpt")
    run = runner.submit(cpt_config(text_file, max_steps=3))
    runner.start_next()
    done = runner.wait(run.id, interval=0.2, timeout=60)
    assert done.status == "failed"
    assert done.error.startswith("RuntimeError while loading the model: weights are corrupt.")
    log = Path(run.output_dir) / "error.log"
    assert str(log) in done.error and "Traceback" in log.read_text()


@pytest.mark.parametrize("algo,status,words", [
    ("exiting_cpt", "failed", "exited with code 7 without a result"),
    ("self_killing_cpt", "interrupted", "killed by SIGKILL"),
])
def test_a_dying_child_does_not_take_the_parent_down(store, home, text_file, algo, status, words):
    runner = make_runner(store, home, cpt=f"{HERE}:{algo}")
    run = runner.submit(cpt_config(text_file, max_steps=3))
    runner.start_next()
    done = runner.wait(run.id, interval=0.2, timeout=60)
    assert done.status == status and words in done.error
    assert losses(store, run.id) == {1: 5.0}  # what it said before dying is kept


def test_recover_marks_vanished_runs_interrupted(store, home):
    from tuiapp.engine.jobs.runner import Runner

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead_dir, alien_dir = home / "runs" / "a", home / "runs" / "b"
    dead_dir.mkdir()
    alien_dir.mkdir()
    (dead_dir / "events.jsonl").write_text(
        json.dumps({"event": "metrics", "step": 3, "values": {"loss": 2.5}, "t": 1.0}) + "\n"
        + '{"event": "metrics", "step": 4, "val')  # killed mid-line
    dead = store.create_run("cpt", {}, status="running", output_dir=dead_dir)
    store.update_run(dead.id, pid=gone.pid)
    # A live pid that is not a job (pid reuse after a reboot): this test process.
    alien = store.create_run("cpt", {}, status="running", output_dir=alien_dir)
    store.update_run(alien.id, pid=os.getpid())
    changed = Runner(store, home).recover()
    assert {r.id for r in changed} == {dead.id, alien.id}
    for r in changed:
        assert r.status == "interrupted" and "killed or machine restarted" in r.error
        assert r.finished_at is not None
    assert losses(store, dead.id) == {3: 2.5}


# ---------------------------------------------------------------- resolution and pre-flight


def test_resolve_dataset_by_id_name_and_file(store, home, text_file):
    from tuiapp.engine.jobs.resolve import ResolveError, resolve_dataset

    v1 = resolve_dataset(str(text_file), store, home, "cpt")          # imported on the fly
    assert v1.name == "valley" and v1.kind == "text"
    assert Path(v1.path).is_relative_to(home / "datasets")
    assert resolve_dataset(str(text_file), store, home, "cpt").id == v1.id  # same bytes: same row
    assert resolve_dataset(str(v1.id), store, home).id == v1.id
    assert resolve_dataset("valley", store, home).id == v1.id
    with pytest.raises(ResolveError, match="Did you mean valley"):
        resolve_dataset("valey", store, home)
    with pytest.raises(ResolveError, match="no dataset version with id 99"):
        resolve_dataset("99", store, home)


def test_resolve_base_model(store, tmp_path, tiny_model):
    from tuiapp.engine.jobs.resolve import ResolveError, resolve_base_model

    got = resolve_base_model(str(tiny_model), store)
    assert got.local and got.model_id and store.get_model(got.model_id).path == str(tiny_model)
    assert resolve_base_model(str(got.model_id), store).path == str(tiny_model)
    assert resolve_base_model("scratch", store, allow_scratch=True).path is None
    with pytest.raises(ResolveError, match="only for continued pre-training"):
        resolve_base_model("scratch", store)
    with pytest.raises(ResolveError, match="no model folder at"):
        resolve_base_model(str(tmp_path / "nope"), store)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResolveError, match="has no config.json"):
        resolve_base_model(str(tmp_path / "empty"), store)
    if not (paths.DEMO_BASE_MODEL / "config.json").exists():
        with pytest.raises(ResolveError, match="tuneloop demo build-base"):
            resolve_base_model("demo", store)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    from tuiapp.engine.data import load_tokenizer

    tok = load_tokenizer(None)
    folder = tmp_path_factory.mktemp("tiny") / "model"
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                 num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)
                     ).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_preflight_counts_and_estimates(store, home, tiny_model, text_file):
    from tuiapp.engine.jobs.preflight import preflight
    from tuiapp.engine.train.config import SFTJobConfig

    sft = paths.DEMO_DIR / "sft.jsonl"
    full = preflight(SFTJobConfig(base_model=str(tiny_model), dataset=str(sft), method="full",
                                  max_length=256), store, home)
    assert full.ok, full.refusals
    assert full.params["trainable"] == full.params["total"] > 100_000
    lora = preflight(SFTJobConfig(base_model=str(tiny_model), dataset=str(sft), lora_r=4,
                                  max_length=256), store, home)
    assert 0 < lora.params["trainable"] < full.params["trainable"] / 5
    assert lora.memory["estimate_bytes"] < full.memory["estimate_bytes"]
    assert lora.tokens["tokens"]["max"] > 0 and lora.steps == 1 * -(-int(lora.dataset_rows * 0.95) // 8)
    assert lora.to_dict()["ok"] is True
    scratch = preflight(cpt_config(text_file, max_steps=5), store, home)
    assert scratch.ok and scratch.base_model is None and scratch.steps == 5
    assert scratch.params["trainable"] == scratch.params["total"]


def test_preflight_memory_follows_the_longest_example_not_max_length(store, home, tiny_model):
    """Demo rows are ~25-60 tokens: with max_length 2048 the step holds batch x longest tokens,
    so the estimate must not grow with max_length once it exceeds the data."""
    from tuiapp.engine.jobs.preflight import preflight
    from tuiapp.engine.train import modeling
    from tuiapp.engine.train.config import SFTJobConfig

    sft = paths.DEMO_DIR / "sft.jsonl"
    short, long = (preflight(SFTJobConfig(base_model=str(tiny_model), dataset=str(sft), max_length=n),
                             store, home, free_bytes=2**40) for n in (512, 2048))
    longest = short.tokens["tokens"]["max"]
    assert longest < 512
    assert short.memory["estimate_bytes"] == long.memory["estimate_bytes"]
    bound = modeling.estimate_memory(SFTJobConfig(base_model=str(tiny_model), dataset=str(sft),
                                                  max_length=2048), str(tiny_model))
    assert long.memory["estimate_bytes"] < bound["total_bytes"]  # batch x max_length: far larger
    assert long.memory["activations_bytes"] == bound["activations_bytes"] * longest // 2048


def test_preflight_refusals_say_why(store, home, tiny_model, text_file, tmp_path):
    from rich.console import Console

    from tuiapp.engine.jobs.preflight import preflight
    from tuiapp.engine.jobs.runner import PreflightRefused
    from tuiapp.engine.train.config import SFTJobConfig

    wrong_kind = preflight(SFTJobConfig(base_model=str(tiny_model), dataset=str(text_file)),
                           store, home)
    assert any("is text data; a sft job trains on sft data" in r for r in wrong_kind.refusals)
    missing = preflight(SFTJobConfig(base_model=str(tmp_path / "gone"), dataset=str(text_file)),
                        store, home)
    assert any("no model folder at" in r for r in missing.refusals)
    long_prompt = tmp_path / "long.jsonl"
    long_prompt.write_text(json.dumps({"messages": [
        {"role": "user", "content": "word " * 60}, {"role": "assistant", "content": "ok"}]}) + "\n")
    nothing = preflight(SFTJobConfig(base_model=str(tiny_model), dataset=str(long_prompt),
                                     max_length=32), store, home)
    assert any("would train on nothing at max_length 32" in r and "lines 1" in r
               for r in nothing.refusals)
    tight = preflight(cpt_config(text_file, max_steps=5), store, home, free_bytes=1024)
    assert any(r.startswith("memory: needs about") and "first knob: halve batch_size" in r
               for r in tight.refusals)
    text = Console(record=True, width=200)
    text.print(tight.render())
    assert "✗ memory: needs about" in text.export_text()
    with pytest.raises(PreflightRefused, match="memory: needs about"):
        make_runner(store, home).submit(cpt_config(text_file, max_steps=5), free_bytes=1024)
    assert store.list_runs() == []


def test_resume_refuses_runs_without_a_checkpoint(store, home, text_file):
    runner = make_runner(store, home)
    run = runner.submit(cpt_config(text_file, max_steps=3))
    with pytest.raises(ValueError, match="only cancelled, interrupted or failed"):
        runner.resume(run.id)
    runner.cancel(run.id)
    with pytest.raises(ValueError, match="no complete checkpoint"):
        runner.resume(run.id)


# ---------------------------------------------------------------- test-only algorithms
# Loaded inside the child process by file path; each wraps or replaces the real cpt.train.


class _SlowSink:
    """Sleeps at each progress event so a test can act between steps."""

    def __init__(self, inner, delay):
        self.inner, self.delay = inner, delay

    def emit(self, event):
        self.inner.emit(event)
        if event.get("event") == "progress" and event.get("step"):
            time.sleep(self.delay)

    def close(self):
        self.inner.close()


def slow_cpt(config, ctx):
    from tuiapp.engine.train import cpt

    ctx.sink = _SlowSink(ctx.sink, 0.4)
    return cpt.train(config, ctx)


def oom_cpt(config, ctx):
    import torch

    ctx.emit("phase", phase="train")
    raise torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 7.79 GiB "
        "of which 512.00 MiB is free.")


def crashing_cpt(config, ctx):
    ctx.emit("phase", phase="load_model")
    raise RuntimeError("weights are corrupt\nsecond line that stays in error.log")


def exiting_cpt(config, ctx):
    ctx.emit("metrics", step=1, values={"loss": 5.0})
    os._exit(7)


def self_killing_cpt(config, ctx):
    ctx.emit("metrics", step=1, values={"loss": 5.0})
    os.kill(os.getpid(), signal.SIGKILL)
