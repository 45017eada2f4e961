"""Engine: the one object the UI is given to do real work.

Thin on purpose: each method imports the engine module it needs when first called, so building
an Engine (before the TUI's first paint) costs nothing, and the dataset layer's heavier imports
(tokenizers, pyarrow) happen in the worker thread that needs them. No Textual here.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

DATASET_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".pq", ".txt")
DEMO_SUFFIXES = (".jsonl", ".txt")
# Files save_to_disk leaves in a folder: such a folder is one dataset.
DATASETS_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")


class DatasetImportError(ValueError):
    """A dataset that cannot become a version; the message says what to fix."""


class JobRefusedError(ValueError):
    """Pre-flight refused a submitted job; `report` is the report's dict form."""

    def __init__(self, report: dict) -> None:
        self.report = report
        super().__init__("; ".join(report.get("refusals") or []) or "pre-flight refused the job")


class Engine:
    def __init__(
        self,
        tokenizer_path: str | Path | None = None,
        store: Any = None,
        home: str | Path | None = None,
    ) -> None:
        # None: the demo tokenizer (data.load_tokenizer decides where it lives).
        self.tokenizer_path = tokenizer_path
        self._tokenizer: Any = None
        self._tokenizer_loaded = False
        self._tokenizer_error: str | None = None
        self._lock = threading.Lock()
        # Training: one Runner per workspace (it owns the child processes it started), used from
        # the app's poll worker and the Train screen's workers, so every call holds this lock.
        self._store = store
        self._home = Path(home) if home is not None else None
        self._runner: Any = None
        self._runner_lock = threading.RLock()
        self._recovered = False
        # Pre-flight reports by config JSON: submitting the config just checked reuses its report.
        self._reports: dict[str, Any] = {}

    # ---- tokenizer (loaded once, shared by stats and examples) --------------------------------

    def tokenizer(self) -> Any:
        """The tokenizer for token counts and chat templates, or None if it cannot be loaded
        (then `tokenizer_error` says why, and the dataset layer falls back to what it can)."""
        with self._lock:
            if not self._tokenizer_loaded:
                from tuiapp.engine import data

                try:
                    self._tokenizer = data.load_tokenizer(self.tokenizer_path)
                except Exception as exc:  # missing demo tokenizer, unreadable folder
                    self._tokenizer = None
                    self._tokenizer_error = str(exc) or type(exc).__name__
                self._tokenizer_loaded = True
            return self._tokenizer

    @property
    def tokenizer_error(self) -> str | None:
        return self._tokenizer_error

    # ---- dataset layer ----------------------------------------------------------------------

    def validate(self, path: str | Path, kind: str | None = None) -> Any:
        from tuiapp.engine import data

        return data.validate(Path(path), kind=kind)

    def stats(self, report: Any, tokenizer: Any = None, max_length: int | None = None) -> dict:
        from tuiapp.engine import data

        return data.compute_stats(
            report,
            tokenizer=tokenizer if tokenizer is not None else self.tokenizer(),
            max_length=max_length,
        )

    def render_examples(self, report: Any, n: int = 3) -> list[str]:
        from tuiapp.engine import data

        return data.render_examples(report, n=n, tokenizer=self.tokenizer())

    def import_dataset(self, store: Any, path: str | Path, name: str, kind: str | None = None,
                       skip_invalid: bool = False):
        """Validate `path` and record it as dataset version `name`; refuses data with errors.

        skip_invalid: rows with errors are left out instead (the version then points at a copy
        holding only the valid rows; its stats and lineage list the lines left out). A file that
        cannot be read whole, or has no usable row, is refused either way.
        Importing the same bytes under the same name again returns the existing version
        (the store is idempotent on name + content hash).
        """
        from tuiapp.engine import data

        path = Path(path).expanduser().resolve()
        if not path.exists():
            raise DatasetImportError(f"{path} does not exist.")
        report = data.validate(path, kind=kind)
        skipped = None
        if not report.ok:
            count = getattr(report, "error_count", 0) or len(report.errors)
            shown = "\n".join(f"  {problem}" for problem in report.errors[:3])
            if not skip_invalid or not data.skippable(report):
                hint = (" (or leave the invalid rows out)" if data.skippable(report) else "")
                raise DatasetImportError(
                    f"{path.name} has {count} error(s) and was not imported. Fix these "
                    f"first{hint}:\n{shown}")
            skipped = data.skip_summary(report, data.content_hash(path))
        if not report.records:
            raise DatasetImportError(f"{path.name} has no usable rows; nothing to import.")
        stats = data.compute_stats(report, tokenizer=self.tokenizer())
        target, digest = path, None
        if skipped is not None:
            stats["skipped"] = skipped
            in_memory = getattr(store, "memory", False) or str(getattr(store, "path", ":memory:")) == ":memory:"
            home = None if in_memory else Path(store.path).parent
            folder = (home / "datasets") if home else Path(tempfile.gettempdir()) / "tuneloop-valid"
            target, digest = data.write_valid_rows(report, folder)
        return store.add_dataset_version(
            name,
            str(target),
            digest or data.content_hash(path),
            report.format,
            report.kind,
            len(report.records) if skipped is not None else report.rows,
            stats=stats,
            source="import",
            lineage=None if skipped is None else {"skipped_invalid": skipped,
                                                  "source_path": str(path)},
        )

    def list_workspace_files(self, home: str | Path) -> list[Path]:
        """Dataset files a user can pick: the home's datasets/ folder, then the demo files."""
        from tuiapp import paths

        found: list[Path] = []
        datasets_dir = Path(home) / "datasets"
        if datasets_dir.is_dir():
            entries = sorted(datasets_dir.rglob("*"))
            # A save_to_disk folder is one dataset: list it, not the files inside it.
            dataset_dirs = [
                e for e in entries if e.is_dir() and any((e / m).exists() for m in DATASETS_MARKERS)
            ]
            for entry in entries:
                if any(d in entry.parents for d in dataset_dirs):
                    continue
                if entry in dataset_dirs or (
                    entry.is_file() and entry.suffix.lower() in DATASET_SUFFIXES
                ):
                    found.append(entry)
        if paths.DEMO_DIR.is_dir():
            found.extend(
                sorted(
                    p for p in paths.DEMO_DIR.iterdir() if p.is_file() and p.suffix in DEMO_SUFFIXES
                )
            )
        return found


    # ---- training jobs ------------------------------------------------------------------------

    def attach(self, store: Any, home: str | Path) -> None:
        """Give the engine its workspace (the app does this at start) unless it already has one."""
        with self._runner_lock:
            if self._store is None:
                self._store = store
            if self._home is None:
                self._home = Path(home)

    def _runner_for_jobs(self) -> Any:
        with self._runner_lock:
            if self._runner is None:
                if self._store is None or self._home is None:
                    raise RuntimeError(
                        "the engine has no workspace for training jobs; build it as "
                        "Engine(store=..., home=...) or call attach(store, home)"
                    )
                from tuiapp.engine.jobs.runner import Runner

                self._runner = Runner(self._store, self._home)
            return self._runner

    def list_presets(self, kind: str | None = None) -> dict[str, Path]:
        """Preset files by name, only those of `kind` when given (read from their `kind` key)."""
        import tomllib

        from tuiapp.engine.train import config

        found = {}
        for name, path in config.list_presets().items():
            try:
                preset_kind = tomllib.loads(path.read_text(encoding="utf-8")).get("kind")
            except (OSError, tomllib.TOMLDecodeError):
                continue  # a broken preset is load_preset's error to report, not the picker's
            if kind is None or preset_kind == kind:
                found[name] = path
        return found

    def load_preset(self, path: str | Path) -> dict[str, Any]:
        """A preset's full, validated config as a dict (kind included); ConfigError if bad."""
        from tuiapp.engine.train import config

        return config.load_config(path).to_dict()

    def config_fields(self, kind: str) -> list[dict[str, Any]]:
        """The form of a job kind: name, type, default, help, choices, group per field."""
        from tuiapp.engine.train import config

        return config.field_help(config.config_class(kind))

    def build_config(self, kind: str, values: dict[str, Any]) -> tuple[Any, dict[str, str]]:
        """A config from form values (strings are parsed as the field's type).

        Returns (config, {}) or (None, {field: message}): every field that cannot be parsed,
        else the first rule the config itself refuses.
        """
        from tuiapp.engine.train import config

        cls = config.config_class(kind)
        typed: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for key, value in values.items():
            if key == "kind":
                continue
            try:
                typed[key] = config.coerce(cls, key, value) if isinstance(value, str) else value
            except config.ConfigError as exc:
                errors[exc.field] = _config_message(exc)
        if errors:
            return None, errors
        try:
            return config.from_dict(kind, typed), {}
        except config.ConfigError as exc:
            return None, {exc.field: _config_message(exc)}

    def preflight(self, job_config: Any) -> dict[str, Any]:
        """Pre-flight a config (loads the tokenizer, reads the model config: call from a worker)."""
        from tuiapp.engine.jobs.preflight import preflight

        runner = self._runner_for_jobs()
        report = preflight(job_config, runner.store, runner.home)
        with self._runner_lock:
            self._reports = {_config_key(job_config): report}
        return report.to_dict()

    def submit(self, job_config: Any, start: bool = True) -> Any:
        """Queue a job (pre-flight reused if this exact config was just checked) and, with
        `start`, start it now unless another job is running. Returns the run row; raises
        JobRefusedError when pre-flight refuses."""
        from tuiapp.engine.jobs.preflight import preflight

        runner = self._runner_for_jobs()
        with self._runner_lock:
            report = self._reports.get(_config_key(job_config))
        if report is None:  # outside the lock: the poll worker keeps going meanwhile
            report = preflight(job_config, runner.store, runner.home)
        if not report.ok:
            raise JobRefusedError(report.to_dict())
        with self._runner_lock:
            run = runner.submit(job_config, report=report)
            self._reports.pop(_config_key(job_config), None)
            if start:
                runner.start_next()
            return runner.store.get_run(run.id)

    def cancel_run(self, run_id: int) -> Any:
        """Queued: cancelled at once. Running: asked to stop (a last checkpoint is written)."""
        runner = self._runner_for_jobs()
        with self._runner_lock:
            return runner.cancel(run_id)

    def resume_run(self, run_id: int, start: bool = True) -> Any:
        """A new run continuing `run_id` from its newest complete checkpoint (ValueError if it
        cannot); started at once when nothing else runs and `start`."""
        runner = self._runner_for_jobs()
        with self._runner_lock:
            run = runner.resume(run_id)
            if start:
                runner.start_next()
            return runner.store.get_run(run.id)

    def poll_runs(self) -> list[dict[str, Any]]:
        """Move the queue on and report: runs whose process vanished are marked interrupted (first
        call), events are replayed into the store, the next queued job is started. Returns one
        progress dict per running run and per run whose status changed in this call."""
        runner = self._runner_for_jobs()
        with self._runner_lock:
            changed = []
            if not self._recovered:
                changed.extend(runner.recover())
                self._recovered = True
            changed.extend(runner.poll())
            started = runner.start_next()
            if started is not None:
                changed.append(started)
            report = {run.id: run for run in changed}
            for run in runner.store.list_runs(status="running"):
                report[run.id] = run
            return [_progress_dict(run, runner.progress(run.id)) for run in report.values()]


    # ---- generation and evaluation (Compare) --------------------------------------------------

    def generator(self) -> Any:
        """The one Generator of this app (created on first use; loads models lazily). Every
        Compare pane and batch evaluation shares it, so "base" and the runs on it share one
        loaded base model."""
        with self._runner_lock:
            if getattr(self, "_generator", None) is None:
                from tuiapp.engine.infer.generate import Generator

                self._generator = Generator(self._store, self._home)
            return self._generator

    def use_generator(self, generator: Any) -> None:
        """Hand the engine a Generator built elsewhere (the benchmark, a custom base folder)."""
        with self._runner_lock:
            self._generator = generator

    def close_generator(self) -> None:
        """Free the loaded models (llama.cpp must be closed before interpreter exit)."""
        with self._runner_lock:
            generator, self._generator = getattr(self, "_generator", None), None
        if generator is not None:
            generator.close()

    def generate_stream(self, ref: str, prompt: Any, params: Any = None, system: str | None = None,
                        cancel: threading.Event | None = None) -> Any:
        """Stream Chunks of `ref`'s answer (stored when finished; the last chunk's meta has the
        generation id). `params` is a GenerationParams or a dict of its fields."""
        from tuiapp.engine.infer.generate import GenerationParams

        if params is None or isinstance(params, dict):
            params = GenerationParams(**(params or {}))
        return self.generator().generate(ref, prompt, params, system=system or None, cancel=cancel)

    def run_eval(self, refs: list[str], prompts: Any, scorers: list[str] | None = None,
                 params: Any = None, limit: int | None = None, progress: Any = None) -> dict:
        """Batch evaluation through the shared Generator; stored as an evaluation (see
        evaluate.run_eval for the result's shape)."""
        from tuiapp.engine.infer import evaluate
        from tuiapp.engine.infer.generate import GenerationParams

        if params is None or isinstance(params, dict):
            params = GenerationParams(**(params or {}))
        return evaluate.run_eval(self.generator(), refs, prompts, scorers=scorers or None,
                                 params=params, limit=limit, progress=progress)

    def model_choices(self, store: Any) -> list[tuple[str, str]]:
        """What a Compare pane can answer as: [(label, REF)] — the base model, runs that saved
        a model, and GGUF/HF/adapter models and GGUF exports in the store. Paths only, no loads."""
        from tuiapp import paths

        choices: list[tuple[str, str]] = []
        if (paths.DEMO_BASE_MODEL / "config.json").exists():
            choices.append(("base (demo base model)", "base"))
        for run in store.list_runs(status="completed"):
            if run.kind == "reward":  # a reward model scores answers; it cannot write one
                continue
            out = Path(run.output_dir) if run.output_dir else None
            if out is not None and (out / "final").is_dir():
                name = f" {run.name}" if run.name else ""
                choices.append((f"run {run.id}{name} ({run.kind})", f"run:{run.id}"))
        base = str(paths.DEMO_BASE_MODEL.resolve())
        seen = {base}
        for model in store.list_models():
            if model.path in seen or not Path(model.path).exists():
                continue
            seen.add(model.path)
            choices.append((f"{model.name} ({model.kind}, model {model.id})", f"model:{model.id}"))
        list_exports = getattr(store, "list_exports", None)
        for export in list_exports() if list_exports else []:
            if export.format == "gguf" and export.status == "ok" and export.path not in seen \
                    and Path(export.path).is_file():
                seen.add(export.path)
                choices.append((f"{Path(export.path).name} (GGUF export)", export.path))
        return choices

    # ---- preference labelling (Label screen, `tuneloop labels`) --------------------------------

    def label_stats(self, store: Any, task_set: str | None = None, n_boot: int = 500) -> dict:
        """Counts, pace, self-agreement and win-rates (labels.stats)."""
        from tuiapp.engine.label import tasks as labels

        return labels.stats(store, task_set, n_boot=n_boot)

    def win_rates(self, store: Any, task_set: str | None = None, n_boot: int = 1000) -> dict:
        """Per pair of models wins/ties/losses and Bradley-Terry strengths with 95% intervals,
        from live labels (repeats left out) — for the Label and Runs screens."""
        from tuiapp.engine.label import tasks as labels
        from tuiapp.engine.label import winrate

        return winrate.summarize(labels.comparisons(store, task_set), n_boot=n_boot)

    def export_labels(self, store: Any, task_set: str | None = None,
                      out: str | Path | None = None) -> Any:
        """Live labels -> a new immutable preference dataset version (labels.export)."""
        from tuiapp.engine.label import tasks as labels

        return labels.export(store, task_set, out, home=self._home)

    def start_label_feeder(self, store: Any, refs: list[str], prompts: Any, *,
                           task_set: str | None = None, n: int | None = None, ahead: int = 8,
                           on_task: Any = None, on_done: Any = None, on_error: Any = None) -> Any:
        """Start making label tasks in a background thread, `ahead` tasks ahead of the
        labeller (labels.TaskFeeder, started). Raises LabelsError for bad REFs or prompts."""
        from tuiapp.engine.label import tasks as labels

        return labels.TaskFeeder(store, self.generator(), refs, prompts, task_set=task_set, n=n,
                                 ahead=ahead, on_task=on_task, on_done=on_done,
                                 on_error=on_error).start()


def _progress_dict(run: Any, progress: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "status": run.status,
        "name": run.name,
        "kind": run.kind,
        "error": run.error,
        "step": progress.get("step"),
        "total_steps": progress.get("total_steps"),
        "eta_s": progress.get("eta_s"),
        "loss": progress.get("loss"),
        "eval_loss": progress.get("eval_loss"),
        "tokens_per_s": progress.get("tokens_per_s"),
        "phase": progress.get("phase"),
        "checkpoint": progress.get("checkpoint"),
    }


def _config_key(job_config: Any) -> str:
    import json

    return json.dumps(job_config.to_dict(), sort_keys=True, default=str)


def _config_message(exc: Exception) -> str:
    """ConfigError says "field: message"; next to the field only the message is needed."""
    field = getattr(exc, "field", None)
    text = str(exc)
    return text[len(field) + 2 :] if field and text.startswith(f"{field}: ") else text
