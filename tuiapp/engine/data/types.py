"""Value types shared by the dataset layer: problems, reports, the format/kind vocabulary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# "prompt": prompts alone, for PPO/RL and evaluation sets.
KINDS = ("sft", "preference", "kto", "text", "prompt")

# format -> the kind of job it can feed
FORMAT_KIND = {
    "messages": "sft",
    "alpaca": "sft",
    "sharegpt": "sft",
    "prompt_completion": "sft",
    "text": "text",
    "preference": "preference",
    "preference_messages": "preference",
    "kto": "kto",
    "prompt_only": "prompt",
    "kto_messages": "kto",
    "sharegpt_preference": "preference",
    "preference_message_pairs": "preference",
}
FORMATS = tuple(FORMAT_KIND)

# What a row of each kind looks like, for hints in error messages.
KIND_SHAPES = {
    "sft": '{"messages": [...]}, {"instruction", "input", "output"}, '
    '{"conversations": [...]} or {"prompt", "completion"}',
    "preference": '{"prompt", "chosen", "rejected"} (strings or message lists)',
    "kto": '{"prompt", "completion", "label": true|false} or {"messages": [...], "label": '
    'true|false}',
    "text": '{"text": "..."} or a .txt file',
    "prompt": '{"prompt": "..."} (a string or a message list ending with a user turn)',
}

# Only this many problems are kept; the rest are counted in ValidationReport.more_problems.
MAX_PROBLEMS = 1000


@dataclass
class Problem:
    """One thing wrong (or suspicious) in a dataset, located as precisely as we can.

    ``line`` is the 1-based physical line of the file; for Parquet files and `datasets` folders
    there are no lines, so it is the 1-based row number and ``unit`` is "row".
    """

    path: str
    line: int | None
    field: str | None
    message: str
    severity: str = "error"
    unit: str = "line"

    def __str__(self) -> str:
        where = str(self.path)
        if self.line is not None:
            where += f":row {self.line}" if self.unit == "row" else f":{self.line}"
        parts = [where]
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        return ": ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "line": self.line,
            "unit": self.unit,
            "field": self.field,
            "message": self.message,
            "severity": self.severity,
        }


@dataclass
class ValidationReport:
    """Everything `validate` learnt about one dataset.

    ``records`` are the rows that passed, normalised to TRL's formats; ``line_numbers[i]`` is
    where ``records[i]`` came from. ``rows`` counts every data row read, good or bad.
    """

    path: str
    format: str | None
    kind: str | None
    rows: int
    problems: list[Problem] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)
    file_type: str | None = None
    more_problems: int = 0  # problems found beyond MAX_PROBLEMS (not stored)
    error_count: int = 0  # all errors, including those not stored
    warning_count: int = 0
    # An error that stops reading (a broken JSON array, the wrong kind, an empty file): the
    # rows cannot be trusted to be all there, so invalid rows cannot simply be left out.
    fatal: bool = False
    skipped_lines: list[int] = field(default_factory=list)  # rows read but not usable

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity != "error"]

    @property
    def ok(self) -> bool:
        return self.error_count == 0 and not self.errors

    def add(self, problem: Problem) -> None:
        if problem.severity == "error":
            self.error_count += 1
        else:
            self.warning_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
        else:
            self.more_problems += 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (records are left out: they can be large)."""
        return {
            "path": str(self.path),
            "file_type": self.file_type,
            "format": self.format,
            "kind": self.kind,
            "rows": self.rows,
            "valid_rows": len(self.records),
            "ok": self.ok,
            "errors": self.error_count,
            "warnings": self.warning_count,
            "problems": [p.to_dict() for p in self.problems],
            "more_problems": self.more_problems,
            "skipped_lines": self.skipped_lines[:MAX_PROBLEMS],
        }


def type_name(value: Any) -> str:
    """The JSON name of a Python value's type, as a person editing the file would say it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def short(value: Any, limit: int = 40) -> str:
    """A value quoted for a message, cut short so a huge field never floods the output."""
    text = repr(value) if not isinstance(value, str) else '"' + value + '"'
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"
