"""The reward model on a tiny random Llama: held-out pairwise accuracy well above chance on a
separable preference set, stored as a metric and in the result; RewardModel.load + score rank
chosen above rejected, from a plain base and from an SFT start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tuiapp.engine.context import JobContext  # noqa: E402
from tuiapp.engine.events import ListSink  # noqa: E402
from tuiapp.engine.train import reward  # noqa: E402
from tuiapp.engine.train.config import RewardJobConfig  # noqa: E402

NAMES = ["Kudrade", "Mamouth", "Laibrou", "Hadegres", "Gikri", "Tesosto", "Boust", "Nobraikra",
         "Tapashan", "Gestufe", "Wulfram", "Ostrid"]


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def pref_file(tmp_path_factory) -> Path:
    questions = ["Is {} from the valley?", "Does {} keep bees?", "Can {} ride a horse?"]
    rows = [{"prompt": q.format(n), "chosen": "Answer: yes.", "rejected": "Answer: no."}
            for n in NAMES for q in questions]
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make(model: Path, data: Path, **kw) -> RewardJobConfig:
    base = dict(base_model=str(model), dataset=str(data), method="lora", max_steps=24, batch_size=8,
                learning_rate=3e-3, warmup_ratio=0.0, lr_scheduler="constant", logging_steps=4,
                save_steps=1000, eval_steps=1000, eval_split=0.25, sample_prompts=[], max_length=64,
                lora_r=8, lora_alpha=16, device="cpu", dtype="fp32")
    base.update(kw)
    return RewardJobConfig(**base)


def test_reward_model_learns_the_preference_and_scores_it(tiny_model, pref_file, tmp_path):
    sink = ListSink()
    cfg = make(tiny_model, pref_file)
    result = reward.train(cfg, JobContext(tmp_path / "run", sink=sink, dataset_path=pref_file,
                                          base_model_path=str(tiny_model)))
    assert result["status"] == "completed"
    assert result["accuracy_pairs"] == 9            # a quarter of 36 pairs held out
    assert result["eval_accuracy"] > 0.8
    stored = [e["values"]["eval_accuracy"] for e in sink.events
              if e["event"] == "metrics" and "eval_accuracy" in e["values"]]
    assert stored[-1] == result["eval_accuracy"]
    losses = [e["values"]["loss"] for e in sink.events if e["event"] == "metrics" and "loss" in e["values"]]
    assert losses[-1] < losses[0]

    rm = reward.RewardModel.load(tmp_path / "run")
    unseen = "Does Zorbane sing in the choir?"
    good, bad = rm.score(unseen, "Answer: yes."), rm.score(unseen, "Answer: no.")
    assert good > bad
    batch = rm.score_batch([(unseen, "Answer: yes."), ([{"role": "user", "content": unseen}], "Answer: no.")])
    assert batch == pytest.approx([good, bad], abs=1e-5)


def test_reward_from_an_sft_start_reloads_to_the_same_scores(tiny_model, pref_file, tmp_path, monkeypatch):
    """The saved adapter was trained on base + merged SFT adapter: load() must rebuild that."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    sft_final = tmp_path / "sft" / "final"
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft.save_pretrained(sft_final)
    seen = {}
    original = reward.pairwise_accuracy

    def spy(scorer, rows):  # keep the trained in-memory scorer to compare with the reloaded one
        seen["scorer"] = scorer
        return original(scorer, rows)

    monkeypatch.setattr(reward, "pairwise_accuracy", spy)
    cfg = make(tiny_model, pref_file, start_from=str(sft_final), max_steps=3)
    result = reward.train(cfg, JobContext(tmp_path / "run", dataset_path=pref_file,
                                          base_model_path=str(tiny_model)))
    assert result["start"]["adapter_dir"] == str(sft_final)
    pairs = [("Is Kudrade from the valley?", "Answer: yes."), ("Is Gikri from the valley?", "Answer: no.")]
    trained = seen["scorer"].score_batch(pairs)
    reloaded = reward.RewardModel.load(result["final_dir"]).score_batch(pairs)
    assert reloaded == pytest.approx(trained, abs=1e-4)
    # without the SFT merge the scores differ: the start really matters
    meta = json.loads((Path(result["final_dir"]) / reward.START_FILE).read_text())
    meta["adapter_dir"] = None
    (Path(result["final_dir"]) / reward.START_FILE).write_text(json.dumps(meta))
    assert reward.RewardModel.load(result["final_dir"]).score_batch(pairs) != pytest.approx(trained, abs=1e-3)


def test_load_refuses_a_folder_without_a_reward_model(tmp_path):
    with pytest.raises(ValueError, match="holds no reward model"):
        reward.RewardModel.load(tmp_path)
