"""Base for the areas whose engines come later (Train, Compare, Label, Export).

Each says what the area will hold, which command does (or will do) the work, and shows the real
store state it will build on — tables read from the store, never sample rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from tuiapp.messages import OverviewLoaded, WorkFailed
from tuiapp.screens.areas import AreaScreen


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    columns: tuple[str, ...]
    empty: str  # what an empty table means, and how it gets rows


class OverviewScreen(AreaScreen):
    PURPOSE = ""
    # (command, what it does)
    COMMANDS: tuple[tuple[str, str], ...] = ()
    SECTIONS: tuple[Section, ...] = ()
    BINDINGS = [Binding("ctrl+r", "refresh", "Refresh", id="overview.refresh")]

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple]] = {}
        self.facts: dict[str, str] = {}

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(classes="overview"):
            yield Static(self.PURPOSE, classes="purpose")
            yield Static(self._commands_text(), classes="commands")
            yield Static("", id="facts", classes="facts")
            for section in self.SECTIONS:
                yield Static(section.title, classes="section-title")
                yield DataTable(
                    id=section.id, cursor_type="row", zebra_stripes=True, classes="overview-table"
                )
                yield Static(section.empty, id=f"{section.id}-empty", classes="empty")

    def _commands_text(self) -> Text:
        text = Text()
        for i, (command, what) in enumerate(self.COMMANDS):
            text.append(f"  $ {command}", style="bold")
            text.append(f"\n    {what}")
            if i < len(self.COMMANDS) - 1:
                text.append("\n")
        return text

    def on_mount(self) -> None:
        for section in self.SECTIONS:
            table = self.query_one(f"#{section.id}", DataTable)
            table.add_columns(*section.columns)
        self.action_refresh()
        self.start_auto_refresh(self.action_refresh)

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            self.action_refresh()

    def action_refresh(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="overview", exit_on_error=False)
    def load(self) -> None:
        try:
            tables, facts = self.collect(self.store)
        except Exception as exc:
            self.post_message(WorkFailed("reading the store", str(exc) or type(exc).__name__))
            return
        self.post_message(OverviewLoaded(tables, facts))

    def collect(self, store: Any) -> tuple[dict[str, list[tuple]], dict[str, str]]:
        """Rows per section id, and one-line facts; runs in a worker (store via proxy)."""
        raise NotImplementedError

    def on_overview_loaded(self, message: OverviewLoaded) -> None:
        self.tables, self.facts = message.tables, message.facts
        facts = Text()
        for i, (label, value) in enumerate(message.facts.items()):
            facts.append(f"{label}: ", style="bold")
            facts.append(value)
            if i < len(message.facts) - 1:
                facts.append("   ")
        self.query_one("#facts", Static).update(facts)
        for section in self.SECTIONS:
            table = self.query_one(f"#{section.id}", DataTable)
            rows = message.tables.get(section.id, [])
            table.clear()
            for row in rows:
                # Text, not str: store values (paths, prompts) are never markup
                table.add_row(*(Text("" if cell is None else str(cell)) for cell in row))
            table.display = bool(rows)
            self.query_one(f"#{section.id}-empty").display = not rows

    def on_work_failed(self, message: WorkFailed) -> None:
        self.notify(f"{message.what} failed: {message.error}", severity="error", timeout=8)
