"""Merge: pick the inputs, a method and weights; the merge runs in a thread and its result (a new
model row, ``model:<id>``) is listed with its lineage and can be opened in Compare beside its
inputs. The same engine code as ``tuneloop merge`` (engine/export/merge_models.py).

Pushed with ``open_merge(app)`` (e.g. from the command palette). Store reads and the merge itself
run in thread workers; handlers only touch widgets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import (
    Button,
    Checkbox,
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    Select,
    Static,
)

from tuiapp.engine.export.merge_models import FULL_METHODS, LORA_METHODS

METHODS = tuple(dict.fromkeys((*LORA_METHODS, *FULL_METHODS)))
HELP = ("Inputs: REFs separated by commas (run:3,run:5, model:4, a folder). Adapters of one base "
        "merge as an adapter (PEFT); whole models, or --full, merge tensor by tensor against the "
        "base. A negative weight subtracts a task vector.")


class MergesLoaded(Message):
    def __init__(self, rows: list[Any]) -> None:
        super().__init__()
        self.rows = rows


class MergeDone(Message):
    def __init__(self, result: dict | None, error: str | None = None) -> None:
        super().__init__()
        self.result = result
        self.error = error


def _inputs_text(meta: dict) -> str:
    return ", ".join(f"{i['ref']}×{i['weight']:g}" for i in meta.get("inputs", []))


class MergeScreen(Screen):
    AREA_TITLE = "Merge"
    DEFAULT_CSS = """
    MergeScreen #merge-form { height: auto; padding: 0 1; }
    MergeScreen #merge-form Horizontal { height: auto; }
    MergeScreen #merge-form Label { width: 10; padding: 1 0 0 0; }
    MergeScreen #merge-form Input { width: 1fr; }
    MergeScreen #merge-form Select { width: 24; }
    MergeScreen #merge-form Checkbox, MergeScreen #merge-form Button { width: auto; }
    MergeScreen #merge-status { height: auto; padding: 0 1; }
    MergeScreen #merge-rows { height: 1fr; }
    """
    BINDINGS = [
        Binding("escape", "close", "Back", id="merge.close"),
        Binding("ctrl+r", "refresh", "Refresh", id="merge.refresh"),
        Binding("ctrl+g", "merge", "Merge", id="merge.run"),
        Binding("c", "compare", "Open in Compare", id="merge.compare"),
    ]

    def __init__(self, refs: str = "") -> None:
        super().__init__()
        self.initial_refs = refs
        self.rows: list[Any] = []
        self.last: dict | None = None
        self.busy = False

    @property
    def store(self) -> Any:
        return self.app.store

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Vertical(id="merge-form"):
            yield Static(HELP)
            with Horizontal():
                yield Label("inputs")
                yield Input(self.initial_refs, placeholder="run:1,run:2", id="merge-refs")
            with Horizontal():
                yield Label("method")
                yield Select([(m, m) for m in METHODS], value="ties", allow_blank=False, id="merge-method")
                yield Label("weights")
                yield Input("", placeholder="1,1", id="merge-weights")
                yield Label("density")
                yield Input("", placeholder="0.5", id="merge-density")
            with Horizontal():
                yield Label("name")
                yield Input("", placeholder="(automatic)", id="merge-name")
                yield Checkbox("whole models (--full)", id="merge-full")
                yield Button("Merge", id="merge-go", variant="primary")
        yield Static("", id="merge-status")
        yield DataTable(id="merge-rows", cursor_type="row", zebra_stripes=True)
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#merge-rows", DataTable).add_columns("model", "name", "method", "inputs", "kind")
        self.action_refresh()

    # ---- workers ------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="merge-list", exit_on_error=False)
    def load_rows(self) -> None:
        rows = [m for m in self.store.list_models() if isinstance(m.meta, dict) and m.meta.get("merge")]
        self.post_message(MergesLoaded(rows))

    @work(thread=True, exclusive=True, group="merge-run", exit_on_error=False)
    def run_merge(self, refs: str, method: str, weights: str, density: float | None, name: str | None,
                  full: bool) -> None:
        from tuiapp.engine.export.merge_models import MergeError, parse_refs, plan_merge, run_merge

        home = Path(self.app.settings.home)
        try:
            plan = plan_merge(parse_refs(refs), method, weights or None, density, self.store, full=full,
                              home=home)
            result = run_merge(plan, self.store, home / "models", name=name)
        except MergeError as exc:
            self.post_message(MergeDone(None, str(exc)))
            return
        except Exception as exc:  # a load that failed: said on screen, not a crash
            self.post_message(MergeDone(None, f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(MergeDone(result))

    # ---- handlers -----------------------------------------------------------------------------

    def on_merges_loaded(self, message: MergesLoaded) -> None:
        self.rows = message.rows
        table = self.query_one("#merge-rows", DataTable)
        table.clear()
        for m in reversed(self.rows):
            meta = m.meta["merge"]
            table.add_row(f"model:{m.id}", m.name, meta.get("method", "?"), _inputs_text(meta), m.kind,
                          key=str(m.id))

    def on_merge_done(self, message: MergeDone) -> None:
        self.busy = False
        status = self.query_one("#merge-status", Static)
        if message.error:
            status.update(f"[b red]refused:[/] {message.error}")
            return
        self.last = message.result
        r = message.result
        status.update(f"[b green]merged[/] {_inputs_text(r)} with {r['method']} → {r['ref']} "
                      f"({r['kind']}, {r['path']}); press c to compare it with its inputs")
        self.load_rows()

    @on(Button.Pressed, "#merge-go")
    @on(Input.Submitted)
    def _go(self) -> None:
        self.action_merge()

    # ---- actions ------------------------------------------------------------------------------

    def action_merge(self) -> None:
        if self.busy:
            self.notify("a merge is running", severity="warning")
            return
        refs = self.query_one("#merge-refs", Input).value.strip()
        density_text = self.query_one("#merge-density", Input).value.strip()
        status = self.query_one("#merge-status", Static)
        try:
            density = float(density_text) if density_text else None
        except ValueError:
            status.update(f"[b red]refused:[/] density {density_text!r} is not a number")
            return
        if not refs:
            status.update("[b red]refused:[/] give the inputs, e.g. run:1,run:2")
            return
        self.busy = True
        status.update("merging …")
        self.run_merge(refs, str(self.query_one("#merge-method", Select).value),
                       self.query_one("#merge-weights", Input).value.strip(), density,
                       self.query_one("#merge-name", Input).value.strip() or None,
                       self.query_one("#merge-full", Checkbox).value)

    def _picked_refs(self) -> list[str]:
        if self.last is not None:
            return [*(i["ref"] for i in self.last["inputs"]), self.last["ref"]]
        table = self.query_one("#merge-rows", DataTable)
        if not self.rows or table.cursor_row is None:
            return []
        row = next(reversed(self.rows)) if table.cursor_row >= len(self.rows) else \
            list(reversed(self.rows))[table.cursor_row]
        return [*(i["ref"] for i in row.meta["merge"].get("inputs", [])), f"model:{row.id}"]

    def action_compare(self) -> None:
        refs = self._picked_refs()
        if not refs:
            self.notify("merge something first", severity="warning")
            return
        self.app.action_area("compare")
        try:
            from tuiapp.widgets.model_picker import ModelPicker

            self.app.screen.query_one(ModelPicker).select(refs[-4:])
        except Exception:  # Compare lists the new row on its next load; pick it there
            self.app.notify(f"pick {refs[-1]} in Compare", timeout=8)

    def action_refresh(self) -> None:
        self.load_rows()

    def action_close(self) -> None:
        self.app.pop_screen()


def open_merge(app: Any, refs: str = "") -> None:
    app.push_screen(MergeScreen(refs))
