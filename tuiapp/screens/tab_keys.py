"""Keys for the tabs inside a screen (Datasets: Validation/Stats/Examples; Compare: Side by
side/Batch eval/Blind A/B): `[` / `]` step back and forth, and ctrl+pageup / ctrl+pagedown do the
same while a text field has focus (there `[` and `]` are typed into the field).

The bindings carry ids and descriptions, so the footer, the help and the palette list them.
The ctrl+page keys are priority bindings: a TextArea binds them itself (to scroll sideways), and
a tab key must work from inside the prompt editor too.
"""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import TabbedContent, Tabs


def tab_bindings(area: str) -> list[Binding]:
    return [
        Binding("left_square_bracket", "step_tab(-1)", "Previous tab",
                id=f"{area}.previous_tab", key_display="[", show=False),
        Binding("right_square_bracket", "step_tab(1)", "Next tab",
                id=f"{area}.next_tab", key_display="]"),
        Binding("ctrl+pageup", "step_tab(-1)", "Previous tab", id=f"{area}.previous_tab_typing",
                show=False, priority=True),
        Binding("ctrl+pagedown", "step_tab(1)", "Next tab", id=f"{area}.next_tab_typing",
                show=False, priority=True),
    ]


class TabKeysMixin:
    """Needs `TABS_ID` (the TabbedContent's id) and `TAB_IDS` (its panes' ids, in order)."""

    TABS_ID = ""
    TAB_IDS: tuple[str, ...] = ()

    def action_step_tab(self, step: int) -> None:
        tabs = self.query_one(f"#{self.TABS_ID}", TabbedContent)  # type: ignore[attr-defined]
        ids = self.TAB_IDS
        at = ids.index(tabs.active) if tabs.active in ids else 0
        focused = self.focused  # type: ignore[attr-defined]
        if focused is not None and tabs in focused.ancestors and not isinstance(focused, Tabs):
            # a field on the pane being hidden would hand focus to its neighbour on the same
            # pane, and TabbedContent brings a pane with focus back: the tab strip takes it
            tabs.query_one(Tabs).focus()
        tabs.active = ids[(at + step) % len(ids)]
