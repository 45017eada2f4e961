"""The line a field sits on inside a JSON text: a row of a JSON array spans many lines, and
`messages[3].content` is easier to find by its own line than by where the row begins."""

from __future__ import annotations

import json
import re

_DECODER = json.JSONDecoder()
_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _find(text: str, pos: int, part: str | int) -> tuple[int, int] | None:
    """(where the key or element starts, where its value starts) inside the value at pos."""
    pos = _ws(text, pos)
    opener = "{" if isinstance(part, str) else "["
    if pos >= len(text) or text[pos] != opener:
        return None
    pos, index = _ws(text, pos + 1), 0
    while pos < len(text) and text[pos] not in "}]":
        mark = pos
        if opener == "{":
            if text[pos] != '"':
                return None
            key, pos = json.decoder.scanstring(text, pos + 1)
            pos = _ws(text, pos)
            if pos >= len(text) or text[pos] != ":":
                return None
            pos = _ws(text, pos + 1)
            if key == part:
                return mark, pos
        elif index == part:
            return mark, pos
        _, pos = _DECODER.raw_decode(text, pos)
        pos = _ws(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos = _ws(text, pos + 1)
        index += 1
    return None


def field_line(text: str, start: int, field: str) -> int | None:
    """1-based line of `field` (a JSON path such as messages[0].role) in the value at start."""
    found = None
    pos = start
    try:
        for name, number in _PART.findall(field):
            found = _find(text, pos, name if name else int(number))
            if found is None:
                return None
            pos = found[1]
    except (ValueError, json.JSONDecodeError):
        return None
    return None if found is None else text.count("\n", 0, found[0]) + 1
