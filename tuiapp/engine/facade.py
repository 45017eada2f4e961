"""Engine: the one object the UI is given to do real work.

Thin on purpose: each method imports the engine module it needs when first called, so building
an Engine (before the TUI's first paint) costs nothing, and the dataset layer's heavier imports
(tokenizers, pyarrow) happen in the worker thread that needs them. No Textual here.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

DATASET_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".pq", ".txt")
DEMO_SUFFIXES = (".jsonl", ".txt")
# Files save_to_disk leaves in a folder: such a folder is one dataset.
DATASETS_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")


class DatasetImportError(ValueError):
    """A dataset that cannot become a version; the message says what to fix."""


class Engine:
    def __init__(self, tokenizer_path: str | Path | None = None) -> None:
        # None: the demo tokenizer (data.load_tokenizer decides where it lives).
        self.tokenizer_path = tokenizer_path
        self._tokenizer: Any = None
        self._tokenizer_loaded = False
        self._tokenizer_error: str | None = None
        self._lock = threading.Lock()

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

    def import_dataset(self, store: Any, path: str | Path, name: str, kind: str | None = None):
        """Validate `path` and record it as dataset version `name`; refuses data with errors.

        Importing the same bytes under the same name again returns the existing version
        (the store is idempotent on name + content hash).
        """
        from tuiapp.engine import data

        path = Path(path).expanduser().resolve()
        if not path.exists():
            raise DatasetImportError(f"{path} does not exist.")
        report = data.validate(path, kind=kind)
        if not report.ok:
            count = getattr(report, "error_count", 0) or len(report.errors)
            shown = "\n".join(f"  {problem}" for problem in report.errors[:3])
            raise DatasetImportError(
                f"{path.name} has {count} error(s) and was not imported. Fix these first:\n{shown}"
            )
        if not report.records:
            raise DatasetImportError(f"{path.name} has no usable rows; nothing to import.")
        stats = data.compute_stats(report, tokenizer=self.tokenizer())
        return store.add_dataset_version(
            name,
            str(path),
            data.content_hash(path),
            report.format,
            report.kind,
            report.rows,
            stats=stats,
            source="import",
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
