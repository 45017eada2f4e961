"""PPO: the math against hand-computed values, then a few real rollouts on a tiny random Llama
(hidden 64, 2 layers, demo tokenizer) with a token-level reward it can learn in seconds;
cancel + resume continue the rollout count."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from tuiapp.engine.train import ppo  # noqa: E402

T = torch.tensor


# ------------------------------------------------------------------ math, by hand


def test_kl_penalized_rewards_put_the_score_on_the_last_real_token():
    logp = T([[-1.0, -2.0, -0.5], [-1.0, -1.0, -9.0]])
    ref = T([[-1.5, -1.0, -0.5], [-0.5, -1.0, -1.0]])
    mask = T([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, kl = ppo.kl_penalized_rewards(T([2.0, -1.0]), logp, ref, mask, beta=0.1)
    # kl row 0: 0.5, -1.0, 0.0 ; row 1: -0.5, 0.0, (masked)
    assert torch.allclose(kl, T([[0.5, -1.0, 0.0], [-0.5, 0.0, 0.0]]))
    # r = -0.1*kl, + score at the last real token (index 2 in row 0, index 1 in row 1)
    assert torch.allclose(rewards, T([[-0.05, 0.1, 2.0], [0.05, -1.0, 0.0]]))


def test_gae_three_steps_by_hand():
    rewards = T([[0.1, -0.2, 1.0], [0.5, 1.0, 7.0]])
    values = T([[0.5, 0.4, 0.3], [0.2, 0.6, 9.0]])
    mask = T([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = ppo.gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 0: δ2 = 1.0 - 0.3 = 0.7 ; δ1 = -0.2 + 0.9*0.3 - 0.4 = -0.33 ; δ0 = 0.1 + 0.9*0.4 - 0.5 = -0.04
    #        A2 = 0.7 ; A1 = -0.33 + 0.72*0.7 = 0.174 ; A0 = -0.04 + 0.72*0.174 = 0.08528
    # row 1 (two real tokens; the third is padding): δ1 = 1.0 - 0.6 = 0.4 ; δ0 = 0.5 + 0.9*0.6 - 0.2 = 0.84
    #        A1 = 0.4 ; A0 = 0.84 + 0.72*0.4 = 1.128
    assert torch.allclose(adv, T([[0.08528, 0.174, 0.7], [1.128, 0.4, 0.0]]), atol=1e-6)
    assert torch.allclose(ret, T([[0.58528, 0.574, 1.0], [1.328, 1.0, 0.0]]), atol=1e-6)


def test_gae_with_lambda_one_and_gamma_one_is_reward_to_go_minus_value():
    rewards = T([[1.0, 2.0, 3.0]])
    values = T([[0.5, 0.5, 0.5]])
    adv, ret = ppo.gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
    assert torch.allclose(ret, T([[6.0, 5.0, 3.0]]))
    assert torch.allclose(adv, T([[5.5, 4.5, 2.5]]))


def test_whiten_uses_only_unmasked_entries():
    x = T([[1.0, 2.0, 3.0, 100.0]])
    mask = T([[1.0, 1.0, 1.0, 0.0]])
    out = ppo.whiten(x, mask)
    s = math.sqrt(2.0 / 3.0)  # population std of 1, 2, 3
    assert torch.allclose(out, T([[-1.0 / s, 0.0, 1.0 / s, 0.0]]), atol=1e-5)


def test_clipped_policy_loss_inside_and_outside_the_clip():
    old = torch.zeros(1, 4)
    # ratios 1.1 (inside), 1.5 with A>0 (clipped to 1.2), 0.5 with A<0 (clipped to 0.8),
    # 1.5 with A<0 (the unclipped term is the larger loss: no clipping applies)
    logp = torch.log(T([[1.1, 1.5, 0.5, 1.5]]))
    adv = T([[1.0, 1.0, -1.0, -1.0]])
    loss, clipfrac = ppo.clipped_policy_loss(logp, old, adv, torch.ones(1, 4), clip=0.2)
    per_token = [-1.1, -1.2, 0.8, 1.5]
    assert loss.item() == pytest.approx(sum(per_token) / 4, abs=1e-6)
    assert clipfrac.item() == pytest.approx(0.5)
    # a masked token changes nothing
    loss2, _ = ppo.clipped_policy_loss(torch.log(T([[1.1, 9.0]])), torch.zeros(1, 2), T([[1.0, 5.0]]),
                                       T([[1.0, 0.0]]), clip=0.2)
    assert loss2.item() == pytest.approx(-1.1, abs=1e-6)


def test_clipped_value_loss_by_hand():
    values = T([[1.0, 0.0, 0.9]])
    old = T([[0.5, 0.5, 0.5]])
    returns = T([[0.0, 1.0, 1.0]])
    loss, clipfrac = ppo.clipped_value_loss(values, old, returns, torch.ones(1, 3), clip=0.2)
    # token 0: (1-0)^2 = 1 vs clipped 0.7 -> 0.49 : 1.0 ; token 1: 1 vs clipped 0.3 -> 0.49 : 1.0
    # token 2: 0.01 vs clipped 0.7 -> 0.09 : 0.09 (the clipped error is used)
    assert loss.item() == pytest.approx(0.5 * (1.0 + 1.0 + 0.09) / 3, abs=1e-6)
    assert clipfrac.item() == pytest.approx(1 / 3)


def test_adaptive_kl_moves_beta_towards_the_target():
    ctl = ppo.AdaptiveKL(0.1, target=1.0, horizon=100)
    assert ctl.update(3.0, n_answers=10) == pytest.approx(0.1 * (1 + 0.2 * 0.1))  # error capped at +0.2
    high = ctl.beta
    assert ctl.update(0.9, n_answers=10) == pytest.approx(high * (1 - 0.1 * 0.1))
    assert ctl.update(1.0, 10) == pytest.approx(ctl.beta)  # on target: unchanged


# ------------------------------------------------------------------ real rollouts on a tiny model

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from tuiapp.engine.context import COMPLETE_MARKER, JobContext, request_stop  # noqa: E402
from tuiapp.engine.events import ListSink  # noqa: E402
from tuiapp.engine.train.config import PPOJobConfig  # noqa: E402

WORDS = ("yes no maybe red blue green cat dog owl one two three up down left right what is the "
         "answer ?").split() + [str(i) for i in range(16)]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def word_model(tmp_path_factory) -> Path:
    """A random Llama over a 40-word vocabulary: every word starts with a few percent of the
    probability, so 'say yes' is found by sampling and learnable in a few rollouts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("word-llama")
    vocab = {"[UNK]": 0, "<|endoftext|>": 1, "<|im_start|>": 2, "<|im_end|>": 3, "user": 4, "assistant": 5}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.WordPiece()  # joins words with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="<|endoftext|>",
                                  eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, intermediate_size=64, max_position_embeddings=128,
                      tie_word_embeddings=True, initializer_range=0.2, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=None)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def yes_reward(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("reward-mod")
    (folder / "ppo_test_rewards.py").write_text(
        "def yes_share(prompt, response):\n"
        "    words = response.split()\n"
        "    return sum(w == 'yes' for w in words) / max(1, len(words))\n", encoding="utf-8")
    sys.path.insert(0, str(folder))
    return "python:ppo_test_rewards:yes_share"


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"what is {i} ?"}) + "\n" for i in range(16)), encoding="utf-8")
    return path


