"""Row formats: detect which one a row is in, check it, normalise it to TRL's shape.

Each checker takes the row (a dict) and returns ``(record, issues)``: the normalised record, or
None when the row has errors, and a list of ``(field, message, severity)``. Field names are
JSON paths into the row as the user wrote it (``conversations[1].from``), so a person can find
the spot in their file.
"""

from __future__ import annotations

from typing import Any

from tuiapp.engine.data import tools
from tuiapp.engine.data.columns import detect_format
from tuiapp.engine.data.read import describe
from tuiapp.engine.data.turns import (
    _MISSING,
    SHAREGPT_ROLES,
    Issue,
    _check_conversation,
    _check_prompt,
    _check_replies,
    _messages,
    _missing,
    _text,
)
from tuiapp.engine.data.types import short

__all__ = ["SHAPES", "detect_format", "normalise"]

SHAPES = ('{"messages": [...]} | {"conversations": [...]} | {"instruction", "input", "output"} | '
          '{"prompt", "completion"} | {"prompt", "chosen", "rejected"} | '
          '{"prompt", "completion", "label"} | {"messages": [...], "label"} | {"text"} | '
          '{"prompt"}')
# hh-rlhf style transcripts: the prompt ends at the last assistant marker both texts share.
ASSISTANT_MARKER = "\n\nAssistant:"


def normalise(fmt: str, row: dict[str, Any]) -> tuple[dict[str, Any] | None, list[Issue]]:
    issues: list[Issue] = []
    record = _CHECKERS[fmt](row, issues)
    if any(sev == "error" for _, _, sev in issues):
        record = None
    return record, issues


# ---------------------------------------------------------------- formats


def _with_context(row: dict, msgs: list[dict] | None, issues: list[Issue]) -> dict | None:
    """A `system` column becomes the first message; a `tools` column travels as `tools`."""
    if msgs is None:
        return None
    system = row.get("system")
    if isinstance(system, str) and system.strip():
        if msgs and msgs[0]["role"] == "system":
            issues.append(("system", "the conversation has its own system message; the system "
                           "column is ignored", "warning"))
        else:
            msgs = [{"role": "system", "content": system}] + msgs
    record: dict[str, Any] = {"messages": msgs}
    if "tools" in row:
        defs = tools.normalise_tools(row["tools"], issues)
        if defs is None:
            return None
        if defs:
            record["tools"] = defs
    return record


def _conversation(row: dict, issues: list[Issue], key: str | None = None) -> list[dict] | None:
    """The row's conversation (`messages` or ShareGPT `conversations`), checked whole."""
    key = key or ("messages" if "messages" in row else "conversations")
    if key == "messages":
        msgs = _messages(row["messages"], "messages", issues)
        role_key, content_key = "role", "content"
    else:
        msgs = _messages(row["conversations"], "conversations", issues, role_key="from",
                         content_key="value", roles=SHAREGPT_ROLES)
        role_key, content_key = "from", "value"
    if msgs is not None:
        _check_conversation(msgs, key, role_key, content_key, issues)
    return msgs


def _fmt_messages(row: dict, issues: list[Issue]) -> dict | None:
    return _with_context(row, _conversation(row, issues, "messages"), issues)


def _fmt_sharegpt(row: dict, issues: list[Issue]) -> dict | None:
    return _with_context(row, _conversation(row, issues, "conversations"), issues)


def _fmt_kto_messages(row: dict, issues: list[Issue]) -> dict | None:
    """A conversation plus a boolean label (LLaMA-Factory's KTO): the last assistant turn is
    the completion the label judges, everything before it the prompt."""
    label = _label(row, issues)
    record = _with_context(row, _conversation(row, issues), issues)
    if record is None or label is None:
        return None
    msgs = record.pop("messages")
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    if last != len(msgs) - 1:
        key = "messages" if "messages" in row else "conversations"
        issues.append((key, "a KTO conversation must end with the assistant reply the label "
                       "judges", "error"))
        return None
    return {"prompt": msgs[:last], "completion": msgs[last:], "label": label, **record}


def _fmt_sharegpt_preference(row: dict, issues: list[Issue]) -> dict | None:
    """A conversation up to the user's turn, plus chosen/rejected replies as single turns
    ({"from", "value"} or {"role", "content"}) or lists of them (LLaMA-Factory)."""
    key = "messages" if "messages" in row else "conversations"
    role_key, content_key = ("role", "content") if key == "messages" else ("from", "value")
    roles = SHAREGPT_ROLES if key == "conversations" else {"system": "system", "user": "user",
                                                           "assistant": "assistant"}
    prompt = _messages(row[key], key, issues, role_key=role_key, content_key=content_key,
                       roles=roles)
    replies = {}
    for side in ("chosen", "rejected"):
        if side not in row:
            issues.append((side, _missing(row, side), "error"))
            continue
        value = row[side]
        if isinstance(value, dict):
            got = _messages([value], side, issues, role_key=role_key, content_key=content_key,
                            roles=roles)
            # a lone turn is named `chosen`, not `chosen[0]`
            issues[:] = [(f.replace(f"{side}[0]", side, 1) if f else f, m, sev)
                         for f, m, sev in issues]
        else:
            got = _messages(value, side, issues, role_key=role_key, content_key=content_key,
                            roles=roles)
        if got is not None:
            _check_replies(got, side, issues)
            replies[side] = got
    if prompt is None or len(replies) < 2:
        return None
    _check_prompt(prompt, key, issues)
    if replies["chosen"] == replies["rejected"]:
        issues.append(("chosen", "chosen and rejected are identical; the pair teaches nothing",
                       "error"))
    system = row.get("system")
    if isinstance(system, str) and system.strip() and prompt[0]["role"] != "system":
        prompt = [{"role": "system", "content": system}] + prompt
    record = {"prompt": prompt, **replies}
    if "tools" in row:
        defs = tools.normalise_tools(row["tools"], issues)
        if defs:
            record["tools"] = defs
    return record


