"""One model's answer in a Compare pane: a title, the streamed text, and its figures.

The pane only draws what it is told (the screen's message handlers call it); the text always
arrives whole (the worker accumulates it), so a coalesced update never loses a token.
Streaming must not re-layout the screen on every redraw (that costs tens of milliseconds on a
busy screen and slows the generating thread through the GIL): the text lives in a fixed-size
StreamText that is appended to and repaints only itself, and the figures line has a fixed height.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.color import Color
from textual.containers import Vertical
from textual.widgets import Static

from tuiapp.widgets.stream_text import StreamText


def figures_line(tokens: int, latency_s: float | None = None, first_token_s: float | None = None,
                 tokens_per_s: float | None = None, finish_reason: str | None = None) -> str:
    parts = [f"{tokens} tok"]
    if tokens_per_s is not None:
        parts.append(f"{tokens_per_s:.1f} tok/s")
    if first_token_s is not None:
        parts.append(f"first {first_token_s:.2f}s")
    if latency_s is not None:
        parts.append(f"total {latency_s:.2f}s")
    if finish_reason:
        parts.append(finish_reason)
    return " · ".join(parts)


class OutputPane(Vertical):
    """States: idle → streaming → done | failed | cancelled. `text` is what is shown."""

    DEFAULT_CSS = """
    OutputPane { width: 1fr; height: 1fr; border: round $panel; padding: 0 1; }
    OutputPane .pane-title { height: 1; text-style: bold; color: $accent; }
    OutputPane .pane-text { height: 1fr; background: $surface; }
    OutputPane .pane-figures { height: 3; color: $text-muted; }
    """
    # The state's look is set inline, not by a CSS class: a class change re-applies the
    # stylesheet to the pane and its children (milliseconds of main-thread time per pane, twice
    # per answer), an inline border colour of the same width only repaints the pane.
    BORDER_COLOUR = {"streaming": "primary", "failed": "error"}  # theme variables; else panel

    def __init__(self, title: str = "", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title_text = title
        self.text = ""
        self.state = "idle"
        self.figures: dict = {}
        self.error: str | None = None
        self._border = "panel"  # the theme colour of the border now

    def compose(self) -> ComposeResult:
        yield Static(Text(self.title_text), classes="pane-title")
        yield StreamText(classes="pane-text")
        yield Static("", classes="pane-figures")

    def set_title(self, title: str) -> None:
        self.title_text = title
        if self.is_mounted:  # one fixed line: no re-layout of the screen
            self.query_one(".pane-title", Static).update(Text(title), layout=False)

    def start(self) -> None:
        self.text, self.figures, self.error = "", {}, None
        self._state("streaming")
        self._draw("waiting for the model…")

    def show_progress(self, text: str, tokens: int, elapsed_s: float) -> None:
        self.text = text
        rate = tokens / elapsed_s if elapsed_s > 0 else None
        self._draw(figures_line(tokens, tokens_per_s=rate) + " · streaming")

    def finish(self, text: str, figures: dict) -> None:
        self.text, self.figures = text, dict(figures)
        cancelled = figures.get("finish_reason") == "cancelled"
        self._state("cancelled" if cancelled else "done")
        self._draw(figures_line(figures.get("tokens", 0), figures.get("latency_s"),
                                figures.get("first_token_s"), figures.get("tokens_per_s"),
                                figures.get("finish_reason")))

    def fail(self, error: str) -> None:
        self.error = error
        self._state("failed")
        self._draw(error)

    def show(self, text: str, figures_text: str = "") -> None:
        """A finished answer from elsewhere (a batch evaluation's output)."""
        self.text = text
        self._state("done")
        self._draw(figures_text)

    def _state(self, state: str) -> None:
        self.state = state
        colour = self.BORDER_COLOUR.get(state, "panel")
        if self.is_mounted and colour != self._border:
            self._border = colour
            self.styles.border = ("round", Color.parse(self.app.theme_variables.get(colour, "grey")))

    def _draw(self, figures_text: str) -> None:
        if not self.is_mounted:
            return
        self.query_one(".pane-text", StreamText).set_text(self.text)  # appends when it can
        style = self.app.theme_variables.get("error", "red") if self.state == "failed" else ""
        self.query_one(".pane-figures", Static).update(Text(figures_text, style=style),
                                                        layout=False)
