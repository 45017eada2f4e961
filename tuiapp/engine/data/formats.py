"""Row formats: detect which one a row is in, check it, normalise it to TRL's shape.

Each checker takes the row (a dict) and returns ``(record, issues)``: the normalised record, or
None when the row has errors, and a list of ``(field, message, severity)``. Field names are
JSON paths into the row as the user wrote it (``conversations[1].from``), so a person can find
the spot in their file.
"""

from __future__ import annotations

from typing import Any

from tuiapp.engine.data.read import describe
from tuiapp.engine.data.types import short

Issue = tuple[str | None, str, str]  # field, message, severity
_MISSING = object()

OPENAI_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant"}
TOOL_ROLES = ("tool", "function", "ipython", "observation", "function_call")
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
SHAPES = ('{"messages": [...]} | {"conversations": [...]} | {"instruction", "input", "output"} | '
          '{"prompt", "completion"} | {"prompt", "chosen", "rejected"} | '
          '{"prompt", "completion", "label"} | {"text"} | {"prompt"}')


def detect_format(row: dict[str, Any]) -> str | None:
    """The format a row is written in, judged by its keys (None: no format fits)."""
    keys = set(row)
    if "messages" in keys:
        return "messages"
    if "conversations" in keys:
        return "sharegpt"
    if "chosen" in keys or "rejected" in keys:
        sample = row.get("chosen", row.get("rejected"))
        return "preference_messages" if isinstance(sample, list) else "preference"
    if "instruction" in keys or {"input", "output"} <= keys:
        return "alpaca"
    if "label" in keys and keys & {"prompt", "completion"}:
        return "kto"
    if "completion" in keys:
        return "prompt_completion"
    if "prompt" in keys:
        return "prompt_only"
    if "text" in keys:
        return "text"
    return None


def normalise(fmt: str, row: dict[str, Any]) -> tuple[dict[str, Any] | None, list[Issue]]:
    issues: list[Issue] = []
    record = _CHECKERS[fmt](row, issues)
    if any(sev == "error" for _, _, sev in issues):
        record = None
    return record, issues


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
              offset: int = 0) -> list[dict[str, str]] | None:
    """Check each message of a list on its own; normalise to [{"role", "content"}]."""
    if not isinstance(value, list):
        issues.append((base, f"must be a list of {{{role_key}, {content_key}}} objects, got "
                       f"{describe(value)}", "error"))
        return None
    if not value:
        issues.append((base, "is an empty list", "error"))
        return None
    out: list[dict[str, str]] = []
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
        elif role in TOOL_ROLES:
            issues.append((f"{where}.{role_key}", f"{role!r} turns are not supported: tuneloop "
                           "trains on system/user/assistant turns; drop tool turns or fold their "
                           "result into the next user turn", "error"))
            role = _MISSING
        elif role not in roles:
            hint = "" if role.lower() not in roles else f" (roles are lower-case: {role.lower()!r})"
            issues.append((f"{where}.{role_key}", f"unknown {'speaker' if role_key == 'from' else 'role'} "
                           f"{short(role)}; expected one of: {', '.join(roles)}{hint}", "error"))
            role = _MISSING
        content = msg.get(content_key, _MISSING)
        if content is _MISSING:
            issues.append((f"{where}.{content_key}", f"missing key {content_key!r}", "error"))
        else:
            content = _content(content, f"{where}.{content_key}", issues)
        if role is not _MISSING and isinstance(content, str):
            out.append({"role": roles[role], "content": content})
    return out if len(issues) == before else None


def _check_conversation(msgs: list[dict[str, str]], base: str, role_key: str,
                        content_key: str, issues: list[Issue], offset: int = 0) -> None:
    """A whole SFT conversation: optional system first, then user/assistant alternating."""
    prev = None
    assistants = 0
    for i, msg in enumerate(msgs, start=offset):
        role, where = msg["role"], f"{base}[{i}]"
        if role == "system":
            if i != offset:
                issues.append((f"{where}.{role_key}", "a system message is only allowed as the "
                               "first message", "error"))
            continue
        if prev is None and role != "user":
            issues.append((f"{where}.{role_key}", f"the conversation must start with a user turn "
                           f"(after an optional system message), not {role}", "error"))
        elif prev == role:
            issues.append((f"{where}.{role_key}", f"two {role} turns in a row ({base}[{i - 1}] and "
                           f"{where}); turns must alternate user/assistant: merge them", "error"))
        if role == "assistant":
            assistants += 1
            if not msg["content"].strip():
                issues.append((f"{where}.{content_key}", "assistant turn is empty; there is "
                               "nothing to learn from it", "error"))
        elif not msg["content"].strip():
            issues.append((f"{where}.{content_key}", "user turn is empty", "warning"))
        prev = role
    if not assistants:
        issues.append((base, "has no assistant turn; an SFT example needs at least one assistant "
                       "reply to learn from", "error"))
    elif prev == "user":
        issues.append((f"{base}[{offset + len(msgs) - 1}].{role_key}", "the conversation ends "
                       "with a user turn nothing answers; drop it or add the reply", "warning"))


