"""The help screen: every key of the app and of every area, read from the BINDINGS themselves.

Nothing here is typed by hand, so adding a binding anywhere adds a row here.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Static


@dataclass(frozen=True)
class KeyRow:
    section: str
    keys: str
    description: str
    binding_id: str


def _own_bindings(cls: type) -> list[Binding]:
    """Bindings declared along `cls`'s MRO (what the class really answers to), in order."""
    found: list[Binding] = []
    for klass in reversed(cls.__mro__):
        declared = klass.__dict__.get("BINDINGS")
        if declared:
            found.extend(Binding.make_bindings(declared))
    return found


def _rows(section: str, bindings: list[Binding], app: App, seen: set) -> list[KeyRow]:
    """One row per action (keys joined), skipping undocumented and system bindings."""
    by_action: dict[str, list[Binding]] = {}
    for binding in bindings:
        if not binding.description or binding.system:
            continue
        # "quit" (Textual's own binding) and "app.quit" (ours) are the same action
        by_action.setdefault(binding.action.removeprefix("app."), []).append(binding)
    rows = []
    for action, group in by_action.items():
        if (section, action) in seen:
            continue
        seen.add((section, action))
        ours = [b for b in group if b.id] or group  # ours carry ids; Textual's defaults don't
        keys = ", ".join(dict.fromkeys(app.get_key_display(b) for b in ours))
        rows.append(KeyRow(section, keys, ours[0].description, ours[0].id or ours[0].action))
    return rows


def key_rows(app: App) -> list[KeyRow]:
    """All documented keys: global ones, then each area's, then the palette."""
    seen: set = set()
    rows = _rows("Everywhere", _own_bindings(type(app)), app, seen)
    rows.extend(_rows("Everywhere", _own_bindings(Screen), app, seen))
    for mode, screen_cls in app.MODES.items():
        if isinstance(screen_cls, type):
            title = getattr(screen_cls, "AREA_TITLE", mode.title())
            own = [b for b in _own_bindings(screen_cls) if b not in _own_bindings(Screen)]
            rows.extend(_rows(title, own, app, seen))
    return rows


class HelpScreen(ModalScreen[None]):
    """Modal table of the keys that work here: everywhere, then the area on display; `a` shows
    every area's. Escape, F1, ? or q closes it."""

    BINDINGS = [
        Binding("escape,f1,question_mark,q", "dismiss", "Close help", id="help.close"),
        Binding("a", "toggle_all", "Keys of every area / of this one", id="help.all"),
    ]

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical {
        width: 96; max-height: 90%; height: auto;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    HelpScreen #help-title { text-style: bold; color: $accent; }
    HelpScreen #help-hint { color: $text-muted; padding-bottom: 1; }
    HelpScreen DataTable { height: auto; max-height: 28; }
    """

    def __init__(self, area_title: str | None = None) -> None:
        super().__init__()
        self.area_title = area_title  # None: every area's keys from the start
        self.show_all = area_title is None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(id="help-title")
            yield Static(
                "Function keys work even while typing in a field; letters work when no field "
                "has focus.  Esc, F1, ? or q closes this.",
                id="help-hint",
            )
            yield DataTable(id="help-keys", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one("#help-keys", DataTable).add_columns("Where", "Keys", "Does", "Id")
        self.rows = key_rows(self.app)
        self._fill()

    def shown_rows(self) -> list[KeyRow]:
        if self.show_all:
            return list(self.rows)
        return [r for r in self.rows if r.section in ("Everywhere", self.area_title)]

    def _fill(self) -> None:
        table = self.query_one("#help-keys", DataTable)
        table.clear()
        for row in self.shown_rows():
            table.add_row(row.section, row.keys, row.description, row.binding_id)
        if self.show_all:
            title = "Keys of every area  ·  a: only this area's" if self.area_title else "Keys"
        else:
            title = f"Keys on {self.area_title}  ·  a: every area's"
        self.query_one("#help-title", Static).update(title)
        table.focus()

    def action_toggle_all(self) -> None:
        if self.area_title is None:
            return
        self.show_all = not self.show_all
        self._fill()
