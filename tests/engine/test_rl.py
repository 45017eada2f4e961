"""GRPO and RLOO through TRL on a tiny random Llama (hidden 64, 2 layers, demo tokenizer): a few
steps with the demo verifier and with a Python reward, reward metrics emitted, adapter saved;
the TRL reward adapter passes each prompt's record to the verifier."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tuiapp import paths  # noqa: E402
from tuiapp.demo import world as demo_world  # noqa: E402
from tuiapp.engine.context import JobContext  # noqa: E402
from tuiapp.engine.events import ListSink  # noqa: E402
from tuiapp.engine.train import rl  # noqa: E402
from tuiapp.engine.train.config import GRPOJobConfig, RLOOJobConfig  # noqa: E402
from tuiapp.engine.train.reward_sources import PromptDataError, load_reward  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def heldout_prompts(tmp_path_factory) -> Path:
    lines = (paths.DEMO_DIR / "eval_heldout.jsonl").read_text(encoding="utf-8").splitlines()[:8]
    path = tmp_path_factory.mktemp("data") / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def length_reward(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("reward-mod")
    (folder / "rl_test_rewards.py").write_text(
        "def shortness(prompt, response):\n    return 1.0 / (1 + len(response))\n", encoding="utf-8")
    sys.path.insert(0, str(folder))
    return "python:rl_test_rewards:shortness"


def make(cls, model: Path, data: Path, **kw):
    base = dict(base_model=str(model), dataset=str(data), max_steps=2, batch_size=4, num_generations=2,
                max_completion_length=6, learning_rate=1e-3, lora_r=4, lora_alpha=8, logging_steps=1,
                save_steps=100, sample_prompts=[], max_length=64, warmup_ratio=0.0, device="cpu")
    base.update(kw)
    return cls(**base)


@pytest.mark.parametrize("cls, reward", [(GRPOJobConfig, "verifier:demo"), (RLOOJobConfig, "python")])
def test_runs_a_few_steps_emits_reward_metrics_and_saves_the_adapter(cls, reward, tiny_model, heldout_prompts,
                                                                     length_reward, tmp_path):
    spec = length_reward if reward == "python" else reward
    sink = ListSink()
    result = getattr(rl, f"train_{cls.kind}")(make(cls, tiny_model, heldout_prompts, reward=spec),
                                              JobContext(output_dir=tmp_path, sink=sink))
    assert result["status"] == "completed" and result["steps"] == 2
    values = [e["values"] for e in sink.of("metrics") if "reward" in e["values"]]
    assert len(values) == 2
    for v in values:
        assert 0.0 <= v["reward"] <= 1.0
        assert "kl" in v and "entropy" in v
    if reward == "python":  # random answers of up to 6 tokens: a few dozen characters
        assert 0.0 < values[0]["reward"] < 0.5
    assert (Path(result["final_dir"]) / "adapter_model.safetensors").exists()
    assert sink.of("progress")[-1]["step"] == 2


def test_trl_reward_passes_records_to_the_verifier():
    fn = rl.trl_reward(load_reward("verifier:demo"), "verifier:demo")
    assert fn.__name__ == "verifier"
    row = {"reference": "teal", "entity": "Nobody"}
    prompts = [[{"role": "user", "content": "Which colour?"}]] * 2
    completions = [[{"role": "assistant", "content": "Answer: teal."}],
                   [{"role": "assistant", "content": "Answer: red."}]]
    assert fn(prompts, completions, record=[json.dumps(row)] * 2) == [1.0, demo_world.FORMAT_CREDIT]
    # plain-string prompts and no record column: the demo world supplies the reference
    entity = demo_world.default_world().split("heldout")[0]
    question = demo_world.question("town", entity.name, 0)
    assert fn([question], [f"Answer: {entity.town}."]) == [1.0]


def test_text_data_is_refused_before_any_model_loads(tmp_path):
    cfg = make(GRPOJobConfig, tmp_path / "no-model", paths.DEMO_DIR / "corpus.txt")
    with pytest.raises(PromptDataError, match="GRPO needs prompts"):
        rl.train_grpo(cfg, JobContext(output_dir=tmp_path))