def _check_prompt(msgs: list[dict[str, str]], base: str, issues: list[Issue]) -> None:
    """A conversational prompt: ends with the user turn the completion answers."""
    for i, msg in enumerate(msgs):
        if msg["role"] == "system" and i:
            issues.append((f"{base}[{i}].role", "a system message is only allowed as the first "
                           "message", "error"))
    if msgs and msgs[-1]["role"] != "user":
        issues.append((f"{base}[{len(msgs) - 1}].role", f"the prompt must end with a user turn, "
                       f"not {msgs[-1]['role']}", "error"))


def _check_replies(msgs: list[dict[str, str]], base: str, issues: list[Issue],
                   offset: int = 0) -> None:
    """Completions / chosen / rejected as messages: assistant replies with text."""
    if not msgs:
        issues.append((base, "has no reply after the prompt", "error"))
    for i, msg in enumerate(msgs, start=offset):
        if msg["role"] != "assistant":
            issues.append((f"{base}[{i}].role", f"expected 'assistant' (this list holds the "
                           f"reply), got {msg['role']!r}", "error"))
        elif not msg["content"].strip():
            issues.append((f"{base}[{i}].content", "assistant reply is empty", "error"))


# ---------------------------------------------------------------- formats


def _fmt_messages(row: dict, issues: list[Issue]) -> dict | None:
    msgs = _messages(row["messages"], "messages", issues)
    if msgs is not None:
        _check_conversation(msgs, "messages", "role", "content", issues)
    return {"messages": msgs}


def _fmt_sharegpt(row: dict, issues: list[Issue]) -> dict | None:
    msgs = _messages(row["conversations"], "conversations", issues, role_key="from",
                     content_key="value", roles=SHAREGPT_ROLES)
    if msgs is not None:
        _check_conversation(msgs, "conversations", "from", "value", issues)
    return {"messages": msgs}


def _fmt_alpaca(row: dict, issues: list[Issue]) -> dict | None:
    instruction = _text(row, "instruction", issues)
    extra = _text(row, "input", issues, optional=True, allow_empty=True)
    output = _text(row, "output", issues)
    system = _text(row, "system", issues, optional=True, allow_empty=True)
    if instruction is None or output is None or extra is None or system is None:
        return None
    user = instruction + ("\n\n" + extra if extra.strip() else "")
    msgs = [{"role": "system", "content": system}] if system.strip() else []
    return {"messages": msgs + [{"role": "user", "content": user},
                                {"role": "assistant", "content": output}]}


def _prompt_and_completion(row: dict, issues: list[Issue]) -> tuple[Any, Any] | None:
    """Shared by prompt/completion and KTO: both strings, or both message lists."""
    prompt, completion = row.get("prompt", _MISSING), row.get("completion", _MISSING)
    if isinstance(prompt, list) or isinstance(completion, list):
        if not isinstance(prompt, list) or not isinstance(completion, list):
            issues.append(("completion" if isinstance(prompt, list) else "prompt",
                           "prompt and completion must both be strings or both be message "
                           "lists", "error"))
            return None
        p = _messages(prompt, "prompt", issues)
        c = _messages(completion, "completion", issues)
        if p is None or c is None:
            return None
        _check_prompt(p, "prompt", issues)
        _check_replies(c, "completion", issues)
        return p, c
    p = _text(row, "prompt", issues, allow_empty=True)
    c = _text(row, "completion", issues)
    if p is None or c is None:
        return None
    return p, c


def _fmt_prompt_completion(row: dict, issues: list[Issue]) -> dict | None:
    pair = _prompt_and_completion(row, issues)
    return None if pair is None else {"prompt": pair[0], "completion": pair[1]}


def _fmt_kto(row: dict, issues: list[Issue]) -> dict | None:
    pair = _prompt_and_completion(row, issues)
    label = row.get("label", _MISSING)
    if label is _MISSING:
        issues.append(("label", _missing(row, "label") + "; KTO rows say whether the completion "
                       "is desirable (true) or not (false)", "error"))
        return None
    if not isinstance(label, bool):
        issues.append(("label", f"must be true or false (a boolean), got {describe(label)} "
                       f"{short(label)}", "error"))
        return None
    return None if pair is None else {"prompt": pair[0], "completion": pair[1], "label": label}


