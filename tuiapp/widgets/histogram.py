"""A horizontal bar chart drawn with block characters.

Chosen over a plotting library because it renders identically in any terminal, in SVG
screenshots and in snapshot tests, and costs no import time.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from tuiapp.widgets.colors import theme_color

_EIGHTHS = " ▏▎▍▌▋▊▉█"


def bar(value: float, maximum: float, width: int) -> str:
    """`value` as a bar of `width` cells at most, with eighth-cell resolution."""
    if maximum <= 0 or value <= 0:
        return ""
    eighths = round(value / maximum * width * 8)
    eighths = max(eighths, 1)  # a non-empty bin is never invisible
    full, rest = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[rest] if rest else "")


class Histogram(Widget):
    """Rows of `label │ bar count`; `marker` labels a bin to highlight (e.g. over max length)."""

    DEFAULT_CSS = """
    Histogram { height: auto; min-height: 3; }
    """

    def __init__(self, title: str = "", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title = title
        self.bins: list[tuple[str, int, bool]] = []

    def set_bins(self, bins: list[tuple[str, int, bool]]) -> None:
        """`bins`: (label, count, highlighted) in display order."""
        self.bins = list(bins)
        self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        title_lines = -(-len(self.title) // max(width, 1)) if self.title else 0
        return max(len(self.bins), 1) + title_lines

    def render(self) -> Text:
        text = Text()
        if self.title:
            text.append(self.title + "\n", style="bold")
        if not self.bins:
            text.append("no data", style="dim")
            return text
        label_w = max(len(label) for label, _, _ in self.bins)
        count_w = max(len(str(count)) for _, count, _ in self.bins)
        width = max(self.size.width - label_w - count_w - 4, 8)
        top = max(count for _, count, _ in self.bins)
        for i, (label, count, hot) in enumerate(self.bins):
            text.append(label.rjust(label_w) + " │", style="dim")
            text.append(
                bar(count, top, width).ljust(width),
                style=theme_color(self, "warning" if hot else "primary"),
            )
            text.append(" " + str(count).rjust(count_w))
            if i < len(self.bins) - 1:
                text.append("\n")
        return text
