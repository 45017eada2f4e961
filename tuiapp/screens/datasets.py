"""Datasets: pick or type a file, validate it, look at its stats and examples, import a version.

Every slow step (listing files, validating, token statistics, rendering examples, reading
preview lines, importing) runs in a thread worker that posts a message; the handlers below are
the only code that touches widgets. Results for a file the user has already left are dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import (
    Button,
    Checkbox,
    DataTable,
    Input,
    Label,
    OptionList,
    Select,
    Static,
    TabbedContent,
    TabPane,
)
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from tuiapp.engine.data.read import FILE_TYPES
from tuiapp.messages import (
    ExamplesReady,
    FilesListed,
    PreviewReady,
    StatsReady,
    ValidationReady,
    WorkFailed,
)
from tuiapp.screens.areas import AreaScreen
from tuiapp.screens.dataset_stats import file_label, histogram_bins, stats_table
from tuiapp.screens.datasets_import import DatasetImportMixin, _readable, _skippable
from tuiapp.screens.tab_keys import TabKeysMixin, tab_bindings
from tuiapp.widgets.file_preview import FilePreview, read_window
from tuiapp.widgets.histogram import Histogram
from tuiapp.widgets.toggles import TextCheckbox

KIND_CHOICES = [
    ("auto-detect", "auto"),
    ("sft", "sft"),
    ("preference", "preference"),
    ("kto", "kto"),
    ("text", "text"),
]
DEFAULT_MAX_LENGTH = 1024
# Every file type the readers take, for the sentence a missing path gets.
ACCEPTED = ", ".join(FILE_TYPES)


def _has_lines(path: Path) -> bool:
    """Whether a preview can show lines of `path` (not a folder, not a binary columnar file)."""
    return Path(path).is_file() and Path(path).suffix.lower() not in (".parquet", ".pq")


class DatasetsScreen(DatasetImportMixin, TabKeysMixin, AreaScreen):
    AREA = "datasets"
    AREA_TITLE = "Datasets"
    BINDINGS = [
        Binding("ctrl+s", "import_version", "Import as version", id="datasets.import"),
        Binding("ctrl+r", "revalidate", "Re-validate", id="datasets.revalidate"),
        Binding("ctrl+o", "focus_path", "Type a path", id="datasets.type_path"),
        Binding("ctrl+f", "focus_files", "File list", id="datasets.files", show=False),
        *tab_bindings("datasets"),
    ]
    TABS_ID = "ds-tabs"
    TAB_IDS = ("tab-validation", "tab-stats", "tab-examples")

    def __init__(self) -> None:
        super().__init__()
        self.current_path: Path | None = None
        self.report: Any = None
        self.stats: dict | None = None
        self.examples: list[str] | None = None
        self.file_paths: list[Path] = []
        self.imported: dict[Path, int] = {}
        self.version_names: dict[Path, str] = {}  # Train's name of the file's version
        self.last_version: Any = None
        self.last_error: str | None = None

    # ---- layout -------------------------------------------------------------------------

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="ds-body"):
            with Vertical(id="ds-left"):
                yield Static("Dataset files", classes="section-title")
                yield OptionList(id="ds-files")
                yield Input(placeholder="…or type a path, Enter", id="ds-path")
                with Horizontal(classes="field-row"):
                    yield Label("Kind", classes="field-label")
                    yield Select(KIND_CHOICES, value="auto", allow_blank=False, id="ds-kind")
                with Horizontal(classes="field-row"):
                    yield Label("Max length", classes="field-label")
                    yield Input(str(DEFAULT_MAX_LENGTH), type="integer", id="ds-maxlen")
                yield TextCheckbox("Skip invalid rows", False, id="ds-skip-invalid", tooltip=(
                    "Import the valid rows only; the rows left out are counted and listed in "
                    "the version's stats and lineage (tuneloop data import --skip-invalid)"))
                yield Button("Import as version  ^s", id="ds-import", variant="primary")
            with Vertical(id="ds-right"):
                yield Static("Pick a dataset file on the left, or type a path.", id="ds-summary")
                with TabbedContent(id="ds-tabs", initial="tab-validation"):
                    with TabPane("Validation", id="tab-validation"):
                        yield DataTable(id="ds-problems", cursor_type="row", zebra_stripes=True)
                        yield Static("", id="ds-no-problems")
                        yield FilePreview(id="ds-preview")
                    with TabPane("Stats", id="tab-stats"):
                        with Horizontal(id="ds-stats-pane"):
                            with VerticalScroll(id="ds-stats-box"):
                                yield Static("No statistics yet.", id="ds-stats")
                            with VerticalScroll(id="ds-histogram-box"):
                                yield Histogram(
                                    "tokens per row, chat template applied", id="ds-histogram"
                                )
                    with TabPane("Examples", id="tab-examples"):
                        with VerticalScroll():
                            yield Static("No examples yet.", id="ds-examples")

    def on_mount(self) -> None:
        table = self.query_one("#ds-problems", DataTable)
        table.add_columns("Line", "Field", "Severity", "Message")
        self.query_one("#ds-no-problems").display = False
        self.query_one("#ds-files", OptionList).focus()

    def on_screen_resume(self) -> None:  # also the first show: a version made elsewhere appears
        self.refresh_files()

    # ---- file list ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="ds-files", exit_on_error=False)
    def refresh_files(self) -> None:
        try:
            files = list(self.engine.list_workspace_files(self.settings.home))
            versions = self.store.list_dataset_versions()
        except Exception as exc:  # a broken home must not take the screen down
            self.post_message(WorkFailed("listing dataset files", _readable(exc)))
            return
        imported: dict[Path, int] = {}
        names: dict[Path, str] = {}
        for version in versions:
            path = Path(version.path).expanduser().resolve()
            # oldest first (store contract), so the newest version of a file wins
            imported[path], names[path] = version.id, version.name
            if path not in {f.resolve() for f in files}:
                files.append(path)
        self.version_names = names  # read by the handler of the message below
        self.post_message(FilesListed(files, imported))

    def on_files_listed(self, message: FilesListed) -> None:
        self.file_paths = list(message.files)
        self.imported = dict(message.imported)
        option_list = self.query_one("#ds-files", OptionList)
        highlighted = option_list.highlighted
        option_list.clear_options()
        option_list.add_options([self._file_option(i, p) for i, p in enumerate(self.file_paths)])
        if highlighted is not None and highlighted < len(self.file_paths):
            option_list.highlighted = highlighted

    def _file_option(self, index: int, path: Path) -> Option:
        version_id = self.imported.get(path.resolve())
        label = Text()
        label.append(
            f"✓#{version_id} " if version_id else "   ", style="bold" if version_id else ""
        )
        label.append_text(file_label(self._short_name(path), self.version_names.get(path.resolve())))
        return Option(label, id=f"file-{index}")

    def _short_name(self, path: Path) -> str:
        home = Path(self.settings.home).resolve()
        resolved = path.resolve()
        for base in (home, resolved.parent.parent):
            try:
                return str(resolved.relative_to(base))
            except ValueError:
                continue
        return str(path)

    @on(OptionList.OptionSelected, "#ds-files")
    def _file_picked(self, event: OptionList.OptionSelected) -> None:
        index = int(event.option.id.removeprefix("file-"))
        self.open_path(self.file_paths[index])

    @on(Input.Submitted, "#ds-path")
    def _path_typed(self, event: Input.Submitted) -> None:
        raw = event.value.strip()
        if not raw:
            return
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = Path(self.settings.home) / path if not path.exists() else path.resolve()
        if not path.exists():
            self._clear_file()  # what was shown belongs to another file
            self._fail(f"No file at {path}. Type a path to a {ACCEPTED} file, or a folder "
                       "saved with datasets' save_to_disk.")
            return
        self.open_path(path)

    def _clear_file(self) -> None:
        self.current_path = None
        self.report = self.stats = self.examples = None
        self.query_one("#ds-problems", DataTable).clear()
        self.query_one("#ds-no-problems").display = False
        self.query_one("#ds-preview", FilePreview).note("Pick a problem to see its line here.")
        self.query_one("#ds-stats", Static).update("No statistics yet.")
        self.query_one("#ds-histogram", Histogram).set_bins([])
        self.query_one("#ds-examples", Static).update("No examples yet.")

    # ---- validation -----------------------------------------------------------------------

    @property
    def kind(self) -> str | None:
        value = self.query_one("#ds-kind", Select).value
        return None if value in ("auto", Select.NULL) else str(value)

    @property
    def max_length(self) -> int | None:
        raw = self.query_one("#ds-maxlen", Input).value.strip()
        return int(raw) if raw.isdigit() and int(raw) > 0 else None

    def open_path(self, path: Path) -> None:
        """Show `path`: validate it, then compute stats and render examples."""
        self.current_path = Path(path)
        self.report = self.stats = self.examples = None
        self.last_error = None
        self.query_one("#ds-problems", DataTable).clear()
        self.query_one("#ds-summary", Static).update(
            Text(f"Validating {self._short_name(self.current_path)} …")
        )
        self.query_one("#ds-stats", Static).update("Waiting for validation …")
        self.query_one("#ds-histogram", Histogram).set_bins([])
        self.query_one("#ds-examples", Static).update("Waiting for validation …")
        self.validate(self.current_path, self.kind)

    @work(thread=True, exclusive=True, group="ds-validate", exit_on_error=False)
    def validate(self, path: Path, kind: str | None) -> None:
        try:
            report = self.engine.validate(path, kind=kind)
        except Exception as exc:
            self.post_message(WorkFailed("validation", _readable(exc), path))
            return
        if not get_current_worker().is_cancelled:
            self.post_message(ValidationReady(path, report))

    def on_validation_ready(self, message: ValidationReady) -> None:
        if message.path != self.current_path:
            return
        self.report = report = message.report
        self._update_summary()
        table = self.query_one("#ds-problems", DataTable)
        table.clear()
        for index, problem in enumerate(report.problems):
            table.add_row(
                "" if problem.line is None else str(problem.line),
                Text(problem.field or ""),  # Text: a message may contain "[...]", not markup
                self._severity_text(problem.severity),
                Text(problem.message),
                key=str(index),
            )
        table.display = bool(report.problems)
        if report.errors:  # the errors are what to look at, whichever tab was open
            self.query_one("#ds-tabs", TabbedContent).active = "tab-validation"
        no_problems = self.query_one("#ds-no-problems", Static)
        no_problems.display = not report.problems
        no_problems.update(
            Text(
                f"No problems: all {report.rows} rows are valid {report.kind} data.", style="green"
            )
        )
        if _has_lines(message.path):
            first_line = next((p.line for p in report.problems if p.line), 1)
            self.preview(message.path, first_line)
        else:
            self.query_one("#ds-preview", FilePreview).note(
                f"{message.path.name} is not a text file; problems name rows instead of lines."
            )
        if report.rows:
            self.compute_stats(message.path, report, self.max_length)
            self.render_examples(message.path, report)
        else:
            self.query_one("#ds-stats", Static).update("No readable rows, so no statistics.")
            self.query_one("#ds-examples", Static).update("No readable rows to show.")

    def _severity_text(self, severity: str) -> Text:
        return Text(severity, style="bold red" if severity == "error" else "yellow")

    def _update_summary(self) -> None:
        report = self.report
        text = Text()
        text.append(f"{self._short_name(self.current_path)}\n", style="bold")
        text.append(
            f"format {report.format or '?'} · kind {report.kind or '?'} · {report.rows} rows · "
        )
        # the report keeps the first problems only; its counts cover all of them
        errors = getattr(report, "error_count", 0) or len(report.errors)
        warnings = getattr(report, "warning_count", 0) or len(report.warnings)
        text.append(f"{errors} error{'s' * (errors != 1)}", style="bold red" if errors else "green")
        text.append(
            f" · {warnings} warning{'s' * (warnings != 1)}", style="yellow" if warnings else ""
        )
        if getattr(report, "more_problems", 0):
            text.append(f" (first {len(report.problems)} listed)", style="dim")
        version_id = self.imported.get(self.current_path.resolve())
        if version_id:
            name = self.version_names.get(self.current_path.resolve(), "")
            text.append(f"\n✓ imported as dataset version #{version_id} {name}", style="green")
        elif errors and self._skipping():
            left = len(getattr(report, "skipped_lines", None) or []) or errors
            text.append(f"\nReady to import the valid rows: ^s ({left} invalid row(s) left out, "
                        "listed in the version's stats)", style="yellow")
        elif errors:
            text.append("\nFix the errors before importing (the table says where)"
                        + ("; or tick Skip invalid rows to leave those rows out."
                           if _skippable(report) else "."), style="red")
        else:
            text.append("\nReady to import: ^s", style="green")
        self.query_one("#ds-summary", Static).update(text)

    # ---- preview of the line a problem points at -------------------------------------------

    @on(DataTable.RowHighlighted, "#ds-problems")
    def _problem_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self.report is None or event.row_key.value is None:
            return
        problem = self.report.problems[int(event.row_key.value)]
        path = Path(problem.path or self.current_path)
        preview = self.query_one("#ds-preview", FilePreview)
        if not problem.line:
            preview.note("This problem is about the whole file, not one line.")
        elif getattr(problem, "unit", "line") != "line" or not _has_lines(path):
            preview.note(f"Row {problem.line} of {path.name}: a columnar file has no text line.")
        else:
            self.preview(path, problem.line)

    @work(thread=True, exclusive=True, group="ds-preview", exit_on_error=False)
    def preview(self, path: Path, line: int) -> None:
        try:
            first, lines = read_window(path, line)
        except OSError as exc:
            self.post_message(WorkFailed("preview", f"cannot read {path}: {exc.strerror}", path))
            return
        self.post_message(PreviewReady(Path(path), line, first, lines))

    def on_preview_ready(self, message: PreviewReady) -> None:
        self.query_one("#ds-preview", FilePreview).show(
            message.path, message.line, message.first_line, message.lines
        )

    # ---- stats and examples ---------------------------------------------------------------

    @work(thread=True, exclusive=True, group="ds-stats", exit_on_error=False)
    def compute_stats(self, path: Path, report: Any, max_length: int | None) -> None:
        try:
            stats = self.engine.stats(report, max_length=max_length)
        except Exception as exc:
            self.post_message(WorkFailed("token statistics", _readable(exc), path))
            return
        self.post_message(StatsReady(path, stats))

    def on_stats_ready(self, message: StatsReady) -> None:
        if message.path != self.current_path:
            return
        self.stats = message.stats
        self.query_one("#ds-stats", Static).update(stats_table(message.stats))
        self.query_one("#ds-histogram", Histogram).set_bins(
            histogram_bins(message.stats, self.max_length)
        )

    @work(thread=True, exclusive=True, group="ds-examples", exit_on_error=False)
    def render_examples(self, path: Path, report: Any) -> None:
        try:
            examples = list(self.engine.render_examples(report, n=3))
        except Exception as exc:
            self.post_message(WorkFailed("rendering examples", _readable(exc), path))
            return
        self.post_message(ExamplesReady(path, examples))

    def on_examples_ready(self, message: ExamplesReady) -> None:
        if message.path != self.current_path:
            return
        self.examples = message.examples
        box = self.query_one("#ds-examples", Static)
        if not message.examples:
            box.update("No valid rows to render.")
            return
        box.update(
            Group(
                *(
                    Panel(Text(example), title=f"example {i}", title_align="left", expand=True)
                    for i, example in enumerate(message.examples, 1)
                )
            )
        )

    @on(Input.Submitted, "#ds-maxlen")
    def _max_length_changed(self) -> None:
        if self.report is not None and self.report.rows:
            self.compute_stats(self.current_path, self.report, self.max_length)

    @on(Select.Changed, "#ds-kind")
    def _kind_changed(self) -> None:
        if self.current_path is not None:
            self.open_path(self.current_path)

    # ---- import ---------------------------------------------------------------------------

    @on(Button.Pressed, "#ds-import")
    def _import_pressed(self) -> None:
        self.action_import_version()

    @on(Checkbox.Changed, "#ds-skip-invalid")
    def _skip_changed(self) -> None:
        if self.report is not None and self.current_path is not None:
            self._update_summary()

    # ---- errors and keys ------------------------------------------------------------------

    def on_work_failed(self, message: WorkFailed) -> None:
        if message.path is not None and message.path != self.current_path:
            return
        self._fail(f"{message.what} failed: {message.error}")

    def _fail(self, text: str, replace_summary: bool = True) -> None:
        self.last_error = text
        self.notify(text, severity="error", timeout=8)
        if replace_summary:
            self.query_one("#ds-summary", Static).update(Text(text, style="bold red"))

    def action_revalidate(self) -> None:
        if self.current_path is None:
            self.notify("Pick a dataset file first.", severity="warning")
            return
        self.open_path(self.current_path)

    def action_focus_path(self) -> None:
        self.query_one("#ds-path", Input).focus()

    def action_focus_files(self) -> None:
        self.query_one("#ds-files", OptionList).focus()
