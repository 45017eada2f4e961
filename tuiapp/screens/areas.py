"""The six areas of the loop and the base class their screens share."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header

from tuiapp.widgets.area_bar import AreaBar

# (mode, title, function key, letter). Function keys work even while an Input has focus;
# the letters are shortcuts for when it does not.
AREA_KEYS: list[tuple[str, str, str, str]] = [
    ("datasets", "Datasets", "f2", "d"),
    ("train", "Train", "f3", "t"),
    ("runs", "Runs", "f4", "r"),
    ("compare", "Compare", "f5", "c"),
    ("label", "Label", "f6", "l"),
    ("export", "Export", "f7", "x"),
]
AREAS: dict[str, str] = {mode: title for mode, title, _, _ in AREA_KEYS}


class AreaScreen(Screen):
    """Header, the area bar, the area's body (`compose_body`) and the footer."""

    AREA = ""
    # One line under the area bar saying what this area is for.
    PURPOSE = ""

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield AreaBar(AREA_KEYS, self.AREA)
        yield from self.compose_body()
        # the palette key is an ordinary binding (app.py): Textual's docked one is drawn over the
        # keys when they fill the line ("^pp alette")
        yield Footer(show_command_palette=False)

    def compose_body(self) -> ComposeResult:
        raise NotImplementedError

    @property
    def store(self) -> Any:
        return self.app.store

    @property
    def engine(self) -> Any:
        return self.app.engine

    @property
    def settings(self) -> Any:
        return self.app.settings

    def start_auto_refresh(self, callback) -> None:
        interval = getattr(self.settings, "refresh_interval", 0) or 0
        if interval > 0:
            self.set_interval(interval, callback)
