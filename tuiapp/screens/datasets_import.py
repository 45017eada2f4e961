"""The Datasets screen's import: the name dialog (and the one for a file already imported), the
import in a thread worker (leaving invalid rows out when Skip invalid rows is ticked) and the
notice after it. A mixin of DatasetsScreen, split off to keep files small; handlers are plain
`on_*` methods (a mixin gets no `@on` registration)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import work
from textual.widgets import Checkbox

from tuiapp.messages import DatasetImported, WorkFailed
from tuiapp.screens.modals import ConfirmScreen, NameScreen


def _skippable(report: Any) -> bool:
    """Whether leaving invalid rows out gives a dataset (engine.data.skippable, read off the
    report so the screen needs no engine import): no fatal read error and some usable rows."""
    return report is not None and not getattr(report, "fatal", False) and bool(report.records)


def _readable(exc: BaseException) -> str:
    """One sentence for a person; the exception type only when the message is empty."""
    message = str(exc).strip()
    return message or type(exc).__name__


class DatasetImportMixin:
    """Import for DatasetsScreen (reads its current path, report, kind and engine)."""

    def action_import_version(self) -> None:
        if self.current_path is None:
            self.notify("Pick a dataset file first.", severity="warning")
            return
        if self.report is None:
            self.notify("Still validating; import when the report is shown.", severity="warning")
            return
        skip = bool(self.report.errors) and self._skipping()
        if self.report.errors and not skip:
            first = self.report.errors[0]
            hint = (" (or tick Skip invalid rows to leave those rows out)"
                    if _skippable(self.report) else "")
            self._fail(
                f"{self.current_path.name} has {len(self.report.errors)} error(s); fix them "
                f"before importing{hint}. First: {first}",
                replace_summary=False,
            )
            return
        path, kind = self.current_path, self.kind

        def chosen(name: str | None) -> None:
            if name:
                self.import_version(path, name, kind, skip)

        def ask_name(go_on: bool = True) -> None:
            if go_on:
                self.app.push_screen(
                    NameScreen(
                        f"Import {path.name} as a dataset version",
                        self._default_name(path),
                        action="Import",
                        hint="Versions are immutable; the same bytes under the same name "
                        "return the existing version.",
                    ),
                    chosen,
                )

        existing = self.imported.get(path.resolve())
        if existing is None:
            ask_name()
        else:
            self.app.push_screen(
                ConfirmScreen(
                    f"{path.name} is already dataset version #{existing}. Record it again "
                    "under another name?",
                    yes="Choose a name",
                ),
                ask_name,
            )

    def _default_name(self, path: Path) -> str:
        demo_dir = path.resolve().parent
        return f"demo/{path.stem}" if demo_dir.name == "demo" else path.stem

    def _skipping(self) -> bool:
        """Skip invalid rows is ticked and leaving rows out gives a dataset (no broken file, some rows)."""
        return self.query_one("#ds-skip-invalid", Checkbox).value and _skippable(self.report)

    @work(thread=True, exclusive=True, group="ds-import", exit_on_error=False)
    def import_version(self, path: Path, name: str, kind: str | None,
                       skip_invalid: bool = False) -> None:
        try:
            version = self.engine.import_dataset(self.store, path, name, kind=kind,
                                                 skip_invalid=skip_invalid)
        except Exception as exc:
            self.post_message(WorkFailed("import", _readable(exc), path))
            return
        self.post_message(DatasetImported(path, version))

    def on_dataset_imported(self, message: DatasetImported) -> None:
        version = message.version
        self.last_version = version
        self.imported[Path(message.path).resolve()] = version.id
        left = ((getattr(version, "stats", None) or {}).get("skipped") or {}).get("count")
        out = f", {left} invalid row(s) left out" if left else ""
        self.notify(f"{version.name} is dataset version #{version.id} ({version.rows} rows{out}).")
        if message.path == self.current_path and self.report is not None:
            self._update_summary()
        self.refresh_files()
