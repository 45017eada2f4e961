"""Token statistics and example rendering for validated datasets.

Token counts come from the real tokenizer and the real chat template (the tokenizer's own, or
ChatML when it has none), because what matters is what the trainer will see: how long the
examples are, what truncation at max_length cuts, and whether it cuts every assistant token.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

from tuiapp import paths
from tuiapp.engine.data.tools import as_text
from tuiapp.engine.data.types import ValidationReport

DEMO_TOKENIZER = paths.DEMO_TOKENIZER
MAX_LISTED_LINES = 20  # line numbers listed per finding (duplicates, empty-after-truncation)
HIST_BINS = 20


# ---------------------------------------------------------------- tokenizer


def load_tokenizer(path: str | Path | None = None):
    """A transformers tokenizer from a folder, a tokenizer.json file, or (None) the demo one.

    Local code is never executed (trust_remote_code=False). A name that is not a local path is
    handed to transformers as a hub id, which honours HF_HUB_OFFLINE.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if path is None:
        if not DEMO_TOKENIZER.exists():
            raise FileNotFoundError(f"the demo tokenizer is missing ({DEMO_TOKENIZER}); run "
                                    "`tuneloop demo generate` or pass --tokenizer PATH")
        path = DEMO_TOKENIZER
    local = Path(path).expanduser()
    if local.is_file():
        if local.suffix != ".json":
            raise ValueError(f"{local} is not a tokenizer: give a folder with tokenizer.json or "
                             "the tokenizer.json file itself")
        return PreTrainedTokenizerFast(tokenizer_file=str(local))
    if local.is_dir() or str(path).startswith((".", "/", "~")) or local.exists():
        if not local.is_dir():
            raise FileNotFoundError(f"no tokenizer at {local}")
        try:
            return AutoTokenizer.from_pretrained(str(local), trust_remote_code=False)
        except Exception as exc:  # noqa: BLE001 - report any loader failure in plain words
            raise ValueError(f"cannot load a tokenizer from {local}: {exc}") from exc
    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)


