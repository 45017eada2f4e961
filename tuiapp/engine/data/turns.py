"""Turns and fields: the checks every row format shares (strings, content, message lists,
whole conversations, prompts and replies), tool turns included."""

from __future__ import annotations

from typing import Any

from tuiapp.engine.data import tools
from tuiapp.engine.data.columns import MEDIA_PART_TYPES
from tuiapp.engine.data.read import describe
from tuiapp.engine.data.types import short

Issue = tuple[str | None, str, str]  # field, message, severity
_MISSING = object()

OPENAI_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant"}
# Column names people use for the same thing; named in "missing key" hints.
ALIASES = {
    "completion": ("response", "answer", "output", "target"),
    "prompt": ("question", "query", "instruction", "input"),
    "output": ("response", "answer", "completion"),
    "instruction": ("prompt", "question"),
    "chosen": ("accepted", "preferred", "good"),
    "rejected": ("dispreferred", "bad"),
    "label": ("labels", "kto_label"),
}

# ---------------------------------------------------------------- small checks


def _missing(row: dict, key: str) -> str:
    near = [a for a in ALIASES.get(key, ()) if a in row]
    hint = f" (found {near[0]!r}: rename it to {key!r})" if near else ""
    return f"missing key {key!r}{hint}"


def _text(row: dict, key: str, issues: list[Issue], *, field: str | None = None,
          optional: bool = False, allow_empty: bool = False) -> str | None:
    """A string field; reports what is wrong with it and returns None then."""
    value = row.get(key, _MISSING)
    field = field or key
    if value is _MISSING:
        if optional:
            return ""
        issues.append((field, _missing(row, key), "error"))
        return None
    if value is None:
        if optional:
            return ""
        issues.append((field, "is null; expected a string", "error"))
        return None
    if not isinstance(value, str):
        issues.append((field, f"must be a string, got {describe(value)} {short(value)}", "error"))
        return None
    if not allow_empty and not value.strip():
        issues.append((field, "is empty", "error"))
        return None
    return value


def _content(value: Any, field: str, issues: list[Issue]) -> str | None:
    """Message content: a string, or OpenAI's list of {"type": "text", "text": ...} parts."""
    if isinstance(value, str):
        return value
    if value is None:
        issues.append((field, "is null; expected a string", "error"))
        return None
    if isinstance(value, list) and value and all(isinstance(p, dict) for p in value):
        texts = []
        for j, part in enumerate(value):
            if part.get("type") in MEDIA_PART_TYPES:
                issues.append((f"{field}[{j}]", f"a content part of type {part['type']!r} "
                               "(multimodal) is not supported: tuneloop trains text-only models; "
                               "drop the part or leave such rows out", "error"))
                return None
            if part.get("type") == "text" and "text" not in part and "value" in part:
                issues.append((f"{field}[{j}]", "a text part holds its text under 'text', not "
                               "'value': {\"type\": \"text\", \"text\": ...}", "error"))
                return None
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                issues.append((f"{field}[{j}]", "only text parts ({\"type\": \"text\", \"text\": "
                               "...}) are supported", "error"))
                return None
            texts.append(part["text"])
        return "".join(texts)
    issues.append((field, f"must be a string, got {describe(value)} {short(value)}", "error"))
    return None


def _messages(value: Any, base: str, issues: list[Issue], *, role_key: str = "role",
              content_key: str = "content", roles: dict[str, str] = OPENAI_ROLES,
              offset: int = 0) -> list[dict[str, Any]] | None:
    """Check each message of a list on its own; normalise to [{"role", "content"}]."""
    if not isinstance(value, list):
        issues.append((base, f"must be a list of {{{role_key}, {content_key}}} objects, got "
                       f"{describe(value)}", "error"))
        return None
    if not value:
        issues.append((base, "is an empty list", "error"))
        return None
    out: list[dict[str, Any]] = []
    before = len(issues)
    for i, msg in enumerate(value[offset:], start=offset):
        where = f"{base}[{i}]"
        if not isinstance(msg, dict):
            issues.append((where, f"must be an object with {role_key!r} and {content_key!r}, got "
                           f"{describe(msg)}", "error"))
            continue
        role = msg.get(role_key, _MISSING)
        if role is _MISSING:
            issues.append((f"{where}.{role_key}", f"missing key {role_key!r}", "error"))
        elif not isinstance(role, str):
            issues.append((f"{where}.{role_key}", f"must be a string, got {describe(role)}",
                           "error"))
            role = _MISSING
        elif role in tools.CALL_ROLES or role in tools.RESULT_ROLES:
            turn = (tools.sharegpt_call if role in tools.CALL_ROLES else tools.tool_result)(
                msg, where, content_key, issues)
            if turn is not None:
                out.append(turn)
            continue
        elif role not in roles:
            hint = "" if role.lower() not in roles else f" (roles are lower-case: {role.lower()!r})"
            issues.append((f"{where}.{role_key}", f"unknown {'speaker' if role_key == 'from' else 'role'} "
                           f"{short(role)}; expected one of: {', '.join(roles)}{hint}", "error"))
            role = _MISSING
        if role is not _MISSING and roles[role] == "assistant" and (
                "tool_calls" in msg or "function_call" in msg):
            turn = tools.assistant_with_calls(msg, where, content_key, issues)
            if turn is not None:
                out.append(turn)
            continue
        content = msg.get(content_key, _MISSING)
        if content is _MISSING:
            issues.append((f"{where}.{content_key}", f"missing key {content_key!r}", "error"))
        else:
            content = _content(content, f"{where}.{content_key}", issues)
        if role is not _MISSING and isinstance(content, str):
            out.append({"role": roles[role], "content": content})
    return out if len(issues) == before else None


