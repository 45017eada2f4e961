"""Ollama Modelfile for an exported GGUF: write one (``render``) and read one back (``parse``).

The TEMPLATE line is translated from the model's Jinja chat template into Ollama's Go template
syntax. Translation is by family (ChatML — the demo's and Qwen2's —, Llama 3): a family is a set
of literal pieces around each role's text. A family is only claimed after the model's own Jinja
template, rendered on a probe conversation, equals those pieces put together, so a template
that merely looks similar (a default system prompt, a date header) is never mistranslated; it
gets no TEMPLATE line and Ollama falls back to its own reading of the GGUF's chat template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Family:
    name: str
    system: tuple[str, str]     # text before / after the system prompt
    user: tuple[str, str]
    assistant: tuple[str, str]
    generation: str             # what opens the assistant's turn
    end_of_turn: str            # the token a turn ends with; always a stop
    bos: str = ""               # llama.cpp adds BOS itself, so the template leaves it out


FAMILIES = (
    Family("chatml", ("<|im_start|>system\n", "<|im_end|>\n"), ("<|im_start|>user\n", "<|im_end|>\n"),
           ("<|im_start|>assistant\n", "<|im_end|>\n"), "<|im_start|>assistant\n", "<|im_end|>"),
    Family("llama3", ("<|start_header_id|>system<|end_header_id|>\n\n", "<|eot_id|>"),
           ("<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>"),
           ("<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
           "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>", bos="<|begin_of_text|>"),
)
PROBE = ({"role": "system", "content": "SYSTEM-TEXT"}, {"role": "user", "content": "FIRST-QUESTION"},
         {"role": "assistant", "content": "FIRST-ANSWER"}, {"role": "user", "content": "SECOND-QUESTION"})


class ModelfileError(ValueError):
    """A Modelfile that cannot be written or read; the message says what is wrong."""


@dataclass
class Modelfile:
    text: str
    family: str | None                       # None: no TEMPLATE line was written
    stops: list[str]
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ template translation


def _expected(fam: Family, messages: tuple[dict, ...]) -> str:
    pieces = {"system": fam.system, "user": fam.user, "assistant": fam.assistant}
    text = "".join(pieces[m["role"]][0] + m["content"] + pieces[m["role"]][1] for m in messages)
    return text + fam.generation


def _render_jinja(chat_template: str, messages: tuple[dict, ...], bos: str, eos: str) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template([list(messages)], chat_template=chat_template,
                                        add_generation_prompt=True, bos_token=bos, eos_token=eos)
    return rendered[0]


def detect_family(chat_template: str | None, bos: str = "", eos: str = "") -> tuple[Family | None, str]:
    """The family whose pieces reproduce ``chat_template`` exactly, and a sentence saying why not."""
    if not chat_template:
        return None, "the model has no chat template"
    # with and without a system message: a default system prompt must not slip through
    probes = (PROBE, PROBE[1:])
    try:
        rendered = [_render_jinja(chat_template, p, bos, eos) for p in probes]
    except Exception as exc:  # a template may raise on purpose (e.g. no system role)
        return None, f"its chat template could not render a system/user/assistant probe ({exc})"
    for fam in FAMILIES:
        prefixes = {bos, fam.bos} - {""}

        def strip(text: str, prefixes=prefixes) -> str:
            for prefix in prefixes:
                text = text.removeprefix(prefix)
            return text

        if all(strip(r) == _expected(fam, p) for r, p in zip(rendered, probes, strict=True)):
            return fam, ""
    return None, ("its chat template is not one tuneloop translates exactly (ChatML, Llama 3); "
                  "Ollama falls back to its own reading of the chat template stored in the GGUF")


def go_template(fam: Family) -> str:
    """Ollama's Go template for a family: system prompt first, then the turns, then the opening of
    the assistant's reply unless the last message already is one (a prefill stays open)."""
    s, u, a = fam.system, fam.user, fam.assistant
    # No whitespace-trimming markers: the pieces end in newlines that must survive.
    return ("{{ if .System }}" + s[0] + "{{ .System }}" + s[1] + "{{ end }}"
            "{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
            '{{ if eq .Role "user" }}' + u[0] + "{{ .Content }}" + u[1]
            + '{{ else if eq .Role "assistant" }}' + a[0] + "{{ .Content }}"
            + "{{ if not $last }}" + a[1] + "{{ end }}{{ end }}"
            + '{{ if and $last (ne .Role "assistant") }}' + fam.generation + "{{ end }}{{ end }}")


# ------------------------------------------------------------------ reading the model's tokenizer


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _tokenizer_facts(folder: Path) -> tuple[str | None, str, list[str]]:
    """(chat template, BOS text, EOS/EOT token texts) from a tokenizer or model folder."""
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.exists() else {}
    template = cfg.get("chat_template")
    jinja = folder / "chat_template.jinja"
    if jinja.exists():
        template = jinja.read_text(encoding="utf-8")
    if isinstance(template, list):  # named templates: the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    eos = [t for t in [_token_text(cfg.get("eos_token"))] if t]
    gen_path = folder / "generation_config.json"
    if gen_path.exists():  # generation may stop on several ids (Llama 3: eot and eos)
        ids = json.loads(gen_path.read_text(encoding="utf-8")).get("eos_token_id")
        ids = ids if isinstance(ids, list) else [ids] if ids is not None else []
        by_id = {int(k): _token_text(v) for k, v in (cfg.get("added_tokens_decoder") or {}).items()}
        eos += [by_id[i] for i in ids if by_id.get(i)]
    return template, _token_text(cfg.get("bos_token")) or "", eos


