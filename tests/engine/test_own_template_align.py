"""DPO, KTO, reward and GRPO on a model whose own chat template has no {% generation %} markers
(SmolLM2's shape: ChatML with a default system prompt) and whose eos is not the end of a turn:
the trained tokens are exactly the assistant's text + <|im_end|> (not the newline after it, not
the prompt), the default system prompt is in the input ids, and a training step runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tuiapp import paths  # noqa: E402
from tuiapp.engine.context import JobContext  # noqa: E402
from tuiapp.engine.events import ListSink  # noqa: E402
from tuiapp.engine.train import dpo, modeling, pretokenized, reward, rl, template_mask  # noqa: E402
from tuiapp.engine.train.config import (  # noqa: E402
    DPOJobConfig,
    GRPOJobConfig,
    KTOJobConfig,
    RewardJobConfig,
)

SYSTEM = "You are a helpful AI assistant named SmolLM"
OWN = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + SYSTEM + "<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
NAMES = ["Kudrade", "Mamouth", "Laibrou", "Hadegres", "Gikri", "Tesosto", "Boust", "Nobraikra"]
COMMON = dict(method="lora", max_steps=2, batch_size=4, learning_rate=5e-3, warmup_ratio=0.0,
              lr_scheduler="constant", logging_steps=1, save_steps=100, eval_split=0.0, sample_prompts=[],
              max_length=64, lora_r=4, lora_alpha=8, device="cpu", dtype="fp32", chat_template="model")


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def own_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny Llama with the template above; eos is <|endoftext|>, so the end of a turn
    (<|im_end|>) must come from the template, not from eos."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("own") / "model"
    shutil.copytree(tiny_model, folder)
    tok = AutoTokenizer.from_pretrained(paths.DEMO_TOKENIZER)
    tok.chat_template = OWN
    tok.eos_token = "<|endoftext|>"
    tok.save_pretrained(folder)
    for name in ("config.json", "generation_config.json"):  # the model's own eos: the same one
        path = folder / name
        if path.exists():
            cfg = json.loads(path.read_text(encoding="utf-8"))
            cfg["eos_token_id"] = tok.eos_token_id
            path.write_text(json.dumps(cfg), encoding="utf-8")
    return folder


def write(tmp_path, name: str, rows: list[dict]) -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def ctx_for(cfg, out: Path) -> JobContext:
    return JobContext(out, sink=ListSink(), dataset_path=Path(cfg.dataset), base_model_path=cfg.base_model)


def flat(text: str) -> str:
    return text.replace(" ", "")


def test_the_fixture_template_is_one_tuneloop_must_split_itself(own_model):
    tok = modeling.load_tokenizer(str(own_model), "model")
    assert pretokenized.wanted(tok) and tok.eos_token == "<|endoftext|>"
    assert template_mask.end_of_turn(tok) == "<|im_end|>"


def test_dpo_trains_the_answer_and_its_end_of_turn_after_the_default_system_prompt(own_model, tmp_path):
    rows = [{"prompt": f"Is {n} from the valley?", "chosen": "Answer: yes.", "rejected": "Answer: no."}
            for n in NAMES]
    cfg = DPOJobConfig(base_model=str(own_model), dataset=str(write(tmp_path, "pairs.jsonl", rows)), **COMMON)
    ctx = ctx_for(cfg, tmp_path / "t")
    records = dpo.load_records(cfg, ctx, "preference")
    model, tok, info = dpo._load(cfg, ctx)
    trainer = dpo.build_dpo_trainer(cfg, ctx, model, tok, records, [], info["device"])
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    ids, mask = batch["input_ids"], batch["completion_mask"]
    assert flat(tok.decode(ids[0][mask[0] == 1])) == "Answer:yes.<|im_end|>"   # chosen of pair 1
    assert flat(tok.decode(ids[2][mask[2] == 1])) == "Answer:no.<|im_end|>"    # rejected of pair 1
    prompt = tok.decode(ids[0][mask[0] == 0][: len(trainer.train_dataset[0]["prompt_ids"])])
    assert prompt.startswith("<|im_start|>system\n" + SYSTEM) and prompt.endswith("<|im_start|>assistant\n")
    assert trainer.train_dataset[0]["prompt_ids"] == tok(tok.apply_chat_template(
        records[0]["prompt"], tokenize=False, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    result = dpo.train(cfg, ctx_for(cfg, tmp_path / "run"))
    assert result["status"] == "completed" and result["steps"] == 2
    assert torch.isfinite(torch.tensor(result["final_loss"]))


def test_dpo_collator_masks_the_user_turn_inside_a_multi_message_answer(own_model):
    from trl import DPOConfig

    tok = modeling.load_tokenizer(str(own_model), "model")
    answer = [{"role": "assistant", "content": "Which one?"}, {"role": "user", "content": "Kudrade."},
              {"role": "assistant", "content": "Yes."}]
    row = pretokenized.preference_rows(tok, [{"prompt": [{"role": "user", "content": "Is he?"}],
                                              "chosen": answer, "rejected": answer[:1]}])[0]
    collate = pretokenized.preference_collator(tok, DPOConfig(output_dir="/tmp/x", max_length=64, use_cpu=True, bf16=False,
                                                              report_to="none"))
    batch = collate([row])
    trained = batch["input_ids"][0][batch["completion_mask"][0] == 1]
    assert flat(tok.decode(trained)) == "Whichone?<|im_end|>Yes.<|im_end|>"  # not the user's "Kudrade."
    assert flat(tok.decode(batch["input_ids"][1][batch["completion_mask"][1] == 1])) == "Whichone?<|im_end|>"


def test_kto_trains_the_completion_and_its_end_of_turn(own_model, tmp_path):
    rows = [{"prompt": f"Is {n} from the valley?", "completion": answer, "label": good}
            for n in NAMES[:4] for answer, good in (("Answer: yes.", True), ("Answer: no.", False))]
    cfg = KTOJobConfig(base_model=str(own_model), dataset=str(write(tmp_path, "kto.jsonl", rows)), **COMMON)
    ctx = ctx_for(cfg, tmp_path / "t")
    records = dpo.load_records(cfg, ctx, "kto")
    model, tok, info = dpo._load(cfg, ctx)
    trainer = dpo.build_kto_trainer(cfg, ctx, model, tok, records, [], info["device"])
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    for i, want in enumerate(["Answer:yes.<|im_end|>", "Answer:no.<|im_end|>"]):
        ids, mask = batch["input_ids"][i], batch["completion_mask"][i]
        assert flat(tok.decode(ids[mask == 1])) == want
        assert SYSTEM in tok.decode(ids[mask == 0])
    assert "KL_completion_mask" in batch  # TRL's mismatched-pair KL estimate still built
    kl = batch["KL_input_ids"][0][batch["KL_completion_mask"][0] == 1]
    assert flat(tok.decode(kl)).endswith("<|im_end|>")
    result = dpo.train_kto(cfg, ctx_for(cfg, tmp_path / "run"))
    assert result["status"] == "completed" and result["steps"] == 2


def test_reward_reads_the_end_of_turn_and_scores_what_it_trained_on(own_model, tmp_path, monkeypatch):
    from trl import RewardTrainer

    rows = [{"prompt": f"Is {n} from the valley?", "chosen": "Answer: yes.", "rejected": "Answer: no."}
            for n in NAMES]
    cfg = RewardJobConfig(base_model=str(own_model), dataset=str(write(tmp_path, "pairs.jsonl", rows)),
                          **COMMON)
    seen = {}
    original = RewardTrainer.train

    def spy(self, *args, **kwargs):
        seen["row"] = self.train_dataset[0]
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RewardTrainer, "train", spy)
    result = reward.train(cfg, ctx_for(cfg, tmp_path / "run"))
    assert result["status"] == "completed" and result["steps"] == 2
    tok = modeling.load_tokenizer(str(own_model), "model")
    chosen = tok.decode(seen["row"]["chosen_ids"])
    assert chosen.startswith("<|im_start|>system\n" + SYSTEM)
    assert chosen.endswith("<|im_end|>")  # the scalar head reads the end-of-turn, not a newline
    rm = reward.RewardModel.load(tmp_path / "run")
    conv = [{"role": "user", "content": rows[0]["prompt"]}, {"role": "assistant", "content": "Answer: yes."}]
    assert rm._ids([conv])[0] == seen["row"]["chosen_ids"]  # scoring builds the ids it trained on


def test_grpo_stops_and_masks_at_the_end_of_turn_and_prompts_keep_the_system_prompt(own_model, tmp_path):
    prompts = write(tmp_path, "prompts.jsonl", [{"prompt": f"Is {n} from the valley?"} for n in NAMES[:4]])
    cfg = GRPOJobConfig(**{**COMMON, "batch_size": 4}, base_model=str(own_model), dataset=str(prompts),
                        num_generations=2, max_completion_length=6, reward="python:builtins:len")
    ctx = JobContext(tmp_path / "run", sink=ListSink(), dataset_path=prompts, base_model_path=str(own_model))
    from tuiapp.engine.train import policy

    model, tok, _ = policy.load_start_model(cfg, ctx, wrap_lora=False)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert im_end != tok.eos_token_id
    rows = [{"prompt": [{"role": "user", "content": f"Is {n} from the valley?"}], "record": "{}"}
            for n in NAMES[:4]]
    trainer = rl.build_trainer(cfg, ctx, model, tok, rows, lambda prompts, completions, **_: [0.0] * len(prompts),
                               "cpu")
    # TRL stops sampling at these ids and ends each completion's mask at the first of them
    assert im_end in trainer.eos_token_ids and tok.eos_token_id in trainer.eos_token_ids
    seen: list = []
    hook = trainer.model.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append(kwargs.get("input_ids")), with_kwargs=True)
    trainer.train()
    hook.remove()
    assert trainer.state.global_step == 2
    first = next(x for x in seen if x is not None)
    assert SYSTEM in tok.decode(first[0])


# DeepSeek-R1's shape: the generation prompt opens a <think> block that rendered turns lack, so
# no prompt/answer boundary exists in the rendered pair.
THINK_PROMPT = OWN.replace("{{ '<|im_start|>assistant\n' }}{% endif %}",
                           "{{ '<|im_start|>assistant\n<think>\n' }}{% endif %}")
# Gemma's rule: roles must alternate, so a row with two user turns in a row cannot render.
ALTERNATES = (
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _preflight(own_model, tmp_path, template: str, cls, rows: list[dict]):
    from store import Store
    from tuiapp.engine.jobs.preflight import preflight

    folder = tmp_path / "model"
    shutil.copytree(own_model, folder)
    tok = modeling.load_tokenizer(str(own_model), "model")
    tok.chat_template = template
    tok.save_pretrained(folder)
    home = tmp_path / "home"
    home.mkdir()
    extra = {"reward": "python:builtins:len"} if cls is GRPOJobConfig else {}
    cfg = cls(base_model=str(folder), dataset=str(write(tmp_path, "rows.jsonl", rows)), chat_template="model",
              max_length=96, **extra)
    report = preflight(cfg, Store(home / "tuneloop.db"), home)
    return [r for r in report.refusals if r.startswith("chat_template")]


def _turn(role: str, content: str) -> list[dict]:
    return [{"role": role, "content": content}]


PAIR = {"prompt": _turn("user", "Is Gikri from the valley?"), "chosen": _turn("assistant", "Answer: yes."),
        "rejected": _turn("assistant", "Answer: no.")}
TWO_USERS = [*_turn("user", "Hi."), *_turn("user", "Is Boust here?")]
KTO_ROW = {"prompt": _turn("user", "Is Gikri?"), "completion": _turn("assistant", "Yes."), "label": True}
ROWS = {
    DPOJobConfig: ([PAIR, PAIR], [PAIR, {**PAIR, "prompt": TWO_USERS}]),
    RewardJobConfig: ([PAIR, PAIR], [PAIR, {**PAIR, "prompt": TWO_USERS}]),
    KTOJobConfig: ([KTO_ROW, {**KTO_ROW, "label": False}],
                   [KTO_ROW, {**KTO_ROW, "prompt": TWO_USERS, "label": False}]),
    GRPOJobConfig: ([{"prompt": _turn("user", "Is Gikri?")}, {"prompt": _turn("user", "Is Boust?")}],
                    [{"prompt": _turn("user", "Is Gikri?")}, {"prompt": TWO_USERS}]),
}


@pytest.mark.parametrize("cls", list(ROWS), ids=lambda c: c.kind)
def test_preflight_splits_every_kind_and_names_the_row_it_cannot(own_model, tmp_path, cls):
    good, with_bad_row = ROWS[cls]
    assert _preflight(own_model, tmp_path / "own", OWN, cls, good) == []
    refused = _preflight(own_model, tmp_path / "think", THINK_PROMPT, cls, good)
    assert len(refused) == 1 and "row 1" in refused[0] and "generation prompt" in refused[0], refused
    refused = _preflight(own_model, tmp_path / "alt", ALTERNATES, cls, with_bad_row)
    assert len(refused) == 1 and "row 2" in refused[0] and "alternate" in refused[0], refused


@pytest.mark.parametrize("loss", ["simpo", "orpo"])
def test_simpo_and_orpo_train_the_answer_and_its_end_of_turn(own_model, tmp_path, loss):
    rows = [{"prompt": f"Is {n} from the valley?", "chosen": "Answer: yes.", "rejected": "Answer: no."}
            for n in NAMES[:4]]
    cfg = DPOJobConfig(base_model=str(own_model), dataset=str(write(tmp_path, "pairs.jsonl", rows)),
                       loss_type=loss, **COMMON)
    ctx = ctx_for(cfg, tmp_path / "t")
    records = dpo.load_records(cfg, ctx, "preference")
    model, tok, info = dpo._load(cfg, ctx)
    trainer = dpo.build_dpo_trainer(cfg, ctx, model, tok, records, [], info["device"])
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for side, want in (("chosen", "Answer:yes.<|im_end|>"), ("rejected", "Answer:no.<|im_end|>")):
        ids, labels = batch[f"{side}_input_ids"][0], batch[f"{side}_labels"][0]
        assert flat(tok.decode(ids[labels != -100])) == want
        assert tok.decode(ids[labels == -100]).startswith("<|im_start|>system\n" + SYSTEM)
    trainer.train()
    assert trainer.state.global_step == 2