def make_config(model: Path, data: Path, reward: str, **kw) -> PPOJobConfig:
    base = dict(base_model=str(model), dataset=str(data), reward=reward, max_steps=15, rollout_batch_size=8,
                mini_batch_size=4, max_new_tokens=6, learning_rate=1e-2, lora_r=8, lora_alpha=16,
                ppo_epochs=2, logging_steps=1, save_steps=100, sample_prompts=[], max_length=64,
                warmup_ratio=0.0, lr_scheduler="constant", kl_coef=0.02, device="cpu")
    base.update(kw)
    return PPOJobConfig(**base)


def test_ppo_raises_a_learnable_reward_and_saves_adapter_and_value_head(word_model, prompts_file, yes_reward, tmp_path):
    sink = ListSink()
    result = ppo.train(make_config(word_model, prompts_file, yes_reward), JobContext(output_dir=tmp_path, sink=sink))
    rows = [e["values"] for e in sink.of("metrics")]
    assert [e["step"] for e in sink.of("metrics")] == list(range(1, 16))
    for key in ("reward", "kl", "entropy", "clipfrac", "value_loss", "policy_loss", "response_length", "kl_coef"):
        assert all(math.isfinite(r[key]) for r in rows), key
    first = sum(r["reward"] for r in rows[:3]) / 3
    last = sum(r["reward"] for r in rows[-3:]) / 3
    assert first < 0.15 and last > first + 0.3, (first, last)
    assert rows[-1]["entropy"] < rows[0]["entropy"]  # the policy became more decided
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # a fresh adapter is the reference
    final = Path(result["final_dir"])
    assert (final / "adapter_model.safetensors").exists() and (final / "value_head.safetensors").exists()
    assert result["status"] == "completed" and result["steps"] == 15
    assert sink.of("progress")[-1]["step"] == 15


def test_cancel_then_resume_continues_the_rollout_count(word_model, prompts_file, yes_reward, tmp_path):
    cfg = make_config(word_model, prompts_file, yes_reward, max_steps=5, sample_prompts=["what is 1 ?"],
                      sample_max_new_tokens=4)
    straight = ListSink()
    ppo.train(cfg, JobContext(output_dir=tmp_path / "straight", sink=straight))

    class StopAfter3(ListSink):
        def emit(self, event):
            super().emit(event)
            if event["event"] == "progress" and event["step"] == 3:
                request_stop(tmp_path / "first")

    first = StopAfter3()
    result = ppo.train(cfg, JobContext(output_dir=tmp_path / "first", sink=first))
    assert result["status"] == "cancelled" and result["steps"] == 3 and result["final_dir"] is None
    ckpt = tmp_path / "first" / "checkpoint-3"
    assert (ckpt / COMPLETE_MARKER).exists() and (ckpt / "value_head.safetensors").exists()
    assert first.of("checkpoint")[-1]["step"] == 3
    assert [(e["step"], e["prompt"]) for e in first.of("sample")] == [(3, "what is 1 ?")]

    resumed = ListSink()
    result = ppo.train(cfg, JobContext(output_dir=tmp_path / "second", sink=resumed, resume_from=ckpt))
    assert result["status"] == "completed" and result["steps"] == 5
    assert [e["step"] for e in resumed.of("metrics")] == [4, 5]
    # adapter, value head, optimiser and RNG came back: rollouts 4-5 match an unbroken run
    want = {e["step"]: e["values"] for e in straight.of("metrics")}
    for e in resumed.of("metrics"):
        assert e["values"]["reward"] == pytest.approx(want[e["step"]]["reward"], abs=1e-6)
        assert e["values"]["value_loss"] == pytest.approx(want[e["step"]]["value_loss"], rel=1e-3, abs=1e-6)


