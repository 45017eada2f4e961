"""Tool use in conversations, normalised to the chat format transformers templates take.

Sources: OpenAI (assistant ``tool_calls`` / legacy ``function_call``, ``tool`` / ``function``
role results), ShareGPT as LLaMA-Factory writes it (``function_call`` turns whose value is the
call as JSON, ``observation`` turns with the result) and a ``tools`` column (a list of function
definitions, or that list as a JSON string). The result is what ``apply_chat_template(messages,
tools=...)`` expects:

    {"role": "assistant", "content": "", "tool_calls": [{"type": "function",
        "function": {"name": ..., "arguments": {...}}}]}
    {"role": "tool", "content": "...", "name"?: ..., "tool_call_id"?: ...}
    tools = [{"type": "function", "function": {"name", "description", "parameters"}}]
"""

from __future__ import annotations

import json
from typing import Any

from tuiapp.engine.data.read import describe
from tuiapp.engine.data.types import short

Issue = tuple[str | None, str, str]
RESULT_ROLES = ("tool", "function", "ipython", "observation")  # a tool's answer
CALL_ROLES = ("function_call",)  # ShareGPT: the assistant calling a tool


def _json(value: Any, field: str, what: str, issues: list[Issue]) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        issues.append((field, f"is not valid JSON ({exc.msg} at column {exc.colno}); it must "
                       f"hold {what}", "error"))
        return None


def parse_call(value: Any, field: str, issues: list[Issue]) -> dict[str, Any] | None:
    """One call: OpenAI's {"type", "function": {"name", "arguments"}, "id"} or {"name", "arguments"}."""
    if not isinstance(value, dict):
        issues.append((field, f"must be an object with 'name' and 'arguments', got "
                       f"{describe(value)}", "error"))
        return None
    fn = value["function"] if isinstance(value.get("function"), dict) else value
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        issues.append((f"{field}.name", "missing the function's name (a string)", "error"))
        return None
    args = _json(fn.get("arguments", fn.get("parameters", {})), f"{field}.arguments",
                 "the call's arguments as a JSON object", issues)
    if args is None:
        return None
    if not isinstance(args, dict):
        issues.append((f"{field}.arguments", f"must be an object (or a JSON string of one), got "
                       f"{describe(args)}", "error"))
        return None
    call: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": args}}
    if isinstance(value.get("id"), str):
        call["id"] = value["id"]
    return call


def _calls(raw: Any, field: str, issues: list[Issue]) -> list[dict[str, Any]] | None:
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        issues.append((field, f"must be a non-empty list of calls, got {describe(raw)}", "error"))
        return None
    calls = [parse_call(c, f"{field}[{j}]", issues) for j, c in enumerate(raw)]
    return None if any(c is None for c in calls) else calls


def assistant_with_calls(msg: dict, where: str, content_key: str,
                         issues: list[Issue]) -> dict[str, Any] | None:
    """An OpenAI assistant message carrying tool_calls (content may be null or missing)."""
    key = "tool_calls" if "tool_calls" in msg else "function_call"
    calls = _calls(msg[key], f"{where}.{key}", issues)
    content = msg.get(content_key)
    if content is None:
        content = ""
    if not isinstance(content, str):
        issues.append((f"{where}.{content_key}", f"must be a string or null next to tool_calls, "
                       f"got {describe(content)}", "error"))
        return None
    return None if calls is None else {"role": "assistant", "content": content,
                                       "tool_calls": calls}


def sharegpt_call(msg: dict, where: str, content_key: str,
                  issues: list[Issue]) -> dict[str, Any] | None:
    """A ShareGPT function_call turn: its value is the call (or a list of calls) as JSON."""
    field = f"{where}.{content_key}"
    if content_key not in msg:
        issues.append((field, f"missing key {content_key!r} (the call as JSON)", "error"))
        return None
    raw = _json(msg[content_key], field, 'the call as JSON: {"name": ..., "arguments": {...}}',
                issues)
    if raw is None:
        return None
    calls = _calls(raw, field, issues)
    return None if calls is None else {"role": "assistant", "content": "", "tool_calls": calls}


def tool_result(msg: dict, where: str, content_key: str,
                issues: list[Issue]) -> dict[str, Any] | None:
    """A tool's answer; structured results are kept as their JSON text."""
    field = f"{where}.{content_key}"
    if content_key not in msg or msg[content_key] is None:
        issues.append((field, f"missing key {content_key!r} (the tool's result)", "error"))
        return None
    content = msg[content_key]
    if isinstance(content, dict | list):
        content = json.dumps(content, ensure_ascii=False)
    if not isinstance(content, str):
        issues.append((field, f"must be a string, got {describe(content)} {short(content)}",
                       "error"))
        return None
    out: dict[str, Any] = {"role": "tool", "content": content}
    for key in ("name", "tool_call_id"):
        if isinstance(msg.get(key), str):
            out[key] = msg[key]
    return out


def normalise_tools(value: Any, issues: list[Issue]) -> list[dict[str, Any]] | None:
    """A `tools` column: function definitions, bare or OpenAI-wrapped, or as a JSON string."""
    if value is None or value == "" or value == []:
        return []
    tools = _json(value, "tools", "a JSON list of function definitions", issues)
    if tools is None:
        return None
    if isinstance(tools, dict):
        tools = [tools]
    if not isinstance(tools, list):
        issues.append(("tools", f"must be a list of function definitions, got "
                       f"{describe(tools)}", "error"))
        return None
    out = []
    for j, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        fn = fn if isinstance(fn, dict) else tool
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            issues.append((f"tools[{j}]", "must be a function definition with a 'name' (and "
                           "'description', 'parameters')", "error"))
            return None
        out.append({"type": "function", "function": fn})
    return out


def as_text(msg: dict[str, Any]) -> str:
    """A message's text for token counts when no template renders it: content plus calls."""
    calls = msg.get("tool_calls")
    if not calls:
        return msg["content"]
    return msg["content"] + "".join(json.dumps(c["function"], ensure_ascii=False) for c in calls)
