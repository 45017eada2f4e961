"""Which tokens are the assistant's, for any chat template (with or without ``{% generation %}``).

A model's own template (SmolLM2's, Qwen's, ...) rarely carries the generation markers TRL's
``assistant_only_loss`` reads. So the conversation is rendered prefix by prefix: for every
assistant turn i, ``messages[:i]`` with the generation prompt must be a prefix of
``messages[:i+1]``, which must extend the render of ``messages[:i]``; the characters in between are
the assistant's (cut after the turn's last end-of-turn token, so the newline a template writes
between turns is not trained). The full render is tokenized once and each token whose text
starts inside an assistant span is trained. A template that rewrites earlier turns (e.g. strips
reasoning from past turns) breaks the prefix property and is refused in words.

The end of a turn is the template's own text (``end_of_turn``: what it writes after an
assistant's content, e.g. ``<|im_end|>`` for ChatML, ``<end_of_turn>`` for Gemma, ``<|eot_id|>``
for Llama 3), which is not always the tokenizer's eos token.

Preference, KTO and reward rows are split the same way (``completion_split``): the prompt ids
are exactly what generation feeds the model (the prompt rendered with the generation prompt,
tokenized on its own), the completion ids are the rest of the conversation through the last
end-of-turn, with a per-token mask when the completion holds several messages.

The model's own default system prompt stays: nothing here changes the template.
"""

from __future__ import annotations

from typing import Any


class TemplateMaskError(ValueError):
    """The chat template cannot be masked turn by turn; the message says which turn and why."""


def has_generation_markers(tokenizer) -> bool:
    template = getattr(tokenizer, "chat_template", None) or ""
    return "{% generation %}" in template.replace("{%-", "{%").replace("-%}", "%}")


# An assistant "answer" no template rewrites (plain ASCII, no surrounding whitespace to trim).
_PROBE = "tuneloopprobe7q"


def end_of_turn(tokenizer) -> str:
    """The text the template writes right after an assistant's content (trailing whitespace
    dropped: the newline between turns is layout, not something the model must emit). Falls back
    to the eos token when the template writes nothing there or cannot render a probe."""
    eos = tokenizer.eos_token or ""
    probe = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _PROBE}]
    try:
        text = _render(tokenizer, probe)
    except Exception:  # noqa: BLE001 - a template that refuses the probe keeps the old rule
        return eos
    at = text.rfind(_PROBE)
    if at < 0:
        return eos
    return text[at + len(_PROBE):].rstrip() or eos


