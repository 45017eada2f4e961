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

    def import_dataset(self, store, path, name, kind=None, skip_invalid=False):
        args = (Path(path).name, name, kind) + (("skip_invalid",) if skip_invalid else ())
        self.calls.append(("import_dataset", args))
        report = self._report(path)
        if not report.ok and not skip_invalid:
            raise ValueError(f"{Path(path).name} has {len(report.errors)} error(s); not imported")
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        rows, stats = report.rows, None
        if not report.ok:  # like the facade: the valid rows only, the rest counted in the stats
            rows = len(report.records)
            stats = {"skipped": {"count": report.rows - rows,
                                 "lines": sorted({p.line for p in report.errors})}}
        return store.add_dataset_version(
            name, str(path), digest, report.format, report.kind, rows, stats=stats, source="import"
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


# ---- Compare: a scripted streaming backend ----------------------------------------------------


@dataclass
class FakeChunk:
    """Shaped like tuiapp.engine.infer.params.Chunk."""

    text: str
    done: bool = False
    tokens: int = 0
    latency_s: float | None = None
    first_token_s: float | None = None
    tokens_per_s: float | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FakeModelRef:
    ref: str
    label: str
    run_id: int | None = None


class FakeCompareEngine(FakeEngine):
    """Answers are scripted per REF (text, or a function of the prompt) and streamed one word
    per chunk with `delay` seconds between words, as the real generator streams tokens. With
    `hold` set, every stream stops after its first word until the event is set, so a test can
    look at (and type into) the screen mid-stream. Finished answers are stored like the real
    Generator stores them."""

    def __init__(self, answers: dict[str, Any], choices: list[tuple[str, str]] | None = None,
                 delay: float = 0.005, hold: threading.Event | None = None,
                 failing: dict[str, str] | None = None, fixed_timing: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fixed_timing = fixed_timing   # figures from the word count alone (snapshots)
        self.answers = dict(answers)
        self.choices = list(choices if choices is not None else [(ref, ref) for ref in answers])
        self.delay = delay
        self.hold = hold
        self.failing = dict(failing or {})   # REF -> the error its generation raises
        self.streams: list[tuple[str, str, dict, str | None]] = []
        self.finished: list[tuple[str, str]] = []   # (ref, finish_reason) in finishing order
        self._lock = threading.Lock()

    def _answer(self, ref: str, prompt: Any) -> str:
        answer = self.answers[ref]
        return answer(prompt) if callable(answer) else answer

    def model_choices(self, store):
        self.calls.append(("model_choices", None))
        return list(self.choices)

    def generate_stream(self, ref, prompt, params=None, system=None, cancel=None):
        import time

        with self._lock:
            self.streams.append((ref, prompt, dict(params or {}), system))
        if ref in self.failing:
            raise ValueError(self.failing[ref])
        if ref not in self.answers:
            raise ValueError(f"unknown model REF {ref!r}")
        words = self._answer(ref, prompt).split(" ")
        limit = (params or {}).get("max_new_tokens") or len(words)
        t0 = time.perf_counter()
        first, n, reason, shown = None, 0, "eos", []
        for i, word in enumerate(words[:limit]):
            if cancel is not None and cancel.is_set():
                reason = "cancelled"
                break
            time.sleep(self.delay)
            n += 1
            first = first if first is not None else time.perf_counter() - t0
            piece = word if i == 0 else " " + word
            shown.append(piece)
            yield FakeChunk(piece, tokens=n)
            if i == 0 and self.hold is not None:
                self.hold.wait(10)
        else:
            reason = "length" if limit < len(words) else "eos"
        text = "".join(shown)
        latency = time.perf_counter() - t0
        if self.fixed_timing:
            first, latency = 0.05, 0.05 + 0.02 * n
        final = FakeChunk(text, done=True, tokens=n, latency_s=latency, first_token_s=first,
                          tokens_per_s=n / latency if latency else None, finish_reason=reason,
                          meta={"ref": ref, "label": dict((r, lab) for lab, r in self.choices).get(ref, ref)})
        if self.store is not None:
            row = self.store.add_generation(ref, str(prompt), text, params=dict(params or {}),
                                            latency_s=latency, tokens=n, system=system)
            final.meta["generation_id"] = row.id
        with self._lock:
            self.finished.append((ref, reason))
        yield final

    # batch evaluation: the real evaluate.run_eval over a generator answering from the script
    def resolve(self, ref):
        if ref not in self.answers:
            raise ValueError(f"unknown model REF {ref!r}")
        label = dict((r, lab) for lab, r in self.choices).get(ref, ref)
        return FakeModelRef(ref, label)

    def complete(self, model_ref, prompt, params=None, system=None, store_result=True):
        text = self._answer(model_ref.ref, prompt)
        n = len(text.split())
        return FakeChunk(text, done=True, tokens=n, latency_s=0.01 * n, finish_reason="eos")

    def run_eval(self, refs, prompts, scorers=None, params=None, limit=None, progress=None):
        from tuiapp.engine.infer import evaluate

        self.calls.append(("run_eval", (list(refs), str(prompts), scorers, limit)))
        return evaluate.run_eval(self, refs, prompts, scorers=scorers or None, params=params,
                                 limit=limit, progress=progress, store=self.store)


# ---- Label screen -------------------------------------------------------------------------------


class ScriptedLabelGenerator:
    """`complete(ref, prompt, ...)` like Generator's: a scripted answer per model, stored; an
    optional gate holds each answer back (to look at the screen while pairs are generated)."""

    def __init__(self, store, gate: threading.Event | None = None) -> None:
        self.store = store
        self.gate = gate
        self.calls: list[tuple[str, str]] = []

    def complete(self, ref, prompt, params=None, system=None, store_result=True):
        if self.gate is not None:
            self.gate.wait(5)
        if ref == "broken":
            raise RuntimeError("model 'broken' could not be loaded")
        self.calls.append((ref, prompt))
        text = f"{ref} answers: {prompt}"
        row = self.store.add_generation(ref, prompt, text)
        return FakeChunk(text, done=True, tokens=len(text.split()), meta={"generation_id": row.id})


class FakeLabelEngine(FakeEngine):
    """Label methods of the facade: statistics and export are the real (store-only) functions;
    new tasks come from the real TaskFeeder over a scripted generator."""

    def __init__(self, *args, gate: threading.Event | None = None,
                 choices: list[tuple[str, str]] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.label_gate = gate
        self.generator_: ScriptedLabelGenerator | None = None
        self.choices = list(choices if choices is not None else [
            ("base (demo base model)", "base"), ("run 3 sft (sft)", "run:3"),
            ("run 12 dpo (dpo)", "run:12"), ("tiny (hf, model 1)", "model:1")])

    def model_choices(self, store):
        return list(self.choices)

    def label_stats(self, store, task_set=None, n_boot=100):
        from tuiapp.engine.label import tasks as labels

        return labels.stats(store, task_set, n_boot=n_boot)

    def win_rates(self, store, task_set=None, n_boot=100):
        from tuiapp.engine.label import tasks as labels
        from tuiapp.engine.label import winrate

        return winrate.summarize(labels.comparisons(store, task_set), n_boot=n_boot)

    def export_labels(self, store, task_set=None, out=None):
        from tuiapp.engine.label import tasks as labels

        return labels.export(store, task_set, out, home=self.home)

    def start_label_feeder(self, store, refs, prompts, *, task_set=None, n=None, ahead=8,
                           on_task=None, on_done=None, on_error=None):
        from tuiapp.engine.label import tasks as labels

        self.calls.append(("start_label_feeder", (list(refs), str(prompts), task_set, n)))
        self.generator_ = ScriptedLabelGenerator(store, self.label_gate)
        return labels.TaskFeeder(store, self.generator_, refs, prompts, task_set=task_set, n=n,
                                 ahead=ahead, on_task=on_task, on_done=on_done,
                                 on_error=on_error).start()
