"""The prompt box: a TextArea whose F-keys still switch areas.

Textual's TextArea binds F6 (select line) and F7 (select all) itself, so with the cursor in
Compare's prompt F6/F7 never reached the app and Label/Export could not be opened by key (found by
the keys-only whole-loop test). Here every area's F-key goes to the app again; text is still
selected with shift + arrows / home / end (or the mouse)."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import TextArea

from tuiapp.screens.areas import AREA_KEYS


class PromptArea(TextArea):
    BINDINGS = [Binding(fkey, f"app.area('{mode}')", title, show=False)
                for mode, title, fkey, _letter in AREA_KEYS]
