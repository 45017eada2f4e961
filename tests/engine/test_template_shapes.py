"""The end-of-turn, the prompt/completion split and the per-turn mask on real-shaped templates
without {% generation %} markers: SmolLM2's ChatML with a default system prompt, Llama 3's
headers, Gemma's turns (no system role, eos is not the end of a turn), and a template that strips
<think> from past turns (refused for SFT, naming the row; a preference prompt keeps the stripped
shape the model sees in use)."""

from __future__ import annotations

import copy

import pytest

pytest.importorskip("transformers")

from tuiapp.engine.train import template_mask  # noqa: E402

SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + SMOL_SYSTEM + "<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{% set first_user_prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + "
    "message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
# Qwen3-like: reasoning is dropped from assistant turns that are no longer the last one.
STRIPS_THINK = (
    "{% for message in messages %}{% set content = message['content'] %}"
    "{% if message['role'] == 'assistant' and not loop.last %}"
    "{% set content = content.split('</think>')[-1] | trim %}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + content + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TALK = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "Four."},
        {"role": "user", "content": "And 3+3?"}, {"role": "assistant", "content": "Six."}]


@pytest.fixture(scope="module")
def base_tok():
    from transformers import AutoTokenizer

    from tuiapp import paths

    tok = AutoTokenizer.from_pretrained(paths.DEMO_TOKENIZER)
    tok.add_special_tokens({"additional_special_tokens": [
        "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|begin_of_text|>",
        "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>"]})
    return tok


def shaped(base_tok, template: str, eos: str, bos: str | None = None):
    tok = copy.deepcopy(base_tok)
    tok.chat_template = template
    tok.eos_token = eos
    if bos:
        tok.bos_token = bos
    return tok


def trained_runs(tok, ids, mask) -> list[str]:
    runs, cur = [], []
    for i, m in zip(ids, mask, strict=True):
        if m:
            cur.append(i)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return [r.replace(" ", "") for r in runs]


@pytest.mark.parametrize("name,template,eos,bos,end", [
    ("smollm2", SMOLLM2, "<|im_end|>", None, "<|im_end|>"),
    ("llama3", LLAMA3, "<|eot_id|>", "<|begin_of_text|>", "<|eot_id|>"),
    ("gemma", GEMMA, "<eos>", "<bos>", "<end_of_turn>"),  # eos is not what ends a turn
])
def test_end_of_turn_is_the_templates_own_and_every_assistant_turn_is_masked(
        base_tok, name, template, eos, bos, end):
    tok = shaped(base_tok, template, eos, bos)
    assert not template_mask.has_generation_markers(tok)
    assert template_mask.end_of_turn(tok) == end
    stops = template_mask.end_of_turn_ids(tok)
    assert tok.convert_tokens_to_ids(end) in stops and tok.eos_token_id in stops
    out = template_mask.tokenize_with_mask(tok, TALK)
    assert trained_runs(tok, out["input_ids"], out["assistant_masks"]) == [f"Four.{end}", f"Six.{end}"]


def test_completion_split_prompt_is_what_generation_sees_with_the_default_system_prompt(base_tok):
    tok = shaped(base_tok, SMOLLM2, "<|im_end|>")
    prompt, answer = TALK[:3], TALK[3:]
    split = template_mask.completion_split(tok, prompt, answer)
    served = tok(tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False)["input_ids"]
    assert split["prompt_ids"] == served  # the very ids generation starts from
    assert SMOL_SYSTEM in tok.decode(split["prompt_ids"])
    assert tok.decode(split["completion_ids"]).replace(" ", "") == "Six.<|im_end|>"  # no trailing newline
    assert set(split["completion_mask"]) == {1}


def test_completion_split_gemma_folds_the_system_prompt_and_ends_on_end_of_turn(base_tok):
    tok = shaped(base_tok, GEMMA, "<eos>", "<bos>")
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    split = template_mask.completion_split(tok, prompt, [{"role": "assistant", "content": "Hello."}])
    text = tok.decode(split["prompt_ids"])
    assert text.startswith("<bos><start_of_turn>user") and "Be brief." in text
    assert text.endswith("<start_of_turn>model\n")
    assert tok.decode(split["completion_ids"]).replace(" ", "") == "Hello.<end_of_turn>"


def test_multi_message_completion_masks_only_the_assistant_turns(base_tok):
    tok = shaped(base_tok, LLAMA3, "<|eot_id|>", "<|begin_of_text|>")
    split = template_mask.completion_split(tok, TALK[:1], TALK[1:])
    runs = trained_runs(tok, split["completion_ids"], split["completion_mask"])
    assert runs == ["Four.<|eot_id|>", "Six.<|eot_id|>"]
    assert "And3+3?" in tok.decode(split["completion_ids"]).replace(" ", "")  # kept, not trained
    assert split["completion_mask"][0] == 1 and split["completion_mask"][-1] == 1


def test_a_template_that_strips_think_is_refused_for_sft_naming_the_row(base_tok):
    tok = shaped(base_tok, STRIPS_THINK, "<|im_end|>")
    thinking = [TALK[0], {"role": "assistant", "content": "<think>2 and 2</think>Four."}, *TALK[2:]]
    rows = [{"messages": TALK}, {"messages": TALK[:2]}, {"messages": thinking}]
    row, reason = template_mask.first_unmaskable(tok, rows)
    assert row == 3 and "rewrites earlier turns" in reason and "turn 3" in reason


def test_a_preference_prompt_keeps_the_stripped_shape_the_model_sees(base_tok):
    tok = shaped(base_tok, STRIPS_THINK, "<|im_end|>")
    prompt = [TALK[0], {"role": "assistant", "content": "<think>2 and 2</think>Four."}, TALK[2]]
    rows = [{"prompt": prompt, "chosen": [TALK[3]], "rejected": [{"role": "assistant", "content": "Five."}]}]
    assert template_mask.first_unmaskable(tok, rows) is None
    split = template_mask.completion_split(tok, prompt, [TALK[3]])
    assert "think" not in tok.decode(split["prompt_ids"])  # as served: the past reasoning is gone


def test_preference_and_prompt_rows_are_checked_and_a_bad_one_is_named(base_tok):
    tok = shaped(base_tok, GEMMA, "<eos>", "<bos>")
    good = {"prompt": "Hi", "chosen": "Hello.", "rejected": "Go away."}
    # two user turns in a row: Gemma's template raises, which is a refusal in words
    bad = {"prompt": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
           "completion": "c", "label": True}
    assert template_mask.first_unmaskable(tok, [good, {"prompt": "Only a prompt"}]) is None
    row, reason = template_mask.first_unmaskable(tok, [good, good, bad])
    assert row == 3 and "alternate" in reason


def test_ppo_and_training_samples_stop_at_the_templates_end_of_turn(base_tok):
    from tuiapp.engine.train import callbacks, ppo

    tok = shaped(base_tok, GEMMA, "<eos>", "<bos>")
    end = tok.convert_tokens_to_ids("<end_of_turn>")
    assert end in ppo.stop_token_ids(tok) and tok.eos_token_id in ppo.stop_token_ids(tok)

    class Recorder:  # stands in for the model: records what generate was told to stop at
        training = False
        seen: dict = {}

        def eval(self):
            pass

        def parameters(self):
            import torch

            yield torch.zeros(1)

        def generate(self, input_ids, **kwargs):
            Recorder.seen = kwargs
            return input_ids

    callbacks.generate_samples(Recorder(), tok, ["Hi"], max_new_tokens=2)
    assert end in Recorder.seen["eos_token_id"]
