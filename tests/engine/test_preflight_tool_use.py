"""Tool use end to end: pre-flight refuses, in words, a chat template that leaves tool calls or
tool definitions out; with a template that renders them, SFT trains the assistant's tool-call
tokens and masks the tool's result (derived mask and {% generation %} markers alike)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tuiapp import paths  # noqa: E402
from tuiapp.engine import data  # noqa: E402
from tuiapp.engine.context import JobContext  # noqa: E402
from tuiapp.engine.events import ListSink  # noqa: E402
from tuiapp.engine.jobs.preflight import PreflightReport  # noqa: E402
from tuiapp.engine.jobs.preflight_drop import check_tool_rendering  # noqa: E402
from tuiapp.engine.train import modeling, sft  # noqa: E402
from tuiapp.engine.train.config import DPOJobConfig, SFTJobConfig  # noqa: E402

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real_formats"
TOOLS_FILE = REAL / "openai_tools.jsonl"


def _template(calls: bool = True, tools: bool = True, markers: bool = False) -> str:
    """A Hermes/Qwen-shaped ChatML template: tools in a system block, calls as <tool_call> JSON,
    results as a user turn. ``markers`` wraps the assistant's text in {% generation %}."""
    gen, end = ("{% generation %}", "{% endgeneration %}") if markers else ("", "")
    call = ("{%- for c in m.tool_calls or [] -%}<tool_call>{\"name\": \"{{ c.function.name }}\", "
            "\"arguments\": {{ c.function.arguments | tojson }}}</tool_call>{%- endfor -%}") if calls else ""
    head = ("{%- if tools -%}<|im_start|>system\n# Tools\n{%- for t in tools -%}"
            "{{ t.function | tojson }}\n{%- endfor -%}<|im_end|>\n{%- endif -%}") if tools else ""
    return (head + "{%- for m in messages -%}"
            "{%- if m.role == 'assistant' -%}<|im_start|>assistant\n" + gen +
            "{{ m.content or '' }}" + call + "<|im_end|>" + end + "\n"
            "{%- elif m.role == 'tool' -%}<|im_start|>user\n<tool_response>{{ m.content }}"
            "</tool_response><|im_end|>\n"
            "{%- else -%}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endif -%}"
            "{%- endfor -%}{%- if add_generation_prompt -%}<|im_start|>assistant\n{%- endif -%}")


def _tok(template: str):
    tok = modeling.load_tokenizer(str(paths.DEMO_TOKENIZER), "chatml")
    tok.chat_template = template
    return tok


def _check(tok, path: Path = TOOLS_FILE, cfg_cls=SFTJobConfig) -> PreflightReport:
    rep = data.validate(path)
    report = PreflightReport(kind=cfg_cls.kind)
    check_tool_rendering(report, cfg_cls(base_model="unused", dataset=str(path)), rep, tok)
    return report


def test_a_template_that_prints_content_only_is_refused_naming_the_call():
    report = _check(_tok(modeling.CHATML_TEMPLATE))
    [refusal] = report.refusals
    assert "does not render tool calls" in refusal and "line 1: the call to get_weather" in refusal
    assert "chat_template=model" in refusal  # the knob


def test_a_template_without_tool_definitions_is_refused():
    [refusal] = _check(_tok(_template(tools=False))).refusals
    assert "does not render tool definitions" in refusal and "get_weather" in refusal


def test_a_template_that_raises_on_tool_turns_is_refused_in_words():
    raising = ("{%- for m in messages -%}{%- if m.role == 'tool' -%}"
               "{{ raise_exception('tool role is not supported') }}{%- endif -%}"
               "{{ m.role }}: {{ m.content }}\n{%- endfor -%}")
    [refusal] = _check(_tok(raising)).refusals
    assert "fails on the tool-use rows (tool role is not supported)" in refusal


def test_a_template_that_renders_tools_passes_and_rows_without_tools_are_not_probed(tmp_path):
    assert _check(_tok(_template())).refusals == []
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"prompt": "Hi", "chosen": "Hello", "rejected": "Go"}\n', encoding="utf-8")
    assert _check(_tok(modeling.CHATML_TEMPLATE), plain, DPOJobConfig).refusals == []


# ---------------------------------------------------------------- what SFT trains on


def _model_folder(tmp_path: Path, template: str) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _tok(template)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=512,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=None)
    folder = tmp_path / "tool-model"
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _trained_and_masked(tok, trainer) -> tuple[str, str]:
    """(text of the trained tokens, text of the masked ones) of the first training row."""
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    trained = tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab != -100])
    masked = tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab == -100])
    return trained, masked


# (file, the call's name and an argument, the tool's result, the final reply, the user's question)
TOOL_FILES = {
    "openai": (TOOLS_FILE, "get_weather", "Paris", "temp_c", "It is 18 degrees", "What's the weather"),
    "sharegpt": (REAL / "sharegpt_tools.json", "convert_currency", "EUR", "converted_amount",
                 "100 US dollars is about", "Convert 100 US dollars"),
}


@pytest.mark.parametrize("markers", [False, True], ids=["derived-mask", "generation-markers"])
@pytest.mark.parametrize("shape", sorted(TOOL_FILES))
def test_sft_trains_the_tool_call_and_masks_the_tool_result(tmp_path, markers, shape):
    path, name, argument, result, reply, question = TOOL_FILES[shape]
    torch.set_num_threads(1)
    folder = _model_folder(tmp_path, _template(markers=markers))
    cfg = SFTJobConfig(base_model=str(folder), dataset=str(path), method="lora", max_steps=2,
                       batch_size=2, max_length=512, eval_split=0.0, sample_prompts=[], lora_r=4,
                       lora_alpha=8, device="cpu", dtype="fp32", chat_template="model",
                       warmup_ratio=0.0, logging_steps=1, save_steps=100)
    ctx = JobContext(tmp_path / "run", sink=ListSink(), dataset_path=path,
                     base_model_path=str(folder))
    tok = modeling.load_tokenizer(str(folder), "model")
    records, conversational = sft.load_records(cfg, ctx)
    model = modeling.load_model(cfg, str(folder), tok, "cpu", torch.float32)
    trainer = sft.build_trainer(cfg, ctx, model, tok, records, [], conversational, "cpu", torch.float32)
    trained, masked = _trained_and_masked(tok, trainer)
    assert name in trained and argument in trained  # the call: name and arguments
    assert result in masked and result not in trained  # the tool's result
    assert reply in trained and question in masked and question not in trained
    assert f'{name}","arguments"' in trained.replace(" ", "")  # a call, not the tools list
    assert '"description"' in masked  # the row's tools= rendered on both mask paths, untrained
    assert '"description"' not in trained
    out = trainer.train()
    assert out.global_step == 2 and out.training_loss == out.training_loss  # finite, recorded


def test_preflight_of_an_sft_job_on_tool_calls_refuses_the_demo_template(tiny_model, tmp_path):
    from store import Store
    from tuiapp.engine.jobs.preflight import preflight

    cfg = SFTJobConfig(base_model=str(tiny_model), dataset=str(TOOLS_FILE), max_length=256)
    report = preflight(cfg, Store(":memory:"), tmp_path, free_bytes=2**40)
    assert any("does not render tool calls" in r and "get_weather" in r for r in report.refusals), \
        report.refusals
