"""Ollama Modelfile: template translation checked against the HF chat template, stops, parse back."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tuiapp.engine.export.modelfile import (
    FAMILIES,
    ModelfileError,
    build,
    detect_family,
    go_template,
    parse,
    render,
)

TOKENIZER = Path(__file__).resolve().parents[2] / "sample_data" / "demo" / "tokenizer"
CHATML = next(f for f in FAMILIES if f.name == "chatml")
LLAMA3 = next(f for f in FAMILIES if f.name == "llama3")
# A Llama-3-style Jinja template (written for this test): BOS, header/eot pieces, trimmed content.
LLAMA3_JINJA = (
    "{{- bos_token }}{%- for m in messages %}{{- '<|start_header_id|>' + m['role'] + "
    "'<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}")


# ---------------------------------------------------------------- a tiny Go-template evaluator
# Just the constructs go_template emits, so a test can run the translated template the way
# Ollama would and compare with the Jinja original.

_ACTION = re.compile(r"\{\{(.*?)\}\}", re.S)
_CONDITIONS = {
    ".System": lambda v, m, last: bool(v["System"]),
    'eq .Role "user"': lambda v, m, last: m["role"] == "user",
    'eq .Role "assistant"': lambda v, m, last: m["role"] == "assistant",
    "not $last": lambda v, m, last: not last,
    'and $last (ne .Role "assistant")': lambda v, m, last: last and m["role"] != "assistant",
}


def _parse_go(template: str):
    tokens, pos = [], 0
    for match in _ACTION.finditer(template):
        tokens.append(("text", template[pos:match.start()]))
        tokens.append(("action", match.group(1).strip()))
        pos = match.end()
    tokens.append(("text", template[pos:]))

    def block(i):
        nodes = []
        while i < len(tokens):
            kind, val = tokens[i]
            if kind == "text":
                nodes.append(("text", val))
                i += 1
            elif val == "end" or val.startswith("else"):
                return nodes, i
            elif val.startswith("if "):
                branches, i = [], i
                cond = val[3:]
                while True:
                    body, i = block(i + 1)
                    branches.append((cond, body))
                    kind, val = tokens[i]
                    if val == "end":
                        break
                    cond = val[len("else if "):] if val.startswith("else if ") else None
                nodes.append(("if", branches))
                i += 1
            elif val.startswith("range "):
                body, i = block(i + 1)
                nodes.append(("range", body))
                i += 1
            elif val.startswith("$last :="):
                assert val == "$last := eq (len (slice $.Messages $i)) 1"
                i += 1
            else:
                nodes.append(("var", val))
                i += 1
        return nodes, i

    nodes, _ = block(0)
    return nodes


def run_go(template: str, system: str | None, messages: list[dict]) -> str:
    v = {"System": system, "Messages": messages}

    def run(nodes, m=None, last=False):
        out = ""
        for node in nodes:
            if node[0] == "text":
                out += node[1]
            elif node[0] == "var":
                out += {".System": v["System"], ".Content": (m or {}).get("content")}[node[1]]
            elif node[0] == "if":
                for cond, body in node[1]:
                    if cond is None or _CONDITIONS[cond](v, m, last):
                        out += run(body, m, last)
                        break
            elif node[0] == "range":
                for i, msg in enumerate(v["Messages"]):
                    out += run(node[1], msg, i == len(v["Messages"]) - 1)
        return out

    return run(_parse_go(template))


def hf_render(chat_template: str, messages: list[dict], bos: str = "") -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template([messages], chat_template=chat_template,
                                        add_generation_prompt=messages[-1]["role"] != "assistant",
                                        bos_token=bos, eos_token="")
    return rendered[0].removeprefix(bos)


CONVERSATIONS = [
    [{"role": "user", "content": "Where does Sounu live?"}],
    [{"role": "system", "content": "Answer in one line."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "And the cloak?"}],
]


def _demo_template() -> str:
    return json.loads((TOKENIZER / "tokenizer_config.json").read_text())["chat_template"]


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("fam,jinja,bos", [(CHATML, None, ""), (LLAMA3, LLAMA3_JINJA, "<|begin_of_text|>")])
def test_translated_template_renders_like_the_jinja_original(fam, jinja, bos, conversation):
    jinja = jinja or _demo_template()
    system = next((m["content"] for m in conversation if m["role"] == "system"), None)
    # Ollama hands the system prompt as .System; system-role messages may also be in .Messages
    got = run_go(go_template(fam), system, conversation)
    assert got == hf_render(jinja, conversation, bos)


def test_demo_tokenizer_gives_chatml_with_im_end_stop_and_parses_back():
    mf = build("exports/run-3-q8_0.gguf", TOKENIZER, system='Say "hi" first.',
               params={"temperature": 0.3, "num_ctx": 1024})
    assert mf.family == "chatml" and mf.stops == ["<|im_end|>"] and mf.notes == []
    back = parse(mf.text)
    assert back["FROM"] == "./run-3-q8_0.gguf"
    assert back["TEMPLATE"] == go_template(CHATML)
    assert back["SYSTEM"] == 'Say "hi" first.'
    assert back["PARAMETER"] == [("stop", "<|im_end|>"), ("temperature", "0.3"), ("num_ctx", "1024")]
    assert render("x.gguf", str(TOKENIZER)) == build("x.gguf", TOKENIZER).text


def test_llama3_template_string_and_generation_config_stops(tmp_path):
    fam, why = detect_family(LLAMA3_JINJA, bos="<|begin_of_text|>")
    assert fam is LLAMA3 and why == ""
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "chat_template": LLAMA3_JINJA,
        "added_tokens_decoder": {"128000": {"content": "<|begin_of_text|>"},
                                 "128001": {"content": "<|end_of_text|>"},
                                 "128009": {"content": "<|eot_id|>"}}}))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [128001, 128009]}))
    mf = build("m.gguf", folder)
    assert mf.family == "llama3" and mf.stops == ["<|eot_id|>", "<|end_of_text|>"]
    assert [v for k, v in parse(mf.text)["PARAMETER"] if k == "stop"] == mf.stops


def test_a_lookalike_or_unknown_template_gets_no_template_line_and_says_why(tmp_path):
    # ChatML markers, but a default system prompt the Go template would not reproduce
    qwen_like = ("{%- if messages[0]['role'] != 'system' %}{{- '<|im_start|>system\\nYou are helpful."
                 "<|im_end|>\\n' }}{%- endif %}" + _demo_template())
    fam, why = detect_family(qwen_like)
    assert fam is None and "not one tuneloop translates" in why
    alpaca = "{% for m in messages %}### {{ m['role'] }}:\n{{ m['content'] }}\n\n{% endfor %}"
    mf = build("m.gguf", alpaca)
    assert mf.family is None and mf.stops == []
    assert "TEMPLATE" not in parse(mf.text) or parse(mf.text)["TEMPLATE"] is None
    assert any("no TEMPLATE line" in n for n in mf.notes) and any("no stop token" in n for n in mf.notes)
    raising = "{{ raise_exception('no system role') }}"
    assert "could not render" in detect_family(raising)[1]
    copy = tmp_path / "tok"
    shutil.copytree(TOKENIZER, copy)
    cfg = json.loads((copy / "tokenizer_config.json").read_text())
    del cfg["chat_template"]
    (copy / "tokenizer_config.json").write_text(json.dumps(cfg))
    mf = build("m.gguf", copy, params={"stop": ["<|im_start|>"]})
    assert mf.family is None and mf.stops == ["<|im_end|>", "<|im_start|>"]
    assert any("no chat template" in n for n in mf.notes)


def test_parse_reads_quoting_forms_and_refuses_broken_files():
    text = ('# comment\nfrom ./a.gguf\nPARAMETER stop "<|x|>"\nPARAMETER top_k 20\n'
            'TEMPLATE """line one\nline two"""\nSYSTEM plain words\nLICENSE """MIT"""\n')
    back = parse(text)
    assert back["FROM"] == "./a.gguf" and back["TEMPLATE"] == "line one\nline two"
    assert back["SYSTEM"] == "plain words" and back["LICENSE"] == ["MIT"]
    assert back["PARAMETER"] == [("stop", "<|x|>"), ("top_k", "20")]
    with pytest.raises(ModelfileError, match='line 2: a """ block is never closed'):
        parse('FROM ./a.gguf\nTEMPLATE """open\nnever closed')
    with pytest.raises(ModelfileError, match="no FROM line"):
        parse("PARAMETER top_k 20\n")
    with pytest.raises(ModelfileError, match="PARAMETER needs a name and a value"):
        parse("FROM x\nPARAMETER stop\n")
    with pytest.raises(ModelfileError, match='cannot quote'):
        render("m.gguf", TOKENIZER, system='has """ inside')
    with pytest.raises(ModelfileError, match="no such tokenizer"):
        render("m.gguf", "/no/such/folder")
