"""Answering as a run renders prompts with the template the run trained with: a run trained with
chat_template=chatml on a base whose own template adds a default system prompt is asked in
ChatML (as in training), the base keeps its own template, and the run template's end-of-turn
joins the stop tokens."""

from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch")

from tuiapp.engine.infer import run_tokenizer  # noqa: E402
from tuiapp.engine.train import modeling  # noqa: E402

SYSTEM = "You are a helpful AI assistant named SmolLM"
OWN = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + SYSTEM + "<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# A run template whose turns end on another token than the base's.
ENDS_ON_EOT = OWN.replace("<|im_end|>", "<|endoftext|>")


@pytest.fixture(scope="module")
def base_and_run(tiny_model, tmp_path_factory):
    """(base folder with its own template, run adapter folder saved with ChatML as training does)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("runtok")
    base = root / "base"
    shutil.copytree(tiny_model, base)
    tok = modeling.load_tokenizer(str(base), "model")
    tok.chat_template = OWN
    tok.save_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(str(base))
    peft = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    run = root / "run" / "final"
    peft.save_pretrained(str(run))
    modeling.load_tokenizer(str(base), "chatml").save_pretrained(run)  # what sft.py saves for chatml
    return base, run


def test_saved_template_reads_jinja_or_tokenizer_config(tmp_path):
    assert run_tokenizer.saved_template(tmp_path) is None
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": [
        {"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}), encoding="utf-8")
    assert run_tokenizer.saved_template(tmp_path) == "D"
    (tmp_path / "chat_template.jinja").write_text("J", encoding="utf-8")
    assert run_tokenizer.saved_template(tmp_path) == "J"


def test_a_run_is_asked_in_the_template_it_trained_with_and_the_base_in_its_own(base_and_run):
    from tuiapp.engine.infer.generate import TransformersBackend
    from tuiapp.engine.infer.params import GenerationParams

    base, run = base_and_run
    trained = modeling.load_tokenizer(str(base), "chatml")
    prompt = [{"role": "user", "content": "Is Gikri from the valley?"}]
    want_run = trained(trained.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True),
                       add_special_tokens=False)["input_ids"]
    backend = TransformersBackend(base, device="cpu", dtype="fp32")
    try:
        params = GenerationParams(max_new_tokens=3)
        as_base = backend.prompt_ids(prompt, params)
        as_run = backend.prompt_ids(prompt, params, adapter=run)
        assert SYSTEM in backend.tokenizer.decode(as_base)
        assert as_run == want_run and SYSTEM not in backend.tokenizer.decode(as_run)
        assert backend.tokenizer.chat_template == OWN  # the base tokenizer is left as it was
        final = [c for c in backend.generate(run, prompt, params) if c.done][-1]
        assert final.done and final.tokens >= 1
    finally:
        backend.close()


def test_the_run_templates_end_of_turn_joins_the_stop_ids(base_and_run, tmp_path):
    base, _ = base_and_run
    tok = modeling.load_tokenizer(str(base), "model")
    folder = tmp_path / "adapter"
    other = modeling.load_tokenizer(str(base), "model")
    other.chat_template = ENDS_ON_EOT
    other.save_pretrained(folder)
    got = run_tokenizer.run_template(tok, folder)
    assert got.template == ENDS_ON_EOT
    assert tok.convert_tokens_to_ids("<|endoftext|>") in got.stop_ids
    same = tmp_path / "same"
    tok.save_pretrained(same)
    assert run_tokenizer.run_template(tok, same).template is None  # nothing to change