def test_prompts_come_from_prompt_preference_and_sft_data_with_their_columns(tmp_path):
    from tuiapp import paths

    held = ppo.rewards.load_prompts(make_config(Path("x"), paths.DEMO_DIR / "eval_heldout.jsonl", "verifier:demo"),
                            JobContext(output_dir=tmp_path))
    assert held[0]["text"] == held[0]["prompt"][-1]["content"] and held[0]["reference"]
    prefs = ppo.rewards.load_prompts(make_config(Path("x"), paths.DEMO_DIR / "preferences.jsonl", "verifier:demo"),
                             JobContext(output_dir=tmp_path))
    assert len({p["text"] for p in prefs}) == len(prefs)  # each question once
    assert "chosen" not in prefs[0]
    sft = ppo.rewards.load_prompts(make_config(Path("x"), paths.DEMO_DIR / "sft.jsonl", "verifier:demo"),
                           JobContext(output_dir=tmp_path))
    assert all(p["prompt"][-1]["role"] == "user" for p in sft)


def test_unusable_data_or_reward_is_refused_before_any_model_loads(tmp_path, prompts_file):
    from tuiapp import paths

    missing_model = tmp_path / "no-such-model"
    with pytest.raises(ppo.rewards.PromptDataError, match="text data .* PPO needs prompts"):
        ppo.train(make_config(missing_model, paths.DEMO_DIR / "corpus.txt", "verifier:demo"),
                  JobContext(output_dir=tmp_path / "a"))
    with pytest.raises(ppo.rewards.RewardError, match="cannot import module"):
        ppo.train(make_config(missing_model, prompts_file, "python:no_such_reward_mod:f"),
                  JobContext(output_dir=tmp_path / "b"))


CLI_PPO = """
kind = "ppo"
base_model = "{model}"
start_from = "{start}"
dataset = "{data}"
reward = "{reward}"
max_steps = 3
rollout_batch_size = 8
mini_batch_size = 4
max_new_tokens = 6
ppo_epochs = 1
learning_rate = 1e-2
lora_r = 4
lora_alpha = 8
logging_steps = 1
max_length = 64
sample_prompts = []
device = "cpu"
dtype = "fp32"
"""


@pytest.mark.slow  # a child process imports torch and transformers (~20 s on 2 shared cores)
def test_tuneloop_train_ppo_runs_from_an_sft_run_through_the_runner(word_model, prompts_file, yes_reward,
                                                                     tmp_path, monkeypatch):
    import typer
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from typer.testing import CliRunner

    from store import Store
    from tuiapp import paths
    from tuiapp.cli import train_cmd

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the job's child process
    monkeypatch.setenv("PYTHONPATH", sys.path[0])  # the child imports the test's reward module
    home = tmp_path / "home"
    home.mkdir()
    store = Store(home / paths.DB_NAME)
    base = store.add_model("word", "hf", str(word_model))
    sft_dir = home / "runs" / "sft-made-by-hand"
    get_peft_model(AutoModelForCausalLM.from_pretrained(word_model),
                   LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], task_type="CAUSAL_LM")
                   ).save_pretrained(sft_dir / "final")
    sft_run = store.create_run("sft", {"base_model": str(word_model)}, base_model_id=base.id,
                               output_dir=str(sft_dir), status="completed")
    store.close()
    preset = tmp_path / "ppo.toml"
    preset.write_text(CLI_PPO.format(model=word_model, start=sft_run.id, data=prompts_file, reward=yes_reward),
                      encoding="utf-8")

    root = typer.Typer()
    root.add_typer(train_cmd.app, name="train")
    result = CliRunner().invoke(root, ["train", "ppo", "--config", str(preset)], obj={"home": str(home)})
    assert result.exit_code == 0, result.output

    store = Store(home / paths.DB_NAME)
    run = store.list_runs(kind="ppo")[0]
    assert run.status == "completed" and run.parent_run_id == sft_run.id
    summary = store.metric_summary(run.id)
    assert {"reward", "kl", "entropy", "clipfrac", "value_loss", "response_length"} <= set(summary)
    assert summary["reward"]["count"] == 3
    assert (Path(run.output_dir) / "final" / "value_head.safetensors").exists()
