"""A scripted stand-in for tuiapp.engine.facade.Engine: same methods, canned answers, and a log
of every call so tests can assert what the UI asked for."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class FakeProblem:
    path: str
    line: int | None
    field: str | None
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return ": ".join(x for x in (where, self.field, self.message) if x)


@dataclass
class FakeReport:
    path: str
    format: str | None
    kind: str | None
    rows: int
    problems: list[FakeProblem] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)

    @property
    def errors(self) -> list[FakeProblem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[FakeProblem]:
        return [p for p in self.problems if p.severity != "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


class FakeEngine:
    def __init__(
        self,
        files: list[Path] | None = None,
        reports: dict[str, FakeReport] | None = None,
        stats: dict | None = None,
        examples: list[str] | None = None,
        gate: threading.Event | None = None,
    ) -> None:
        self.files = list(files or [])
        self.reports = dict(reports or {})  # by file name
        self.stats_result = stats if stats is not None else {}
        self.examples = list(examples or [])
        # When set, validate() waits for it: lets a test look at the screen mid-validation.
        self.gate = gate
        self.calls: list[tuple[str, Any]] = []

    def _report(self, path: Path) -> FakeReport:
        return self.reports[Path(path).name]

    def validate(self, path, kind=None):
        self.calls.append(("validate", (Path(path).name, kind)))
        if self.gate is not None:
            self.gate.wait(5)
        return self._report(path)

    def stats(self, report, tokenizer=None, max_length=None):
        self.calls.append(("stats", max_length))
        return dict(self.stats_result)

    def render_examples(self, report, n=3):
        self.calls.append(("render_examples", n))
        return self.examples[:n]

    def import_dataset(self, store, path, name, kind=None):
        self.calls.append(("import_dataset", (Path(path).name, name, kind)))
        report = self._report(path)
        if not report.ok:
            raise ValueError(f"{Path(path).name} has {len(report.errors)} error(s); not imported")
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        return store.add_dataset_version(
            name, str(path), digest, report.format, report.kind, report.rows, source="import"
        )

    def list_workspace_files(self, home):
        self.calls.append(("list_workspace_files", Path(home)))
        return list(self.files)
