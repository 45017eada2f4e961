"""Loss curves drawn with block characters: training loss as an area, eval loss as dots.

Block characters rather than a plotting library for the same reasons as the histogram: the
picture is identical in any terminal, in SVG screenshots and in snapshot tests, and it costs no
import time. Each column is one slice of the step range; its bar is the mean training loss of
the logged points in that slice, with eighth-cell resolution.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from tuiapp.widgets.colors import theme_color

_EIGHTHS = " ▁▂▃▄▅▆▇█"
AXIS_WIDTH = 8  # "  2.345 ┤"


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def column_means(points: list[tuple[int, float]], first: int, last: int, width: int) -> list:
    """Mean value of the points falling in each of `width` equal slices of [first, last]."""
    sums = [0.0] * width
    counts = [0] * width
    span = max(last - first, 1)
    for step, value in points:
        col = min(int((step - first) / span * width), width - 1)
        sums[col] += value
        counts[col] += 1
    means: list[float | None] = [s / c if c else None for s, c in zip(sums, counts, strict=True)]
    # A slice without a logged point repeats its left neighbour, so a sparse log (every 10
    # steps over 80 columns) still reads as a continuous curve.
    for i in range(1, width):
        if means[i] is None and means[i - 1] is not None and first + i * span / width <= points[-1][0]:
            means[i] = means[i - 1]
    return means


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

    def render(self) -> Text:
        text = Text()
        points = self.loss + self.eval_loss
        if not points:
            text.append("no loss logged yet", style="dim")
            return text
        rows = max(self.size.height - 1, 2)
        width = max(self.size.width - AXIS_WIDTH, 8)
        values = [v for _, v in points]
        low, high = min(values), max(values)
        if high - low < 1e-9:
            low, high = low - 0.5, high + 0.5
        first = 0
        last = max(self.total_steps or 0, max(s for s, _ in points), 1)
        area = column_means(self.loss, first, last, width) if self.loss else [None] * width
        dots: dict[tuple[int, int], bool] = {}
        for step, value in self.eval_loss:
            col = min(int((step - first) / max(last - first, 1) * width), width - 1)
            row = round((value - low) / (high - low) * (rows - 1))
            dots[(rows - 1 - row, col)] = True
        loss_style = theme_color(self, "primary")
        eval_style = f"bold {theme_color(self, 'warning')}"
        for r in range(rows):
            # Row r (0 = top) covers the value band [bottom, top) of the chart's range.
            top = high - (high - low) * r / rows
            bottom = high - (high - low) * (r + 1) / rows
            label = _fmt(high) if r == 0 else _fmt(low) if r == rows - 1 else ""
            text.append(f"{label:>{AXIS_WIDTH - 2}} ┤", style="dim")
            for c in range(width):
                if dots.get((r, c)):
                    text.append("●", style=eval_style)
                    continue
                value = area[c]
                if value is None or value <= bottom:
                    text.append(" ")
                elif value >= top:
                    text.append("█", style=loss_style)
                else:
                    eighths = round((value - bottom) / (top - bottom) * 8)
                    text.append(_EIGHTHS[max(eighths, 1)], style=loss_style)
            text.append("\n")
        axis = f"step {first}"
        end = f"{last}"
        legend = "  █ loss  ● eval loss" if self.eval_loss else "  █ loss"
        gap = max(width - len(axis) - len(end) - len(legend), 1)
        text.append(" " * AXIS_WIDTH + axis, style="dim")
        text.append(legend, style="dim")
        text.append(" " * gap + end, style="dim")
        return text
