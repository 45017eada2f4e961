"""Which tokens are the assistant's, for any chat template (with or without ``{% generation %}``).

A model's own template (SmolLM2's, Qwen's, ...) rarely carries the generation markers TRL's
``assistant_only_loss`` reads. So the conversation is rendered prefix by prefix: for every
assistant turn i, ``messages[:i]`` with the generation prompt must be a prefix of
``messages[:i+1]``, which must extend the render of ``messages[:i]``; the characters in between are
the assistant's (cut after the turn's last end-of-turn token, so the newline a template writes
between turns is not trained). The full render is tokenized once and each token whose text
starts inside an assistant span is trained. A template that rewrites earlier turns (e.g. strips
reasoning from past turns) breaks the prefix property and is refused in words.

The model's own default system prompt stays: nothing here changes the template.
"""

from __future__ import annotations

from typing import Any


class TemplateMaskError(ValueError):
    """The chat template cannot be masked turn by turn; the message says which turn and why."""


def has_generation_markers(tokenizer) -> bool:
    template = getattr(tokenizer, "chat_template", None) or ""
    return "{% generation %}" in template.replace("{%-", "{%").replace("-%}", "%}")


def _render(tokenizer, messages, generation_prompt: bool = False) -> str:
    if not messages:
        return ""
    return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                         add_generation_prompt=generation_prompt)


def assistant_spans(tokenizer, messages: list[dict[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
    """(full rendered text, character spans of every assistant turn's own text)."""
    end_text = tokenizer.eos_token or ""
    spans: list[tuple[int, int]] = []
    previous = ""
    for i, message in enumerate(messages):
        through = _render(tokenizer, messages[: i + 1])
        if not through.startswith(previous):
            raise TemplateMaskError(
                f"turn {i + 1} ({message.get('role')}): the template rewrites earlier turns when "
                "a turn is added, so the assistant's tokens cannot be located")
        if message.get("role") == "assistant":
            prompt = _render(tokenizer, messages[:i], generation_prompt=True)
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


def tokenize_with_mask(tokenizer, messages: list[dict[str, Any]],
                       max_length: int | None = None) -> dict[str, list[int]]:
    """{"input_ids", "assistant_masks"} for one conversation (1 = the assistant's token)."""
    text, spans = assistant_spans(tokenizer, messages)
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as exc:  # slow tokenizers have no offsets
        raise TemplateMaskError("the tokenizer has no offset mapping (a slow tokenizer); "
                                "use a model with tokenizer.json") from exc
    ids = list(enc["input_ids"])
    mask = [1 if any(a <= s < b for a, b in spans) else 0 for s, _ in enc["offset_mapping"]]
    if max_length:
        ids, mask = ids[:max_length], mask[:max_length]
    return {"input_ids": ids, "assistant_masks": mask}


def needs_derived_mask(tokenizer, conversational: bool, assistant_only_loss: bool) -> bool:
    return conversational and assistant_only_loss and not has_generation_markers(tokenizer)


def tokenize_records(tokenizer, records: list[dict[str, Any]], max_length: int | None = None):
    """Pre-tokenized rows for TRL (it builds labels from ``assistant_masks``)."""
    return [tokenize_with_mask(tokenizer, r["messages"], max_length) for r in records]


def first_unmaskable(tokenizer, records: list[dict[str, Any]]) -> tuple[int, str] | None:
    """(1-based row, reason) of the first conversation the template cannot mask, else None.
    A row with no assistant token at all counts as unmaskable."""
    for n, record in enumerate(records, 1):
        messages = record.get("messages")
        if not messages:
            continue
        try:
            _, spans = assistant_spans(tokenizer, messages)
        except TemplateMaskError as exc:
            return n, str(exc)
        except Exception as exc:  # noqa: BLE001 - a template that raises is a refusal too
            return n, f"the chat template failed: {exc}"
        if not spans and any(m.get("role") == "assistant" for m in messages):
            return n, "no assistant text was found in the rendered conversation"
    return None