def chatml(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    text = "".join(f"<|im_start|>{m['role']}\n{as_text(m)}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


_WORDS = re.compile(r"\w+|[^\w\s]")


class Counting:
    """One interface over transformers tokenizers, bare `tokenizers` ones, or none at all."""

    def __init__(self, tokenizer: Any = None):
        self.tok = tokenizer
        self.template = "chatml"
        self.name = "none (words and punctuation, approximate)"
        self.template_failures = 0
        if tokenizer is None:
            return
        self.name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
        if getattr(tokenizer, "chat_template", None) and hasattr(tokenizer,
                                                                 "apply_chat_template"):
            self.template = "tokenizer"

    def count(self, text: str) -> int:
        if self.tok is None:
            return len(_WORDS.findall(text))
        if hasattr(self.tok, "encode") and not hasattr(self.tok, "apply_chat_template"):
            return len(self.tok.encode(text, add_special_tokens=False).ids)  # tokenizers.Tokenizer
        return len(self.tok(text, add_special_tokens=False)["input_ids"])

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = False,
               tools: list | None = None) -> str:
        if self.template == "tokenizer":
            try:
                return self.tok.apply_chat_template(messages, tokenize=False, tools=tools or None,
                                                    add_generation_prompt=add_generation_prompt)
            except Exception:  # noqa: BLE001 - a template that rejects a turn: fall back, count
                self.template_failures += 1
        return chatml(messages, add_generation_prompt)


_PROBE = "tuneloop_probe_fn"


def tool_support(c: Counting) -> dict[str, bool]:
    """Whether the chat template in use renders tool calls and tool definitions: a template
    that drops them would train the model on conversations with the calls cut out."""
    call = {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": _PROBE, "arguments": {"x": 1}}}]}
    msgs = [{"role": "user", "content": "q"}, call, {"role": "tool", "content": "r"},
            {"role": "assistant", "content": "a"}]
    tools = [{"type": "function", "function": {"name": _PROBE + "_def", "description": "d",
                                               "parameters": {"type": "object"}}}]
    before = c.template_failures
    out = c.render(msgs, tools=tools)
    c.template_failures = before  # the probe is not one of the dataset's rows
    if c.template != "tokenizer":
        return {"tool_calls": True, "tools": False}  # ChatML fallback: calls as JSON text
    return {"tool_calls": _PROBE in out.replace(_PROBE + "_def", ""), "tools": _PROBE + "_def" in out}


# ---------------------------------------------------------------- per-record measures


def _conversation(c: Counting, msgs: list[dict[str, str]],
                  tools: list | None = None) -> tuple[int, list[tuple[int, int]]]:
    """Total tokens of the rendered conversation and the token span of each assistant turn."""
    total = c.count(c.render(msgs, tools=tools))
    spans = []
    for i, msg in enumerate(msgs):
        if msg["role"] == "assistant":
            start = c.count(c.render(msgs[:i], add_generation_prompt=True, tools=tools)) \
                if i else 0
            spans.append((start, c.count(c.render(msgs[: i + 1], tools=tools))))
    return total, spans


def _prompt_reply(c: Counting, prompt: Any, reply: Any) -> tuple[int, int]:
    """(prompt tokens, prompt+reply tokens) for string or conversational pairs."""
    if isinstance(prompt, list):
        return (c.count(c.render(prompt, add_generation_prompt=True)),
                c.count(c.render(prompt + reply)))
    return c.count(prompt), c.count(prompt + reply)


def _roles(record: dict) -> list[tuple[str, str]]:
    if "messages" in record:
        return [(m["role"], as_text(m)) for m in record["messages"]]
    if "completion" in record:
        prompt, completion = record["prompt"], record["completion"]
        if isinstance(prompt, list):
            return [(m["role"], m["content"]) for m in prompt + completion]
        return [("user", prompt), ("assistant", completion)]
    if "prompt" in record and "chosen" not in record:
        prompt = record["prompt"]
        return [(m["role"], m["content"]) for m in prompt] if isinstance(prompt, list) \
            else [("user", prompt)]
    return []


# ---------------------------------------------------------------- summaries


def percentiles(values: list[int]) -> dict[str, float] | None:
    """min/mean/p50/p90/p99/max/total by nearest rank (no interpolation: real example sizes)."""
    if not values:
        return None
    s = sorted(values)

    def rank(p: float) -> int:
        return s[max(0, math.ceil(p / 100 * len(s)) - 1)]

    return {"min": s[0], "mean": round(sum(s) / len(s), 2), "p50": rank(50), "p90": rank(90),
            "p99": rank(99), "max": s[-1], "total": sum(s)}


def histogram(values: list[int], bins: int = HIST_BINS) -> dict[str, list[int]]:
    """Equal-width integer bins from min to max; edges has one more entry than counts."""
    if not values:
        return {"edges": [], "counts": []}
    lo, hi = min(values), max(values)
    width = max(1, math.ceil((hi - lo + 1) / bins))
    n = math.ceil((hi - lo + 1) / width)
    counts = [0] * n
    for v in values:
        counts[(v - lo) // width] += 1
    return {"edges": [lo + k * width for k in range(n + 1)], "counts": counts}


def compute_stats(report: ValidationReport, tokenizer: Any = None,
                  max_length: int | None = None) -> dict[str, Any]:
    """JSON-able statistics over the report's valid records (see docs/interfaces.md).

    With tokenizer=None the demo tokenizer is used when present, else an approximate word count
    (named as such in the result's "tokenizer").
    """
    if tokenizer is None:
        try:
            tokenizer = load_tokenizer(None)
        except Exception:  # noqa: BLE001 - no demo tokenizer: approximate counts, said so
            tokenizer = None
    c = Counting(tokenizer)
    records, lines = report.records, report.line_numbers
    lengths: list[int] = []
    assistant: list[int] = []
    nothing: list[int] = []  # lines of examples truncation leaves nothing to learn from
    nothing_count = 0
    pref = {"prompt": [], "chosen": [], "rejected": []}
    pref_cut = {"chosen_truncated": 0, "rejected_truncated": 0, "prompt_fills_max_length": 0}
    roles: dict[str, dict[str, int]] = {}
    turns: Counter[int] = Counter()
    labels: Counter[str] = Counter()
    seen: dict[str, int] = {}
    dupes: list[list[int]] = []
    dupe_count = 0

    for record, line in zip(records, lines, strict=True):
        key = json.dumps(record, sort_keys=True, ensure_ascii=False)
        if key in seen:
            dupe_count += 1
            if len(dupes) < MAX_LISTED_LINES:
                dupes.append([line, seen[key]])
        else:
            seen[key] = line
        for role, content in _roles(record):  # tool calls count as the assistant's text
            slot = roles.setdefault(role, {"messages": 0, "tokens": 0})
            slot["messages"] += 1
            slot["tokens"] += c.count(content)

        spans: list[tuple[int, int]] | None = None
        if "messages" in record:
            total, spans = _conversation(c, record["messages"], record.get("tools"))
            turns[len(record["messages"])] += 1
        elif "chosen" in record:
            p, full_c = _prompt_reply(c, record["prompt"], record["chosen"])
            _, full_r = _prompt_reply(c, record["prompt"], record["rejected"])
            pref["prompt"].append(p)
            pref["chosen"].append(full_c - p)
            pref["rejected"].append(full_r - p)
            total = max(full_c, full_r)
            if max_length:
                pref_cut["chosen_truncated"] += full_c > max_length
                pref_cut["rejected_truncated"] += full_r > max_length
                if p >= max_length:
                    pref_cut["prompt_fills_max_length"] += 1
        elif "completion" in record:
            p, total = _prompt_reply(c, record["prompt"], record["completion"])
            spans = [(p, total)]
            turns[len(record["prompt"]) + len(record["completion"])
                  if isinstance(record["prompt"], list) else 2] += 1
            if "label" in record:
                labels[str(record["label"]).lower()] += 1
        elif "prompt" in record:
            prompt = record["prompt"]
            total = (c.count(c.render(prompt, add_generation_prompt=True))
                     if isinstance(prompt, list) else c.count(prompt))
        else:
            total = c.count(record["text"])
        lengths.append(total)
        if spans is not None:
            assistant.append(sum(b - a for a, b in spans))
            if max_length and all(a >= max_length for a, _ in spans):
                nothing_count += 1
                if len(nothing) < MAX_LISTED_LINES:
                    nothing.append(line)

    truncated = sum(n > max_length for n in lengths) if max_length else None
    stats: dict[str, Any] = {
        "rows": len(records),
        "format": report.format,
        "kind": report.kind,
        "tokenizer": c.name,
        "template": c.template,
        "max_length": max_length,
        "tokens": percentiles(lengths),
        "histogram": histogram(lengths),
        "truncated": None if truncated is None else {
            "count": truncated, "share": round(truncated / len(lengths), 4) if lengths else 0.0},
        "duplicates": {"count": dupe_count, "pairs": dupes},
        "turns": {str(k): v for k, v in sorted(turns.items())},
        "roles": roles,
    }
    if report.kind in ("sft", "kto"):
        stats["assistant_tokens"] = percentiles(assistant)
        stats["train_on_nothing"] = ({"count": nothing_count, "lines": nothing}
                                     if max_length else None)
    if report.kind == "preference":
        stats["preference"] = {
            "prompt_tokens": percentiles(pref["prompt"]),
            "chosen_tokens": percentiles(pref["chosen"]),
            "rejected_tokens": percentiles(pref["rejected"]),
            **(pref_cut if max_length else {}),
        }
    if report.kind == "text":
        stats["documents"] = len(records)
    if report.kind == "kto":
        stats["labels"] = {"desirable": labels["true"], "undesirable": labels["false"]}
    calling = sum(any(m.get("tool_calls") for m in r.get("messages", []) +
                      (r["prompt"] if isinstance(r.get("prompt"), list) else []) +
                      (r["completion"] if isinstance(r.get("completion"), list) else []))
                  for r in records)
    defining = sum(bool(r.get("tools")) for r in records)
    if calling or defining:
        support = tool_support(c)
        stats["tool_use"] = {"rows_with_tool_calls": calling, "rows_with_tools": defining,
                             "template_renders_tool_calls": support["tool_calls"],
                             "template_renders_tools": support["tools"]}
    if c.template_failures:
        stats["template_failures"] = c.template_failures
    return stats


# ---------------------------------------------------------------- rendering


def _reply_text(c: Counting, prompt: Any, reply: Any) -> str:
    if not isinstance(prompt, list):
        return reply
    head, full = c.render(prompt, add_generation_prompt=True), c.render(prompt + reply)
    return full[len(head):] if full.startswith(head) else c.render(reply)


def render_examples(report: ValidationReport, n: int = 3, tokenizer: Any = None) -> list[str]:
    """The first n records as the model will see them (chat template applied)."""
    if tokenizer is None:
        try:
            tokenizer = load_tokenizer(None)
        except Exception:  # noqa: BLE001 - fall back to ChatML rendering
            tokenizer = None
    c = Counting(tokenizer)
    out = []
    for record in report.records[:n]:
        if "messages" in record:
            out.append(c.render(record["messages"], tools=record.get("tools")))
        elif "text" in record:
            out.append(record["text"])
        elif set(record) == {"prompt"}:
            prompt = record["prompt"]
            out.append(c.render(prompt, add_generation_prompt=True) if isinstance(prompt, list)
                       else prompt)
        else:
            prompt = record["prompt"]
            head = c.render(prompt, add_generation_prompt=True) if isinstance(prompt, list) \
                else prompt
            parts = [f"### prompt\n{head}"]
            if "chosen" in record:
                parts.append(f"### chosen\n{_reply_text(c, prompt, record['chosen'])}")
                parts.append(f"### rejected\n{_reply_text(c, prompt, record['rejected'])}")
            else:
                label = ""
                if "label" in record:
                    label = " (desirable)" if record["label"] else " (undesirable)"
                parts.append(f"### completion{label}\n"
                             f"{_reply_text(c, prompt, record['completion'])}")
            out.append("\n".join(parts))
    return out
