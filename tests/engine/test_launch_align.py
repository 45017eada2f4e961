"""DPO and reward models on two gloo ranks (issue 21): the per-step loss equals one process
with twice the per-device batch, through the runner's accelerate launch path; GRPO completes on
two ranks (its sampling differs per rank, so no equality). Slow: each test starts a real 2-rank
process group of a tiny Llama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NAMES = ["Kudrade", "Mamouth", "Laibrou", "Hadegres", "Gikri", "Tesosto", "Boust", "Nobraikra"]
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
             "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
ALGOS = {"dpo": "tuiapp.engine.train.dpo:train", "reward": "tuiapp.engine.train.reward:train"}


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
def pref_file(tmp_path_factory) -> Path:
    questions = ["Is {} from the valley?", "Does {} keep bees?"]
    rows = [{"prompt": q.format(n), "chosen": "Answer: yes.", "rejected": "Answer: no."}
            for n in NAMES for q in questions]
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def config(kind, model, data, **kw):
    from tuiapp.engine.train.config import config_class

    base = dict(base_model=str(model), dataset=str(data), method="lora", max_steps=8,
                learning_rate=5e-3, warmup_ratio=0.0, lr_scheduler="constant", logging_steps=1,
                save_steps=100, eval_steps=100, eval_split=0.0, sample_prompts=[], max_length=64,
                lora_r=8, lora_alpha=16, lora_dropout=0.0, device="cpu", dtype="fp32")
    base.update(kw)
    return config_class(kind)(**base)


def losses(store, run_id):
    return {m.step: m.value for m in store.metrics(run_id, "loss")}


def run(store, home, cfg):
    from tuiapp.engine.jobs.runner import Runner

    runner = Runner(store, home, algorithms=ALGOS, env=CHILD_ENV)
    run = runner.submit(cfg)
    runner.start_next()
    return runner.wait(run.id, interval=0.3, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dpo", "reward"])
def test_two_ranks_match_one_process(store, home, tiny_model, pref_file, kind):
    two = run(store, home, config(kind, tiny_model, pref_file, num_processes=2, batch_size=2))
    assert two.status == "completed", two.error
    one = run(store, home, config(kind, tiny_model, pref_file, num_processes=1, batch_size=4))
    assert one.status == "completed", one.error
    a, b = losses(store, two.id), losses(store, one.id)
    assert sorted(a) == sorted(b) == list(range(1, 9))
    worst = max(abs(a[s] - b[s]) for s in a)
    print(f"{kind} 2 ranks vs 1 process: max |loss diff| over 8 steps = {worst:.2e}")
    assert worst < 2e-3, (a, b)
    assert a[8] < a[1]
    assert (Path(two.output_dir) / "logs" / "rank-1.stderr.log").exists()


@pytest.mark.slow
def test_grpo_runs_on_two_ranks(store, home, tiny_model, tmp_path):
    from tuiapp import paths
    from tuiapp.engine.train.config import GRPOJobConfig

    lines = (paths.DEMO_DIR / "eval_heldout.jsonl").read_text(encoding="utf-8").splitlines()[:8]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = GRPOJobConfig(base_model=str(tiny_model), dataset=str(prompts), max_steps=2,
                        batch_size=2, num_generations=2, max_completion_length=6,
                        learning_rate=1e-3, lora_r=4, lora_alpha=8, logging_steps=1,
                        save_steps=100, sample_prompts=[], max_length=64, warmup_ratio=0.0,
                        eval_split=0.0, device="cpu", num_processes=2)
    from tuiapp.engine.jobs.runner import Runner

    runner = Runner(store, home, algorithms={"grpo": "tuiapp.engine.train.rl:train_grpo"},
                    env=CHILD_ENV)
    run = runner.submit(cfg)
    runner.start_next()
    done = runner.wait(run.id, interval=0.3, timeout=600)
    assert done.status == "completed", done.error
    assert sorted(losses(store, run.id)) == [1, 2]
    assert any(m.name.startswith("reward") for m in store.metrics(run.id))
