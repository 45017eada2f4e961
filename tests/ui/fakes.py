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


class FakeRefused(ValueError):
    """What the real facade raises when pre-flight refuses a submitted job (has `.report`)."""

    def __init__(self, report: dict) -> None:
        self.report = report
        super().__init__("; ".join(report.get("refusals", [])))


# A pre-flight report dict shaped like PreflightReport.to_dict().
PREFLIGHT_OK = {
    "kind": "sft",
    "base_model": "/models/demo",
    "device": "cpu",
    "dataset_version_id": 1,
    "dataset_rows": 10,
    "params": {"total": 3_200_000, "trainable": 410_000, "share": 0.128},
    "memory": {"estimate_bytes": 600 * 2**20, "free_bytes": 16 * 2**30},
    "tokens": {
        "max_length": 256,
        "tokens": {"mean": 41.0, "p90": 90.0, "max": 131.0},
        "truncated": {"count": 1, "share": 0.1},
    },
    "steps": 20,
    "refusals": [],
    "warnings": ["memory: about 0.6 GiB of 16 GiB free"],
    "ok": True,
}


class FakeEngine:
    def __init__(
        self,
        files: list[Path] | None = None,
        reports: dict[str, FakeReport] | None = None,
        stats: dict | None = None,
        examples: list[str] | None = None,
        gate: threading.Event | None = None,
        preflight_report: dict | None = None,
    ) -> None:
        self.files = list(files or [])
        self.reports = dict(reports or {})  # by file name
        self.stats_result = stats if stats is not None else {}
        self.examples = list(examples or [])
        # When set, validate() waits for it: lets a test look at the screen mid-validation.
        self.gate = gate
        self.calls: list[tuple[str, Any]] = []
        # Training: config methods from the real (light, torch-free) config module; pre-flight,
        # submit, cancel, resume and poll scripted, runs kept in the store the app attaches.
        from tuiapp.engine.facade import Engine

        self._config = Engine()
        self.store: Any = None
        self.home: Any = None
        self.preflight_report = dict(preflight_report or PREFLIGHT_OK)
        self.refuse_submit: dict | None = None  # a report: submit raises FakeRefused with it
        # Each poll_runs() call returns the next list (then [] forever).
        self.poll_script: list[list[dict]] = []
        self.polls = 0

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

    def attach(self, store, home):
        self.store, self.home = store, home

    def list_presets(self, kind=None):
        return self._config.list_presets(kind)

    def load_preset(self, path):
        return self._config.load_preset(path)

    def config_fields(self, kind):
        return self._config.config_fields(kind)

    def build_config(self, kind, values):
        return self._config.build_config(kind, values)

    def preflight(self, config):
        self.calls.append(("preflight", config.to_dict()))
        if self.gate is not None:
            self.gate.wait(5)
        return dict(self.preflight_report)

    def submit(self, config, start=True):
        self.calls.append(("submit", (config.to_dict(), start)))
        if self.refuse_submit is not None:
            raise FakeRefused(self.refuse_submit)
        running = self.store.list_runs(status="running")
        status = "running" if start and not running else "queued"
        return self.store.create_run(
            config.kind, config.to_dict(), name=config.run_name, seed=config.seed, status=status
        )

    def cancel_run(self, run_id):
        self.calls.append(("cancel_run", run_id))
        run = self.store.get_run(run_id)
        if run.status == "queued":
            return self.store.update_run(run_id, status="cancelled")
        return run

    def resume_run(self, run_id, start=True):
        self.calls.append(("resume_run", run_id))
        old = self.store.get_run(run_id)
        return self.store.create_run(
            old.kind, old.config, name=old.name, resumed_from=old.id, status="queued"
        )

    def poll_runs(self):
        self.polls += 1
        return self.poll_script.pop(0) if self.poll_script else []


FakeTrainingEngine = FakeEngine  # the name the Train tests read best with