def _fmt_preference_message_pairs(row: dict, issues: list[Issue]) -> dict | None:
    """chosen_messages / rejected_messages: two whole conversations sharing their beginning."""
    renamed = {("chosen" if k == "chosen_messages" else "rejected" if k == "rejected_messages"
                else k): v for k, v in row.items() if k not in ("chosen", "rejected")}
    mine: list[Issue] = []
    record = _fmt_preference_messages(renamed, mine)
    for field, message, severity in mine:
        if field and field.split("[")[0] in ("chosen", "rejected"):
            field = field.replace("chosen", "chosen_messages", 1) if field.startswith("chosen") \
                else field.replace("rejected", "rejected_messages", 1)
        message = message.replace("missing key 'chosen'", "missing key 'chosen_messages'")
        message = message.replace("missing key 'rejected'", "missing key 'rejected_messages'")
        issues.append((field, message, severity))
    return record


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


def _label(row: dict, issues: list[Issue]) -> bool | None:
    label = row.get("label", _MISSING)
    if label is _MISSING:
        issues.append(("label", _missing(row, "label") + "; KTO rows say whether the completion "
                       "is desirable (true) or not (false)", "error"))
        return None
    if not isinstance(label, bool):
        issues.append(("label", f"must be true or false (a boolean), got {describe(label)} "
                       f"{short(label)}", "error"))
        return None
    return label


def _fmt_kto(row: dict, issues: list[Issue]) -> dict | None:
    pair = _prompt_and_completion(row, issues)
    label = _label(row, issues)
    if label is None:
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
    """prompt/chosen/rejected as strings. Without a prompt: Alpaca's instruction (+ input), or
    the transcript up to the last shared "\\n\\nAssistant:" (hh-rlhf), or the common beginning."""
    if isinstance(row.get("prompt"), list) or isinstance(row.get("rejected"), list):
        issues.append(("rejected" if isinstance(row.get("rejected"), list) else "prompt",
                       "prompt, chosen and rejected must all be strings or all be message lists",
                       "error"))
        return None
    implicit = "prompt" not in row and "instruction" not in row
    chosen = _text(row, "chosen", issues, allow_empty=implicit)
    rejected = _text(row, "rejected", issues, allow_empty=implicit)
    if "instruction" in row and "prompt" not in row:
        instruction = _text(row, "instruction", issues)
        extra = _text(row, "input", issues, optional=True, allow_empty=True)
        prompt = None if instruction is None or extra is None else \
            instruction + ("\n\n" + extra if extra.strip() else "")
    else:
        prompt = _text(row, "prompt", issues, optional=True, allow_empty=True)
    if chosen is None or rejected is None or prompt is None:
        return None
    if chosen == rejected:
        issues.append(("chosen", "chosen and rejected are identical; the pair teaches nothing",
                       "error"))
        return None
    if implicit:
        split = _split_implicit(chosen, rejected, issues)
        if split is None:
            return None
        prompt, chosen, rejected = split
    record: dict[str, Any] = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    system = row.get("system")
    if isinstance(system, str) and system.strip() and not implicit:
        record = {"prompt": [{"role": "system", "content": system},
                             {"role": "user", "content": prompt}],
                  "chosen": [{"role": "assistant", "content": chosen}],
                  "rejected": [{"role": "assistant", "content": rejected}]}
    return record


def _split_implicit(chosen: str, rejected: str, issues: list[Issue]) -> tuple[str, str, str] | None:
    """Prompt and the two replies of a pair written as two full texts."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    marker = chosen.rfind(ASSISTANT_MARKER, 0, n)
    if marker >= 0:  # hh-rlhf: the prompt is the transcript up to the last assistant turn
        shared = chosen[: marker + len(ASSISTANT_MARKER)]
    else:
        shared = _common_text_prefix(chosen, rejected)
        if not shared.strip():
            if n and n == min(len(chosen), len(rejected)):
                shorter = "chosen" if len(chosen) == n else "rejected"
                issues.append((shorter, f"{shorter} is the exact beginning of the other text: "
                               "no prompt can be told from the replies; add a prompt field",
                               "error"))
            else:
                issues.append(("prompt", "missing key 'prompt', and chosen/rejected share no "
                               "common beginning to take it from; add a prompt field", "error"))
            return None
    replies = chosen[len(shared):], rejected[len(shared):]
    for side, reply in zip(("chosen", "rejected"), replies, strict=True):
        if not reply.strip():
            where = "the last '\\n\\nAssistant:'" if marker >= 0 else "the shared prompt"
            issues.append((side, f"the {side} reply is empty (nothing after {where}); there is "
                           "nothing to compare: drop the row or write the reply", "error"))
    if any(not r.strip() for r in replies):
        return None
    return shared, replies[0], replies[1]


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
    "kto_messages": _fmt_kto_messages,
    "sharegpt_preference": _fmt_sharegpt_preference,
    "preference_message_pairs": _fmt_preference_message_pairs,
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
