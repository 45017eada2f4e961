"""The assistant mask derived from a chat template without {% generation %} markers: it marks the
same tokens as the marker template, keeps the model's default system prompt, covers every
assistant turn, and refuses a template that rewrites earlier turns."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from tuiapp.engine.train import modeling, template_mask  # noqa: E402

# SmolLM2's shape: ChatML with a default system prompt, no generation markers.
PLAIN = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Drops every assistant turn but the last: earlier turns change when one is added.
REWRITES = (
    "{% for message in messages %}{% if message['role'] != 'assistant' or loop.last %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TALK = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "Four."},
        {"role": "user", "content": "And 3+3?"}, {"role": "assistant", "content": "Six."}]


@pytest.fixture(scope="module")
def tok():
    from tuiapp import paths

    tok = modeling.load_tokenizer(str(paths.DEMO_TOKENIZER), "chatml")
    tok.chat_template = PLAIN
    return tok


def trained_text(tok, out) -> list[str]:
    """Runs of consecutive trained tokens, decoded."""
    runs, cur = [], []
    for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True):
        if m:
            cur.append(i)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


def test_every_assistant_turn_is_masked_and_the_default_system_prompt_stays(tok):
    assert not template_mask.has_generation_markers(tok)
    out = template_mask.tokenize_with_mask(tok, TALK)
    assert [r.replace(" ", "") for r in trained_text(tok, out)] == ["Four.<|im_end|>", "Six.<|im_end|>"]
    full = tok.decode(out["input_ids"])
    assert full.startswith("<|im_start|>system") and "helpful" in full
    assert out["input_ids"] == tok(tok.apply_chat_template(TALK, tokenize=False),
                                   add_special_tokens=False)["input_ids"]


def test_derived_mask_equals_the_generation_marker_mask(tok):
    marked = modeling.load_tokenizer(str(__import__("tuiapp").paths.DEMO_TOKENIZER), "chatml")
    assert template_mask.has_generation_markers(marked)
    talk = [{"role": "system", "content": "Be brief."}, *TALK]
    want = marked.apply_chat_template(talk, return_dict=True, return_assistant_tokens_mask=True)
    got = template_mask.tokenize_with_mask(marked, talk)
    assert got["input_ids"] == want["input_ids"]
    assert got["assistant_masks"] == want["assistant_masks"]


def test_max_length_cuts_ids_and_mask_together(tok):
    out = template_mask.tokenize_with_mask(tok, TALK, max_length=10)
    assert len(out["input_ids"]) == len(out["assistant_masks"]) == 10


def test_a_template_that_rewrites_earlier_turns_is_refused_naming_the_row(tok):
    import copy

    other = copy.copy(tok)
    other.chat_template = REWRITES
    rows = [{"messages": TALK[:2]}, {"messages": TALK}]
    assert template_mask.first_unmaskable(tok, rows) is None
    row, reason = template_mask.first_unmaskable(other, rows)
    assert row == 2 and "rewrites earlier turns" in reason
    with pytest.raises(template_mask.TemplateMaskError, match="turn 3"):
        template_mask.tokenize_with_mask(other, TALK)


def test_sft_trains_on_a_template_without_markers(tiny_model, tmp_path):
    """A model folder whose own template has no markers: SFT with chat_template=model trains
    only the assistant's tokens (the old path failed after loading)."""
    import shutil

    import torch

    from tuiapp import paths
    from tuiapp.engine.context import JobContext
    from tuiapp.engine.events import ListSink
    from tuiapp.engine.train import sft
    from tuiapp.engine.train.config import SFTJobConfig

    torch.set_num_threads(1)
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    tok = modeling.load_tokenizer(str(paths.DEMO_TOKENIZER), "chatml")
    tok.chat_template = PLAIN
    tok.save_pretrained(folder)
    lines = (paths.DEMO_DIR / "sft.jsonl").read_text(encoding="utf-8").splitlines()[:8]
    data = tmp_path / "sft.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = SFTJobConfig(base_model=str(folder), dataset=str(data), method="lora", max_steps=2,
                       batch_size=4, logging_steps=1, save_steps=100, eval_split=0.0,
                       sample_prompts=[], max_length=96, lora_r=4, lora_alpha=8, chat_template="model")
    loaded = modeling.load_tokenizer(str(folder), "model")
    assert loaded.chat_template == PLAIN
    model = modeling.load_model(cfg, str(folder), loaded, "cpu", torch.float32)
    ctx = JobContext(output_dir=tmp_path / "t", sink=ListSink())
    records, conversational = sft.load_records(cfg, ctx)
    trainer = sft.build_trainer(cfg, ctx, model, loaded, records, [], conversational, "cpu", torch.float32)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    trained = loaded.decode(ids[labels != -100])
    assert "helpful assistant" not in trained and "<|im_start|>" not in trained
    assert trained.count("<|im_end|>") == 2 and "helpful" in loaded.decode(ids)
    result = sft.train(cfg, JobContext(output_dir=tmp_path / "run", sink=ListSink()))
    assert result["status"] == "completed" and result["steps"] == 2
    assert torch.isfinite(torch.tensor(result["final_loss"]))
    assert (tmp_path / "run" / "final" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("template,ok", [(PLAIN, True), (REWRITES, False)])
def test_preflight_measures_the_mask_and_refuses_a_rewriting_template(tiny_model, tmp_path, template, ok):
    import json
    import shutil

    from store import Store
    from tuiapp import paths
    from tuiapp.engine.jobs.preflight import preflight
    from tuiapp.engine.train.config import SFTJobConfig

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    tok = modeling.load_tokenizer(str(paths.DEMO_TOKENIZER), "chatml")
    tok.chat_template = template
    tok.save_pretrained(folder)
    rows = [{"messages": TALK[:2]}, {"messages": TALK[:2]}, {"messages": TALK}]
    data = tmp_path / "talk.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    home = tmp_path / "home"
    home.mkdir()
    cfg = SFTJobConfig(base_model=str(folder), dataset=str(data), chat_template="model", max_length=96)
    report = preflight(cfg, Store(home / "tuneloop.db"), home)
    refusals = [r for r in report.refusals if r.startswith("chat_template")]
    if ok:
        assert not refusals, report.refusals
    else:
        assert len(refusals) == 1 and "row 3" in refusals[0] and "rewrites earlier turns" in refusals[0]
