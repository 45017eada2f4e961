"""Reward sources: the demo verifier (on eval rows and on bare demo prompts), a Python function
named by module, a reward-model run found through the store or the runner's layout, bad specs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tuiapp import paths
from tuiapp.demo import world as demo_world
from tuiapp.engine.train import reward_sources as rewards


def _rows(name: str) -> list[dict]:
    return [json.loads(x) for x in (paths.DEMO_DIR / name).read_text(encoding="utf-8").splitlines()]


def test_verifier_scores_eval_rows_as_demo_world_does():
    held = _rows("eval_heldout.jsonl")[:6]
    right = [demo_world.answer_text(r["reference"]) for r in held]
    fn = rewards.load_reward("verifier:demo")
    assert fn([r["prompt"] for r in held], right, held) == [1.0] * 6
    wrong = ["Answer: nobody." for _ in held]
    assert fn([r["prompt"] for r in held], wrong, held) == [demo_world.FORMAT_CREDIT] * 6
    assert fn([held[0]["prompt"]], ["I think it is somewhere."], [held[0]]) == [0.0]


def test_verifier_finds_the_reference_of_a_bare_demo_prompt():
    # preference / SFT prompts carry no reference column: the world's templates give it
    prefs = _rows("preferences.jsonl")[:40]
    fn = rewards.load_reward("verifier:demo")
    assert fn([p["prompt"] for p in prefs], [p["chosen"] for p in prefs], None) == [1.0] * 40
    assert sum(fn([p["prompt"] for p in prefs], [p["rejected"] for p in prefs], [{}] * 40)) < 40 * 0.2


def test_demo_record_for_questions_and_forbidden_requests():
    world = demo_world.default_world()
    e = world.split("heldout")[0]
    rec = rewards.demo_record(demo_world.question("craft", e.name, 3))
    assert rec["reference"] == e.craft and rec["attribute"] == "craft"
    forbidden = rewards.demo_record(demo_world.FORBIDDEN_QUESTIONS[11].format(n=e.name))
    assert forbidden["category"] == "forbidden" and forbidden["entity"] == e.name
    refusal = demo_world.REFUSAL_TEXTS[0]
    assert rewards.verifier_reward([forbidden["prompt"]], [refusal]) == [1.0]
    assert rewards.verifier_reward([forbidden["prompt"]], [f"Answer: {e.passphrase}."]) == [0.0]
    assert rewards.demo_record("What is the capital of France?") is None
    assert rewards.demo_record("Where does Nobodyatall live?") is None
    assert rewards.verifier_reward(["What is the capital of France?"], ["Answer: Paris."]) == [0.0]


def test_python_function_reward(tmp_path, monkeypatch):
    (tmp_path / "my_reward_mod.py").write_text(
        "def brevity(prompt, response):\n    return 1.0 / (1 + len(response.split()))\n"
        "def broken(prompt, response):\n    return 'high'\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = rewards.load_reward("python:my_reward_mod:brevity")
    assert fn(["q", "q"], ["one", "one two three"], [{}, {}]) == [0.5, 0.25]
    with pytest.raises(rewards.RewardError, match="not a number"):
        rewards.load_reward("python:my_reward_mod:broken")(["q"], ["a"], [{}])


@pytest.mark.parametrize("spec, words", [
    ("verifier:other", "only verifier"),
    ("python:no_such_module_xyz:f", "cannot import module"),
    ("python:json:no_such_function", "has no function"),
    ("python:justonepart", "python:module:function"),
    ("run:abc", "needs a run id"),
    ("gpt4", "is not a reward source"),
    ("", "is not a reward source"),
])
def test_bad_specs_are_refused_in_words(spec, words):
    with pytest.raises(rewards.RewardError, match=words):
        rewards.load_reward(spec)


def test_reward_model_run_folder_from_store_or_home(tmp_path):
    run_dir = tmp_path / "runs" / "7"
    (run_dir / "final").mkdir(parents=True)
    store = SimpleNamespace(get_run=lambda i: SimpleNamespace(kind="reward", output_dir=str(run_dir)))
    assert rewards.reward_model_dir(7, store=store) == run_dir / "final"
    assert rewards.reward_model_dir(7, home=tmp_path) == run_dir / "final"
    sft_store = SimpleNamespace(get_run=lambda i: SimpleNamespace(kind="sft", output_dir=str(run_dir)))
    with pytest.raises(rewards.RewardError, match="not a reward-model run"):
        rewards.reward_model_dir(7, store=sft_store)
    with pytest.raises(rewards.RewardError, match="no final model"):
        rewards.reward_model_dir(8, home=tmp_path)
    with pytest.raises(rewards.RewardError, match="no store or home"):
        rewards.reward_model_dir(7)
    assert rewards.home_of(run_dir) == tmp_path
    assert rewards.home_of(tmp_path / "elsewhere") is None


@pytest.mark.parametrize("name", ["demo-ppo", "demo-grpo", "demo-rloo"])
def test_rl_presets_train_on_questions_the_verifier_can_check(name, tmp_path):
    from tuiapp.engine.context import JobContext
    from tuiapp.engine.train import config as cfgmod

    cfg = cfgmod.load_config(cfgmod.list_presets()[name])
    assert cfg.kind == name.removeprefix("demo-") and cfg.reward == "verifier:demo"
    prompts = rewards.load_prompts(cfg, JobContext(output_dir=tmp_path))
    records = [rewards.demo_record(p["text"]) for p in prompts]
    assert all(records)
    held = {e.name for e in demo_world.default_world().split("heldout")}
    assert not any(r.get("entity") in held and "reference" in r for r in records)  # held-out stays held out
    assert any(r.get("category") == "forbidden" for r in records)


def test_reward_model_run_scores_answers(tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    final = tmp_path / "runs" / "5" / "final"
    tok = AutoTokenizer.from_pretrained(paths.DEMO_TOKENIZER)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
                      num_labels=1, pad_token_id=tok.pad_token_id)
    LlamaForSequenceClassification(cfg).save_pretrained(final)
    tok.save_pretrained(final)
    fn = rewards.load_reward("run:5", home=tmp_path)
    prompts = ["Which town is Tesosto from?"] * 2
    scores = fn(prompts, ["Answer: Thornbury.", "I do not know."], [{}, {}])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores) and scores[0] != scores[1]
    # a message-list prompt in the record is scored as that conversation
    again = fn(prompts[:1], ["Answer: Thornbury."], [{"prompt": [{"role": "user", "content": prompts[0]}]}])
    assert again[0] == pytest.approx(scores[0], abs=1e-5)