# ------------------------------------------------------------------ writing


def _quote_block(keyword: str, text: str) -> str:
    if '"""' in text:
        raise ModelfileError(f'{keyword} text contains """, which a Modelfile cannot quote.')
    return f'{keyword} """{text}"""'


def _param_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    if '"' in text or "\n" in text:
        raise ModelfileError(f"parameter value {text!r} cannot hold a quote or a newline.")
    return f'"{text}"'


def build(gguf_name: str, tokenizer_dir_or_chat_template: str | Path, system: str | None = None,
          params: dict[str, Any] | None = None) -> Modelfile:
    """The Modelfile for ``gguf_name`` (a file beside it), with what was decided and why."""
    source = tokenizer_dir_or_chat_template
    folder = Path(source) if isinstance(source, Path) or (
        isinstance(source, str) and "\n" not in source and "{" not in source) else None
    if folder is not None:
        if not folder.is_dir():
            raise ModelfileError(f"{folder}: no such tokenizer or model folder.")
        template, bos, eos = _tokenizer_facts(folder)
    else:
        template, bos, eos = str(source), "", []
    fam, why = detect_family(template, bos, eos[0] if eos else "")
    stops = list(dict.fromkeys(([fam.end_of_turn] if fam else []) + eos))
    extra = dict(params or {})
    user_stops = extra.pop("stop", [])
    stops += [s for s in ([user_stops] if isinstance(user_stops, str) else user_stops) if s not in stops]

    name = Path(gguf_name).name
    lines = ["# Ollama Modelfile written by tuneloop. Create the model with:",
             f"#   ollama create NAME -f Modelfile   (run beside {name})", f"FROM ./{name}"]
    notes = []
    if fam:
        lines.append(_quote_block("TEMPLATE", go_template(fam)))
    else:
        notes.append(f"no TEMPLATE line: {why}.")
        lines.append(f"# no TEMPLATE: {why}.")
    lines += [f"PARAMETER stop {_param_value(s)}" for s in stops]
    for key, value in extra.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        lines += [f"PARAMETER {key} {_param_value(v)}" for v in values]
    if system:
        lines.append(_quote_block("SYSTEM", system))
    if not stops:
        notes.append("no stop token found (no EOS in the tokenizer config); answers may run on.")
    return Modelfile("\n".join(lines) + "\n", fam.name if fam else None, stops, notes)


def render(gguf_name: str, tokenizer_dir_or_chat_template: str | Path, system: str | None = None,
           params: dict[str, Any] | None = None) -> str:
    """Modelfile text: FROM, TEMPLATE (known families), PARAMETER stop per EOS/EOT, SYSTEM."""
    return build(gguf_name, tokenizer_dir_or_chat_template, system, params).text


# ------------------------------------------------------------------ reading


def _read_value(rest: str, lines: list[str], i: int, lineno: int) -> tuple[str, int]:
    """A value that may be bare, "quoted" or a multi-line triple-quoted block; returns the
    value and the index of the next unread line."""
    if rest.startswith('"""'):
        body = rest[3:]
        while '"""' not in body:
            if i >= len(lines):
                raise ModelfileError(f'line {lineno}: a """ block is never closed.')
            body += "\n" + lines[i]
            i += 1
        value, _, tail = body.partition('"""')
        if tail.strip():
            raise ModelfileError(f'line {lineno}: unexpected text after the closing """: {tail.strip()!r}')
        return value, i
    if rest.startswith('"'):
        end = rest.find('"', 1)
        if end < 0:
            raise ModelfileError(f"line {lineno}: a quoted value is never closed.")
        return rest[1:end], i
    return rest.strip(), i


def parse(text: str) -> dict[str, Any]:
    """{"FROM": str, "TEMPLATE": str|None, "SYSTEM": str|None, "PARAMETER": [(name, value)], ...}.

    Other instructions (ADAPTER, LICENSE, MESSAGE) are kept under their name as lists of values.
    """
    lines = text.splitlines()
    out: dict[str, Any] = {"FROM": None, "TEMPLATE": None, "SYSTEM": None, "PARAMETER": []}
    i = 0
    while i < len(lines):
        lineno, line = i + 1, lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "PARAMETER":
            name, _, rest = rest.partition(" ")
            if not name or not rest.strip():
                raise ModelfileError(f"line {lineno}: PARAMETER needs a name and a value.")
            value, i = _read_value(rest.strip(), lines, i, lineno)
            out["PARAMETER"].append((name, value))
            continue
        if not rest:
            raise ModelfileError(f"line {lineno}: {keyword} has no value.")
        value, i = _read_value(rest, lines, i, lineno)
        if keyword in ("FROM", "TEMPLATE", "SYSTEM"):
            out[keyword] = value
        else:
            out.setdefault(keyword, []).append(value)
    if out["FROM"] is None:
        raise ModelfileError("no FROM line; a Modelfile must name its model file.")
    return out