def end_of_turn_ids(tokenizer) -> list[int]:
    """Token ids generation should stop at: the end-of-turn text when it is one token, and eos."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    end = end_of_turn(tokenizer)
    if end:
        tokens = tokenizer(end, add_special_tokens=False)["input_ids"]
        if len(tokens) == 1:
            ids.add(int(tokens[0]))
    return sorted(ids)


def _render(tokenizer, messages, generation_prompt: bool = False, tools=None) -> str:
    if not messages:
        return ""
    extra = {"tools": tools} if tools else {}  # the row's tool definitions, as TRL passes them
    return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                         add_generation_prompt=generation_prompt, **extra)


def assistant_spans(tokenizer, messages: list[dict[str, Any]], end_text: str | None = None,
                    first: int = 0, tools=None) -> tuple[str, list[tuple[int, int]]]:
    """(full rendered text, character spans of every assistant turn's own text through its
    end-of-turn). ``end_text``: ``end_of_turn(tokenizer)``, passed in to derive it once per dataset.
    ``first``: turns before it are context only (a preference prompt): they are neither trained
    nor required to render the same once later turns exist, as long as the render grows."""
    end_text = end_of_turn(tokenizer) if end_text is None else end_text
    spans: list[tuple[int, int]] = []
    previous = _render(tokenizer, messages[:first], tools=tools)
    for i, message in enumerate(messages[first:], first):
        through = _render(tokenizer, messages[: i + 1], tools=tools)
        if not through.startswith(previous):
            raise TemplateMaskError(
                f"turn {i + 1} ({message.get('role')}): the template rewrites earlier turns when "
                "a turn is added, so the assistant's tokens cannot be located")
        if message.get("role") == "assistant":
            prompt = _render(tokenizer, messages[:i], generation_prompt=True, tools=tools)
            if not through.startswith(prompt):
                raise TemplateMaskError(
                    f"turn {i + 1} (assistant): the rendered turn does not follow the template's "
                    "generation prompt, so the assistant's tokens cannot be located")
            start, stop = len(prompt), len(through)
            if end_text:
                last = through.rfind(end_text, start, stop)
                if last >= 0:
                    stop = last + len(end_text)  # train the end-of-turn token, not what follows
            if stop > start:
                spans.append((start, stop))
        previous = through
    return previous, spans


def _encode_masked(tokenizer, text: str, spans: list[tuple[int, int]], shift: int = 0):
    """(ids, mask) of ``text``; a token is 1 when its first character (offset + shift) lies in a span."""
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as exc:  # slow tokenizers have no offsets
        raise TemplateMaskError("the tokenizer has no offset mapping (a slow tokenizer); "
                                "use a model with tokenizer.json") from exc
    mask = [1 if any(a <= s + shift < b for a, b in spans) else 0 for s, _ in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask


def tokenize_with_mask(tokenizer, messages: list[dict[str, Any]],
                       max_length: int | None = None, end_text: str | None = None,
                       tools=None) -> dict[str, list[int]]:
    """{"input_ids", "assistant_masks"} for one conversation (1 = the assistant's token);
    ``tools``: the row's tool definitions, rendered (and masked) where the template puts them."""
    text, spans = assistant_spans(tokenizer, messages, end_text, tools=tools)
    ids, mask = _encode_masked(tokenizer, text, spans)
    if max_length:
        ids, mask = ids[:max_length], mask[:max_length]
    return {"input_ids": ids, "assistant_masks": mask}


def needs_derived_mask(tokenizer, conversational: bool, assistant_only_loss: bool) -> bool:
    return conversational and assistant_only_loss and not has_generation_markers(tokenizer)


def tokenize_records(tokenizer, records: list[dict[str, Any]], max_length: int | None = None):
    """Pre-tokenized rows for TRL (it builds labels from ``assistant_masks``)."""
    end = end_of_turn(tokenizer)
    return [tokenize_with_mask(tokenizer, r["messages"], max_length, end, tools=r.get("tools"))
            for r in records]


def completion_split(tokenizer, prompt_messages: list[dict[str, Any]],
                     completion_messages: list[dict[str, Any]],
                     end_text: str | None = None, tools=None) -> dict[str, list[int]]:
    """{"prompt_ids", "completion_ids", "completion_mask"} of one prompt and its answer.

    The prompt ids are the prompt rendered with the generation prompt and tokenized alone: the
    very ids generation starts from (default system prompt included). The completion ids are the
    rest of the full render through the last assistant turn's end-of-turn; its mask is 1 on the
    assistant's own text + end-of-turn (0 on the user turns and role headers a multi-message
    completion carries in between)."""
    if not prompt_messages or not completion_messages:
        raise TemplateMaskError("the row needs both a prompt and a completion")
    end_text = end_of_turn(tokenizer) if end_text is None else end_text
    prompt_text = _render(tokenizer, prompt_messages, generation_prompt=True, tools=tools)
    text, spans = assistant_spans(tokenizer, list(prompt_messages) + list(completion_messages), end_text,
                                  first=len(prompt_messages), tools=tools)
    if not text.startswith(prompt_text):
        raise TemplateMaskError(
            f"the completion ({completion_messages[0].get('role')}) does not follow the template's "
            "generation prompt, so the prompt the model answers cannot be cut off")
    mine = [(a, b) for a, b in spans if a >= len(prompt_text)]
    if not mine:
        raise TemplateMaskError("no assistant text was found in the completion")
    completion_text = text[len(prompt_text):mine[-1][1]]
    prompt_ids = list(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    ids, mask = _encode_masked(tokenizer, completion_text, mine, shift=len(prompt_text))
    return {"prompt_ids": prompt_ids, "completion_ids": ids, "completion_mask": mask}


def as_messages(value: Any, role: str) -> list[dict[str, Any]]:
    """A string prompt or answer as one turn (as dpo.as_conversation does), a list unchanged."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return list(value or [])


def _row_checks(record: dict[str, Any]):
    """(what, prompt, completion) pairs a row trains on; prompt None for a whole conversation.
    A prompt-only row (PPO/GRPO) is checked with a probe answer in place of the sampled one."""
    if record.get("messages"):
        return [("conversation", None, record["messages"])]
    if "prompt" not in record:
        return []
    prompt = as_messages(record["prompt"], "user")
    answers = [k for k in ("chosen", "rejected", "completion") if k in record]
    if not answers:
        return [("prompt", prompt, [{"role": "assistant", "content": _PROBE}])]
    return [(k, prompt, as_messages(record[k], "assistant")) for k in answers]


def first_unmaskable(tokenizer, records: list[dict[str, Any]]) -> tuple[int, str] | None:
    """(1-based row, reason) of the first row the template cannot split or mask, else None.
    A conversation row with no assistant token at all counts as unmaskable. Rows are SFT
    conversations, prompt/chosen/rejected pairs, prompt/completion rows or bare prompts."""
    end = end_of_turn(tokenizer)
    for n, record in enumerate(records, 1):
        for what, prompt, completion in _row_checks(record):
            try:
                tools = record.get("tools")
                if prompt is None:
                    _, spans = assistant_spans(tokenizer, completion, end, tools=tools)
                    if not spans and any(m.get("role") == "assistant" for m in completion):
                        return n, "no assistant text was found in the rendered conversation"
                else:
                    completion_split(tokenizer, prompt, completion, end, tools=tools)
            except TemplateMaskError as exc:
                return n, str(exc) if what == "conversation" else f"{what}: {exc}"
            except Exception as exc:  # noqa: BLE001 - a template that raises is a refusal too
                return n, f"the chat template failed: {exc}"
    return None
