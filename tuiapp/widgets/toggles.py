"""On/off controls whose state is written, not only coloured: Textual's Switch, Checkbox and
SelectionList draw on and off as the same shape in two colours (`▐X▌` either way), which a
colour-blind person, a monochrome terminal or a plain-text screenshot cannot tell apart.

Each keeps its parent's behaviour and messages; only the drawing of the state changes.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from rich.segment import Segment
from rich.text import Text
from textual.strip import Strip
from textual.widgets import Checkbox, SelectionList, Switch
from textual.widgets._toggle_button import ToggleButton

ON_MARK, OFF_MARK = "✓", " "
SelectionType = TypeVar("SelectionType")


class TextSwitch(Switch):
    """A Switch that reads "on" or "off" (the colour stays as a second cue)."""

    DEFAULT_CSS = """
    TextSwitch { width: 5; }
    TextSwitch.-on { color: $success; }
    TextSwitch:focus { text-style: bold reverse; }
    """

    def __init__(self, value: bool = False, **kwargs) -> None:
        kwargs.setdefault("animate", False)
        super().__init__(value, **kwargs)

    def render(self) -> Text:
        return Text(" on  " if self.value else " off ", style="" if self.value else "dim")

    def get_content_width(self, container, viewport) -> int:
        return 5


class TextCheckbox(Checkbox):
    """A Checkbox whose box holds ✓ when checked and is empty when not."""

    @property
    def BUTTON_INNER(self) -> str:  # noqa: N802 - the name ToggleButton._button reads
        return ON_MARK if self.value else OFF_MARK


class TextSelectionList(SelectionList[SelectionType], Generic[SelectionType]):
    """A SelectionList whose boxes hold ✓ for chosen entries and are empty otherwise."""

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        segments = list(strip)
        if len(segments) < 2 or segments[1].text != ToggleButton.BUTTON_INNER:
            return strip
        _, scroll_y = self.scroll_offset
        try:
            option = self.get_option_at_index(scroll_y + y)
        except Exception:  # past the last entry: nothing to mark
            return strip
        mark = ON_MARK if option.value in self._selected else OFF_MARK
        segments[1] = Segment(mark, segments[1].style, segments[1].control)
        return Strip(segments, strip.cell_length)
