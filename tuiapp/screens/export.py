"""Export: pick a run or model, choose GGUF types, see predicted sizes, run the export in a child
process with a progress bar and cancel, and read each file's size, sha256 and parity figures.

Nothing heavy happens in the TUI process. Predicted sizes come from a thread worker reading
config.json and safetensors headers (numpy only). The export itself is
``python -m tuiapp.engine.export.child`` (merge, GGUF, quantize, parity, store rows); a thread
worker reads its JSON lines and posts messages. A crash or OOM kills the child, not the TUI, and
what it left unchecked is removed (see export_child).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

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
    ProgressBar,
    Select,
    SelectionList,
    Static,
)
from textual.widgets.selection_list import Selection

from tuiapp.messages import WorkFailed
from tuiapp.screens.areas import AreaScreen
from tuiapp.screens.export_panels import (
    DEFAULT_TYPES,
    EXPORT_COLUMNS,
    OUTPUT_TYPES,
    RESULT_COLUMNS,
    ExportEnded,
    ExportPlanReady,
    ExportSourcesLoaded,
    ExportStarted,
    ExportStep,
    cli_command,
    export_rows,
    file_detail,
    outcome_text,
    result_cells,
    sizes_table,
)
from tuiapp.widgets.toggles import TextCheckbox, TextSelectionList


def _readable(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


class ExportScreen(AreaScreen):
    AREA = "export"
    AREA_TITLE = "Export"
    BINDINGS = [
        Binding("ctrl+s", "start", "Start export", id="export.start"),
        Binding("ctrl+b", "cancel_export", "Cancel export", id="export.cancel"),
        Binding("ctrl+y", "copy_sha", "Copy sha256", id="export.copy_sha"),
        Binding("ctrl+r", "refresh", "Refresh", id="export.refresh"),
    ]
    DEFAULT_CSS = """
    #export-body { height: 1fr; }
    #export-left { width: 46; padding: 0 1; border-right: vkey $panel; }
    #export-left .section-title { margin-top: 0; }
    .ex-row { height: 1; }
    .ex-label { width: 11; color: $text-muted; }
    .ex-row Select, .ex-row Input { width: 1fr; }
    #export-types { height: 1fr; min-height: 6; }
    #export-buttons { height: 1; margin-top: 1; }
    #export-buttons Button { margin-right: 2; }
    #export-right { width: 1fr; padding: 0 1; }
    #export-right .section-title { margin-top: 0; }
    #export-sizes, #export-step, #export-detail, #export-outcome { height: auto; }
    #export-command { background: $surface; padding: 0 1; height: auto; margin-bottom: 1; }
    #export-error { color: $error; height: auto; }
    #export-results { height: auto; max-height: 8; }
    #export-rows { height: auto; max-height: 12; }
    #export-rows-empty { color: $text-muted; height: auto; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[dict[str, Any]] = []
        self.facts: dict[str, str] = {}
        self.exports: list[tuple] = []
        self.predicted: dict[str, int] = {}
        self.plan_key: tuple | None = None  # the (ref, types) the sizes on screen belong to
        self.plan_error: str | None = None
        self.running = False
        self.process: Any = None  # the ExportProcess while one runs
        self.started_at = 0.0
        self.step = ""  # the step the child is on, and how many of how many are done
        self.done = self.total = 0
        self.out_dir: str | None = None
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.outcome: str | None = None  # of the last export: finished | cancelled | failed

    # ---- layout -------------------------------------------------------------------------

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="export-body"):
            with Vertical(id="export-left"):
                yield Static("Source", classes="section-title")
                yield Select([], prompt="no exportable run or model", compact=True,
                             id="export-source")
                with Horizontal(classes="ex-row"):
                    yield Label("or folder", classes="ex-label")
                    yield Input(placeholder="model / adapter folder (overrides)", compact=True,
                                id="export-folder")
                yield Static("Output types  (space toggles)", classes="section-title")
                yield TextSelectionList[str](
                    *(Selection(f"{name:<7} {what}", name, name in DEFAULT_TYPES, id=name)
                      for name, what in OUTPUT_TYPES),
                    compact=True, id="export-types")
                yield TextCheckbox("Ollama Modelfile", compact=True, id="export-ollama")
                yield TextCheckbox("model card (README.md)", compact=True, id="export-card")
                with Horizontal(classes="ex-row"):
                    yield Label("output to", classes="ex-label")
                    yield Input(placeholder="HOME/exports/<source>-<time>/", compact=True,
                                id="export-out")
                with Horizontal(id="export-buttons"):
                    yield Button("Export ^s", id="export-start", variant="primary", compact=True)
                    yield Button("Cancel ^b", id="export-cancel", compact=True, disabled=True)
            with VerticalScroll(id="export-right"):
                yield Static("Predicted sizes", classes="section-title")
                yield Static("", id="export-sizes")
                yield Static("", id="export-command", classes="commands")
                yield Static("Progress", classes="section-title")
                yield Static(Text("Nothing running: ^s exports the selection.", "dim"),
                             id="export-step")
                yield ProgressBar(show_eta=False, id="export-progress")
                yield Static("", id="export-error")
                yield Static("This export  (^y copies the selected file's sha256)",
                             classes="section-title")
                yield DataTable(id="export-results", cursor_type="row", zebra_stripes=True)
                yield Static("", id="export-detail")
                yield Static("", id="export-outcome")
                yield Static("All exports", classes="section-title")
                yield Static("", id="facts")
                yield DataTable(id="export-rows", cursor_type="row", zebra_stripes=True)
                yield Static("No exports yet: exports appear here once a run has been exported.",
                             id="export-rows-empty")

    def on_mount(self) -> None:
        self.query_one("#export-results", DataTable).add_columns(*RESULT_COLUMNS)
        self.query_one("#export-rows", DataTable).add_columns(*EXPORT_COLUMNS)
        self.query_one("#export-out", Input).placeholder = (
            f"{Path(self.settings.home) / 'exports'}/<source>-<time>/")
        for wid in ("#export-results", "#export-progress", "#export-error"):
            self.query_one(wid).display = False
        self.set_interval(0.5, self._tick)
        self._show_sizes()
        self.action_refresh()
        self.start_auto_refresh(self.action_refresh)

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            self.action_refresh()

    def on_unmount(self) -> None:
        # The app is closing: an export must not go on writing unseen (it cleans up on TERM).
        if self.process is not None:
            self.process.cancel()

    # ---- what is chosen -----------------------------------------------------------------

    @property
    def ref(self) -> str:
        typed = self.query_one("#export-folder", Input).value.strip()
        if typed:
            return typed
        value = self.query_one("#export-source", Select).value
        return "" if value is Select.NULL else str(value)

    @property
    def quants(self) -> list[str]:
        chosen = set(self.query_one("#export-types", SelectionList).selected)
        return [name for name, _ in OUTPUT_TYPES if name in chosen]

    @property
    def options(self) -> dict[str, Any]:
        return {"ollama": self.query_one("#export-ollama", Checkbox).value,
                "card": self.query_one("#export-card", Checkbox).value,
                "out": self.query_one("#export-out", Input).value.strip()}

    @on(Select.Changed, "#export-source")
    @on(Input.Changed, "#export-folder")
    @on(SelectionList.SelectedChanged, "#export-types")
    def _choice_changed(self, event) -> None:
        event.stop()
        self._replan()

    @on(Checkbox.Changed)
    @on(Input.Changed, "#export-out")
    def _option_changed(self, event) -> None:
        event.stop()
        self._show_command()

    def _replan(self) -> None:
        key = (self.ref, tuple(self.quants))
        self._show_command()
        if key == self.plan_key:
            return
        self.plan_key, self.predicted, self.plan_error = key, {}, None
        if key[0] and key[1]:
            self.plan(key)
        self._show_sizes(pending=bool(key[0] and key[1]))

    @work(thread=True, exclusive=True, group="export-plan", exit_on_error=False)
    def plan(self, key: tuple) -> None:
        from tuiapp.engine.export.child import plan_sizes  # numpy + safetensors headers only

        try:
            plan = plan_sizes(key[0], self.store, list(key[1]))
        except Exception as exc:  # ExportError in words; anything else said plainly too
            self.post_message(ExportPlanReady(key, None, _readable(exc)))
            return
        self.post_message(ExportPlanReady(key, plan))

    def on_export_plan_ready(self, message: ExportPlanReady) -> None:
        if message.key != self.plan_key:
            return  # the choice moved on while this was computed
        self.plan_error = message.error
        self.predicted = dict(message.plan["predicted"]) if message.plan else {}
        self._show_sizes()

    def _show_sizes(self, pending: bool = False) -> None:
        box = self.query_one("#export-sizes", Static)
        if not self.ref:
            box.update(Text("Pick a source to see the sizes.", "dim"))
        elif not self.quants:
            box.update(Text("No output type chosen: tick at least one (space).", "yellow"))
        elif self.plan_error:
            box.update(Text(f"✗ {self.plan_error}", "red"))
        elif pending or not self.predicted:
            box.update(Text("Measuring…", "dim"))
        else:
            box.update(sizes_table(self.predicted, self.quants))

    def _show_command(self) -> None:
        opts = self.options
        line = cli_command(self.ref, self.quants, opts["ollama"], opts["card"], opts["out"])
        self.query_one("#export-command", Static).update(Text(f"$ {line}"))

    # ---- sources and past exports ---------------------------------------------------------

    def action_refresh(self) -> None:
        self.load_sources()

    @work(thread=True, exclusive=True, group="export-sources", exit_on_error=False)
    def load_sources(self) -> None:
        from tuiapp.engine.export.child import export_sources  # no torch: paths and rows only

        try:
            sources, exports = export_sources(self.store), export_rows(self.store)
        except Exception as exc:
            self.post_message(WorkFailed("reading the store", _readable(exc)))
            return
        self.post_message(ExportSourcesLoaded(sources, exports))

    def on_export_sources_loaded(self, message: ExportSourcesLoaded) -> None:
        self.sources, self.exports = message.sources, message.exports
        select = self.query_one("#export-source", Select)
        options = [(s["label"], s["ref"]) for s in self.sources]
        if options != getattr(self, "_source_options", None):
            self._source_options = options
            keep = select.value
            with self.prevent(Select.Changed):
                select.set_options(options)
                refs = [ref for _, ref in options]
                if keep in refs:
                    select.value = keep
                elif refs:
                    select.value = refs[0]  # newest first
        self._show_exports()
        self._replan()

    def _show_exports(self) -> None:
        table = self.query_one("#export-rows", DataTable)
        table.clear()
        for row in self.exports:
            table.add_row(*(Text("" if cell is None else str(cell)) for cell in row))
        table.display = bool(self.exports)
        self.query_one("#export-rows-empty").display = not self.exports
        failed = sum(1 for row in self.exports if row[7] == "failed")
        self.facts = {"exports": str(len(self.exports)), "failed parity": str(failed),
                      "sources": str(len(self.sources))}
        self.query_one("#facts", Static).update(
            Text("   ".join(f"{k}: {v}" for k, v in self.facts.items()), "dim"))

    # ---- running an export ----------------------------------------------------------------

    def _refusal(self) -> str | None:
        """Why Start cannot go now, in words; None when it can."""
        if self.running:
            return "An export is already running; ^b cancels it."
        if not self.ref:
            return "Pick a source first: a completed run or a model folder."
        if not self.quants:
            return "Choose at least one output type (space ticks one in the list)."
        if self.plan_error and self.plan_key == (self.ref, tuple(self.quants)):
            return self.plan_error
        if str(getattr(self.store, "path", ":memory:")) == ":memory:":
            return ("This store lives in memory; an export runs in its own process and needs a "
                    "store file (open tuneloop with a home).")
        return None

    def action_start(self) -> None:
        refusal = self._refusal()
        if refusal:
            self._show_error(refusal)
            return
        opts = self.options
        self.running, self.result, self.error, self.out_dir = True, None, None, None
        self.outcome = None
        self.started_at, self.step, self.done, self.total = time.monotonic(), "starting", 0, 0
        self._show_error(None)
        self.query_one("#export-results", DataTable).clear()
        self.query_one("#export-results").display = False
        for wid in ("#export-detail", "#export-outcome"):
            self.query_one(wid, Static).update("")
        bar = self.query_one("#export-progress", ProgressBar)
        bar.update(total=None, progress=0)
        bar.display = True
        self._update_buttons()
        self._tick()
        self.run_export(self.ref, self.quants, opts["ollama"], opts["card"], opts["out"])

    @work(thread=True, group="export-run", exit_on_error=False)
    def run_export(self, ref: str, quants: list[str], ollama: bool, card: bool, out: str) -> None:
        from tuiapp.engine.export.child import ExportProcess, died_message

        try:
            process = ExportProcess(self.settings.home, self.store.path, ref, quants,
                                    ollama=ollama, card=card, out=out or None)
        except OSError as exc:
            self.post_message(ExportEnded(error=f"could not start the export process: {exc}"))
            return
        self.process = process
        result = error = None
        cancelled, removed = False, []
        try:
            for event in process.events():
                kind = event.get("event")
                if kind == "start":
                    self.post_message(ExportStarted(event["out_dir"]))
                elif kind == "progress":
                    self.post_message(ExportStep(event["step"], event["done"], event["total"]))
                elif kind == "result":
                    result = event["result"]
                elif kind == "error":
                    step = event.get("step") or "start"
                    error = event["message"] if step == "start" else f"{step}: {event['message']}"
                    removed = event.get("removed") or []
                elif kind == "cancelled":
                    cancelled, removed = True, event.get("removed") or []
            if result is None and error is None and not cancelled:
                # killed before it could say anything (SIGKILL, OOM, a crash in C)
                cancelled = process.cancelled
                if not cancelled:
                    error = died_message(process.returncode, process.stderr_tail())
                removed = process.clean_after_kill(self.store)
        except Exception as exc:
            error = f"reading the export process failed: {_readable(exc)}"
            process.cancel()
        finally:
            process.close()
            self.process = None
        self.post_message(ExportEnded(result, error, cancelled, removed))

    def on_export_started(self, message: ExportStarted) -> None:
        self.out_dir = message.out_dir

    def on_export_step(self, message: ExportStep) -> None:
        self.step, self.done, self.total = message.step, message.done, message.total
        self.query_one("#export-progress", ProgressBar).update(total=message.total,
                                                               progress=message.done)
        self._tick()

    def _tick(self) -> None:
        if not self.running:
            return
        elapsed = int(time.monotonic() - self.started_at)
        text = Text(self.step, "bold")
        if self.total:
            text.append(f" · step {min(self.done + 1, self.total)} of {self.total}")
        text.append(f" · {elapsed // 60}:{elapsed % 60:02d} elapsed")
        if self.process is not None and self.process.cancelled:
            text.append(" · cancelling…", "yellow")
        else:
            text.append(" · ^b cancels", "dim")
        if self.out_dir:
            text.append(f"\n→ {self.out_dir}", "dim")
        self.query_one("#export-step", Static).update(text)

    def action_cancel_export(self) -> None:
        if not self.running or self.process is None:
            self.notify("No export is running.", severity="warning")
            return
        self.process.cancel()
        self._tick()

    def on_export_ended(self, message: ExportEnded) -> None:
        self.running = False
        self._update_buttons()
        elapsed = time.monotonic() - self.started_at
        self.query_one("#export-progress").display = False
        removed = (f" Removed what it left unchecked: {', '.join(Path(p).name for p in message.removed)}."
                   if message.removed else "")
        step = self.query_one("#export-step", Static)
        if message.result is not None:
            self.result, self.outcome = message.result, "finished"
            ok = message.result["ok"]
            step.update(Text(f"{'Finished' if ok else 'Finished with parity failures'} in "
                             f"{elapsed:.1f} s.", "green" if ok else "red"))
            self._show_result(message.result)
            self.notify("export finished" if ok else "export finished: parity failed",
                        severity="information" if ok else "error")
        elif message.cancelled:
            self.outcome = "cancelled"
            step.update(Text(f"Cancelled after {elapsed:.1f} s.{removed}", "yellow"))
        else:
            self.error, self.outcome = message.error, "failed"
            step.update(Text(f"Failed after {elapsed:.1f} s.", "red"))
            self._show_error(f"The export failed: {message.error}{removed}")
        self.action_refresh()  # new rows in All exports; GGUF models too

    def _show_result(self, result: dict[str, Any]) -> None:
        table = self.query_one("#export-results", DataTable)
        table.clear()
        for f in result["files"]:
            table.add_row(*result_cells(f), key=f["quant"])
        table.display = bool(result["files"])
        self.query_one("#export-outcome", Static).update(outcome_text(result))
        if result["files"]:
            self._show_detail(0)

    @on(DataTable.RowHighlighted, "#export-results")
    def _result_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._show_detail(event.cursor_row)

    def _show_detail(self, index: int) -> None:
        files = (self.result or {}).get("files") or []
        if 0 <= index < len(files):
            self.query_one("#export-detail", Static).update(file_detail(files[index]))

    def selected_file(self) -> dict[str, Any] | None:
        files = (self.result or {}).get("files") or []
        row = self.query_one("#export-results", DataTable).cursor_row
        return files[row] if 0 <= row < len(files) else None

    def action_copy_sha(self) -> None:
        chosen = self.selected_file()
        if chosen is None:
            self.notify("No exported file selected: run an export first.", severity="warning")
            return
        self.app.copy_to_clipboard(chosen["sha256"])
        self.notify(f"sha256 of {Path(chosen['path']).name} copied: {chosen['sha256']}")

    # ---- buttons and errors ---------------------------------------------------------------

    def _update_buttons(self) -> None:
        self.query_one("#export-start", Button).disabled = self.running
        self.query_one("#export-cancel", Button).disabled = not self.running

    def _show_error(self, error: str | None) -> None:
        box = self.query_one("#export-error", Static)
        box.update(Text(f"✗ {error}") if error else "")
        box.display = bool(error)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {"export-start": self.action_start, "export-cancel": self.action_cancel_export}
        if event.button.id in actions:
            event.stop()
            actions[event.button.id]()

    def on_work_failed(self, message: WorkFailed) -> None:
        self.notify(f"{message.what} failed: {message.error}", severity="error", timeout=8)
