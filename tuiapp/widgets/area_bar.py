"""The strip under the header naming every area and its key, the current one highlighted."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget


class AreaBar(Widget):
    DEFAULT_CSS = """
    AreaBar {
        height: 1;
        background: $panel;
        color: $foreground;
    }
    """

    def __init__(self, areas: list[tuple[str, str, str, str]], current: str) -> None:
        super().__init__()
        self.areas = areas
        self.current = current

    def render(self) -> Text:
        text = Text(" ")
        for mode, title, fkey, _letter in self.areas:
            label = f" {fkey.upper()} {title} "
            if mode == self.current:
                text.append(label, style="bold reverse")
            else:
                text.append(label)
            text.append(" ")
        return text