def _check_conversation(msgs: list[dict[str, Any]], base: str, role_key: str,
                        content_key: str, issues: list[Issue], offset: int = 0) -> None:
    """A whole SFT conversation: optional system first, then user/assistant alternating; an
    assistant turn that calls tools is answered by tool turns, then the assistant goes on."""
    prev = None
    calls = False  # the last assistant turn called a tool
    assistants = 0
    for i, msg in enumerate(msgs, start=offset):
        role, where = msg["role"], f"{base}[{i}]"
        if role == "system":
            if i != offset:
                issues.append((f"{where}.{role_key}", "a system message is only allowed as the "
                               "first message", "error"))
            continue
        if role == "tool":
            if prev != "tool" and not (prev == "assistant" and calls):
                issues.append((f"{where}.{role_key}", "a tool result must follow an assistant "
                               "turn with tool_calls (a function_call turn in ShareGPT); add the "
                               "call or drop the result", "error"))
            prev = role
            continue
        if prev is None and role != "user":
            issues.append((f"{where}.{role_key}", f"the conversation must start with a user turn "
                           f"(after an optional system message), not {role}", "error"))
        elif prev == role:
            issues.append((f"{where}.{role_key}", f"two {role} turns in a row ({base}[{i - 1}] and "
                           f"{where}); turns must alternate user/assistant: merge them", "error"))
        if role == "assistant":
            assistants += 1
            calls = bool(msg.get("tool_calls"))
            if not msg["content"].strip() and not calls:
                issues.append((f"{where}.{content_key}", "assistant turn is empty; there is "
                               "nothing to learn from it", "error"))
        elif not msg["content"].strip():
            issues.append((f"{where}.{content_key}", "user turn is empty", "warning"))
        prev = role
    if not assistants:
        issues.append((base, "has no assistant turn; an SFT example needs at least one assistant "
                       "reply to learn from", "error"))
    elif prev in ("user", "tool"):
        issues.append((f"{base}[{offset + len(msgs) - 1}].{role_key}", f"the conversation ends "
                       f"with a {prev} turn nothing answers; drop it or add the reply", "warning"))


def _check_prompt(msgs: list[dict[str, Any]], base: str, issues: list[Issue]) -> None:
    """A conversational prompt: ends with the user turn the completion answers."""
    for i, msg in enumerate(msgs):
        if msg["role"] == "system" and i:
            issues.append((f"{base}[{i}].role", "a system message is only allowed as the first "
                           "message", "error"))
    if msgs and msgs[-1]["role"] not in ("user", "tool"):
        issues.append((f"{base}[{len(msgs) - 1}].role", f"the prompt must end with a user turn, "
                       f"not {msgs[-1]['role']}", "error"))


def _check_replies(msgs: list[dict[str, Any]], base: str, issues: list[Issue],
                   offset: int = 0) -> None:
    """Completions / chosen / rejected as messages: assistant replies with text."""
    if not msgs:
        issues.append((base, "has no reply after the prompt", "error"))
    for i, msg in enumerate(msgs, start=offset):
        if msg["role"] == "tool" and i > offset:
            continue  # a tool's answer inside a reply that calls tools
        if msg["role"] != "assistant":
            issues.append((f"{base}[{i}].role", f"expected 'assistant' (this list holds the "
                           f"reply), got {msg['role']!r}", "error"))
        elif not msg["content"].strip() and not msg.get("tool_calls"):
            issues.append((f"{base}[{i}].content", "assistant reply is empty", "error"))


