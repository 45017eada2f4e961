"""Loss curves as a line plot: training loss as a braille line, eval loss as dots.

Drawn with plotext (through textual-plotext's figure) rather than block bars: a filled area hid
the curve's shape under its own mass, and a thin line with a y axis reads at a glance. plotext
output is plain characters, so the picture is the same in any terminal, in SVG screenshots and
snapshot tests. It is imported on first draw, so opening the app does not pay for it.
"""

from __future__ import annotations

import re

from rich.text import Text
from textual.color import Color
from textual.widget import Widget

from tuiapp.widgets.colors import theme_color

LINE_MARKER = "braille"  # 2×4 dots a cell: the smoothest line a terminal can draw
EVAL_MARKER = "●"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _rgb(widget: Widget, name: str, fallback: tuple[int, int, int]) -> tuple[int, int, int]:
    try:
        return Color.parse(theme_color(widget, name)).rgb
    except Exception:  # a theme slot that is not a colour ("default")
        return fallback


class LossChart(Widget):
    """`set_series(loss, eval_loss)`: lists of (step, value); the x axis runs to `total_steps`."""

    DEFAULT_CSS = """
    LossChart { height: 8; min-height: 5; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.loss: list[tuple[int, float]] = []
        self.eval_loss: list[tuple[int, float]] = []
        self.total_steps: int | None = None

    def set_series(
        self,
        loss: list[tuple[int, float]],
        eval_loss: list[tuple[int, float]] | None = None,
        total_steps: int | None = None,
    ) -> None:
        self.loss = sorted(loss)
        self.eval_loss = sorted(eval_loss or [])
        self.total_steps = total_steps
        self.refresh()

    def plot_text(self, width: int, height: int) -> str:
        """The chart as plotext draws it at `width`×`height`, colour codes included."""
        from textual_plotext import Plot  # on first draw only: keeps the app's start-up light

        points = self.loss + self.eval_loss
        plt = Plot()
        plt.plotsize(width, height)
        plt.theme("clear")  # no background of its own: the app's theme shows through
        plt.frame(False)
        if self.loss:
            plt.plot([s for s, _ in self.loss], [v for _, v in self.loss], marker=LINE_MARKER,
                     color=_rgb(self, "primary", (95, 175, 255)))
        if self.eval_loss:
            plt.scatter([s for s, _ in self.eval_loss], [v for _, v in self.eval_loss],
                        marker=EVAL_MARKER, color=_rgb(self, "warning", (255, 175, 0)))
        last = max(self.total_steps or 0, max(s for s, _ in points), 1)
        plt.xlim(0, last)
        values = [v for _, v in points]
        if max(values) - min(values) < 1e-9:  # a flat line still gets a y range to sit in
            plt.ylim(values[0] - 0.5, values[0] + 0.5)
        legend = f"⣀ loss  {EVAL_MARKER} eval loss" if self.eval_loss else "⣀ loss"
        plt.xlabel(f"step    {legend}")
        return plt.build()

    def plain(self) -> str:
        """The chart without colour codes (what tests and a reader of the SVG see)."""
        return _ANSI.sub("", self.plot_text(max(self.size.width, 20), max(self.size.height, 5)))

    def render(self) -> Text:
        if not (self.loss or self.eval_loss):
            return Text("no loss logged yet", style="dim")
        return Text.from_ansi(self.plot_text(max(self.size.width, 20), max(self.size.height, 5)))