def _fmt_prompt_only(row: dict, issues: list[Issue]) -> dict | None:
    if isinstance(row["prompt"], list):
        prompt = _messages(row["prompt"], "prompt", issues)
        if prompt is not None:
            _check_prompt(prompt, "prompt", issues)
        return {"prompt": prompt}
    prompt = _text(row, "prompt", issues)
    return None if prompt is None else {"prompt": prompt}


def _fmt_text(row: dict, issues: list[Issue]) -> dict | None:
    text = _text(row, "text", issues)
    return None if text is None else {"text": text}


def _fmt_preference(row: dict, issues: list[Issue]) -> dict | None:
    """prompt/chosen/rejected as strings; without a prompt, take their common beginning."""
    if isinstance(row.get("prompt"), list) or isinstance(row.get("rejected"), list):
        issues.append(("rejected" if isinstance(row.get("rejected"), list) else "prompt",
                       "prompt, chosen and rejected must all be strings or all be message lists",
                       "error"))
        return None
    chosen = _text(row, "chosen", issues)
    rejected = _text(row, "rejected", issues)
    prompt = _text(row, "prompt", issues, optional=True, allow_empty=True)
    if chosen is None or rejected is None or prompt is None:
        return None
    if chosen == rejected:
        issues.append(("chosen", "chosen and rejected are identical; the pair teaches nothing",
                       "error"))
        return None
    if "prompt" not in row:
        shared = _common_text_prefix(chosen, rejected)
        if not shared.strip():
            issues.append(("prompt", "missing key 'prompt', and chosen/rejected share no common "
                           "beginning to take it from; add a prompt field", "error"))
            return None
        prompt, chosen, rejected = shared, chosen[len(shared):], rejected[len(shared):]
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _common_text_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    # End the prompt on a word boundary; like TRL, the space goes with the replies.
    cut = max(a.rfind(" ", 0, n), a.rfind("\n", 0, n))
    return a[:cut] if cut > 0 and n < min(len(a), len(b)) else ""


def _fmt_preference_messages(row: dict, issues: list[Issue]) -> dict | None:
    """chosen/rejected as message lists, with an explicit prompt list or a shared prefix."""
    if not isinstance(row.get("rejected", []), list) or isinstance(row.get("prompt"), str):
        issues.append(("rejected" if isinstance(row.get("prompt", []), list) else "prompt",
                       "prompt, chosen and rejected must all be message lists or all be strings",
                       "error"))
        return None
    for key in ("chosen", "rejected"):
        if key not in row:
            issues.append((key, _missing(row, key), "error"))
    if "chosen" not in row or "rejected" not in row:
        return None
    chosen = _messages(row["chosen"], "chosen", issues)
    rejected = _messages(row["rejected"], "rejected", issues)
    if "prompt" in row:
        prompt = _messages(row["prompt"], "prompt", issues)
        if prompt is None or chosen is None or rejected is None:
            return None
        _check_prompt(prompt, "prompt", issues)
        # A full conversation repeated in chosen/rejected: keep only what follows the prompt.
        skip_c = len(prompt) if chosen[: len(prompt)] == prompt else 0
        skip_r = len(prompt) if rejected[: len(prompt)] == prompt else 0
    else:
        if chosen is None or rejected is None:
            return None
        shared = 0
        while (shared < min(len(chosen), len(rejected))
               and chosen[shared] == rejected[shared]):
            shared += 1
        if chosen == rejected:
            issues.append(("chosen", "chosen and rejected are identical; the pair teaches "
                           "nothing", "error"))
            return None
        if shared == 0:
            issues.append(("prompt", "missing key 'prompt', and chosen/rejected share no leading "
                           "messages to take it from; add a prompt field", "error"))
            return None
        prompt = chosen[:shared]
        _check_prompt(prompt, "chosen", issues)
        skip_c = skip_r = shared
    chosen_reply, rejected_reply = chosen[skip_c:], rejected[skip_r:]
    _check_replies(chosen_reply, "chosen", issues, skip_c)
    _check_replies(rejected_reply, "rejected", issues, skip_r)
    if chosen_reply == rejected_reply and chosen_reply:
        issues.append(("chosen", "chosen and rejected are identical; the pair teaches nothing",
                       "error"))
    return {"prompt": prompt, "chosen": chosen_reply, "rejected": rejected_reply}


_CHECKERS = {
    "messages": _fmt_messages,
    "sharegpt": _fmt_sharegpt,
    "alpaca": _fmt_alpaca,
    "prompt_completion": _fmt_prompt_completion,
    "kto": _fmt_kto,
    "text": _fmt_text,
    "prompt_only": _fmt_prompt_only,
    "preference": _fmt_preference,
    "preference_messages": _fmt_preference_messages,
}
