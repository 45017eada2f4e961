"""Text that grows at its end, drawn line by line: the body of a Compare pane.

Why not a TextArea or a Log: both are scroll views, so every append changes their virtual size,
and Textual answers a size change with a layout of the whole screen (tens of milliseconds on the
Compare screen) while the generating threads wait for the GIL. This widget has a fixed size: an
append re-wraps only the paragraph that grew and repaints only this widget's own cells. It keeps
its own scroll position instead (follows the end while it streams; mouse wheel and the usual keys
move it when focused), so a long answer can still be read whole.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.events import MouseScrollDown, MouseScrollUp
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget

WHEEL_LINES = 3


class StreamText(Widget, can_focus=True):
    """`append` for streaming, `set_text` for a whole text; `lines` are the wrapped lines."""

    DEFAULT_CSS = """
    StreamText { height: 1fr; }
    StreamText:focus { background-tint: $foreground 5%; }
    """
    BINDINGS = [
        Binding("up", "scroll_by(-1)", "Line up", show=False),
        Binding("down", "scroll_by(1)", "Line down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "scroll_to_start", "Top", show=False),
        Binding("end", "scroll_to_end", "End", show=False),
    ]

    def __init__(self, text: str = "", *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.text = ""
        self.top = 0          # first shown line when not following
        self.follow = True    # keep the last line in view (a streaming answer)
        self._done: list[Text] = []   # wrapped lines of the paragraphs already ended by "\n"
        self._last = ""               # the paragraph still growing
        self._last_lines: list[Text] = [Text("")]
        self._width = 0               # the width the cached lines were wrapped at
        self._all: list[Text] | None = None   # _done + _last_lines, built once per change
        if text:
            self.set_text(text)

    # ---- content

    def set_text(self, text: str) -> None:
        """Show `text`; a text that extends the shown one is only appended."""
        if text.startswith(self.text):
            self.append(text[len(self.text):])
            return
        self.text, self._done, self._last, self._last_lines = "", [], "", [Text("")]
        self._all, self.top, self.follow = None, 0, True
        self.append(text)
        self.refresh()  # even when the new text is empty

    def append(self, more: str) -> None:
        if not more:
            return
        before = self.lines  # also re-wraps after a resize
        first_before = self._first_line(len(before))
        self.text += more
        *ended, self._last = (self._last + more).split("\n")
        for paragraph in ended:
            self._done.extend(self._wrap(paragraph))
        self._last_lines = self._wrap(self._last)
        self._all = None
        if not self.is_mounted or self._first_line(len(self.lines)) != first_before:
            self.refresh()  # the text scrolled: every row changed
            return
        # only the rows from the growing paragraph down are repainted (a streaming answer
        # usually changes one or two rows, not the whole pane)
        after = self.lines
        # wrapping is stable as a paragraph grows: the rows before its last one stay the same
        pairs = enumerate(zip(before, after, strict=False))
        changed_from = next((i for i, (a, b) in pairs if a.plain != b.plain),
                            min(len(before), len(after)))
        y = max(0, changed_from - first_before)
        self.refresh(Region(0, y, self.size.width, max(1, self.size.height - y)))

    @property
    def lines(self) -> list[Text]:
        width = self._text_width()
        if width != self._width:  # a resize: wrap everything once at the new width
            self._width = width
            *ended, last = self.text.split("\n")
            self._done = [line for p in ended for line in self._wrap(p)]
            self._last_lines = self._wrap(last)
            self._all = None
        if self._all is None:
            self._all = self._done + self._last_lines
        return self._all

    def _text_width(self) -> int:
        return max(1, self.size.width)

    def _wrap(self, paragraph: str) -> list[Text]:
        if not paragraph or not self.is_mounted or self._width == 0:
            return [Text(paragraph)]  # wrapped for real when first drawn (the width is known)
        return list(Text(paragraph).wrap(self.app.console, self._width))

    # ---- scrolling (our own offset: no scroll view, no layout)

    def _first_line(self, total: int) -> int:
        height = self.size.height
        if self.follow:
            return max(0, total - height)
        return max(0, min(self.top, total - height))

    def _scroll(self, top: int) -> None:
        total = len(self.lines)
        last_top = max(0, total - self.size.height)
        self.top = max(0, min(top, last_top))
        self.follow = self.top >= last_top
        self.refresh()

    def action_scroll_by(self, lines: int) -> None:
        self._scroll(self._first_line(len(self.lines)) + lines)

    def action_page(self, pages: int) -> None:
        self.action_scroll_by(pages * max(1, self.size.height - 1))

    def action_scroll_to_start(self) -> None:
        self._scroll(0)

    def action_scroll_to_end(self) -> None:
        self._scroll(len(self.lines))

    def _on_mouse_scroll_down(self, event: MouseScrollDown) -> None:
        event.stop()
        self.action_scroll_by(WHEEL_LINES)

    def _on_mouse_scroll_up(self, event: MouseScrollUp) -> None:
        event.stop()
        self.action_scroll_by(-WHEEL_LINES)

    # ---- drawing

    def render_lines(self, crop: Region) -> list[Strip]:
        # what every row needs, worked out once per repaint (the style walks up the DOM)
        self._base = self.rich_style
        self._lines_now = self.lines
        self._top_now = self._first_line(len(self._lines_now))
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width, height = self.size
        base, lines, top = self._base, self._lines_now, self._top_now
        below = len(lines) - top - height
        if below > 0 and y == height - 1:  # say that there is more (this row hides one too)
            hidden = below + 1
            hint = Text(f"▼ {hidden} more lines (scroll or End)",
                        style=Style(dim=True, italic=True))
            return self._strip(hint, width, base)
        index = top + y
        if index >= len(lines):
            return Strip.blank(width, base)
        return self._strip(lines[index], width, base)

    def _strip(self, line: Text, width: int, base: Style) -> Strip:
        strip = Strip(line.render(self.app.console)).apply_style(base)
        return strip.crop_extend(0, width, base)
