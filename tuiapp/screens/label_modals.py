"""The Label screen's pieces: its fixed-size text boxes, and its modals (writing a better
answer, starting a new task set)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.strip import Strip
from textual.visual import Visual
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Static, TextArea

from tuiapp import paths
from tuiapp.screens.modals import MODAL_CSS

DEFAULT_PROMPTS = paths.DEMO_DIR / "eval_heldout.jsonl"  # the demo's held-out questions
DEFAULT_N = 20


def new_task_defaults(engine: Any, store: Any) -> dict[str, Any]:
    """Real values to prefill the New label tasks dialog with (reads the store: call it from a
    worker): the base and the newest trained run (REFs from engine.model_choices), the demo's
    held-out prompt file if it is there, 20 prompts. `available`: every REF that can answer."""
    choices = getattr(engine, "model_choices", None)
    try:
        refs = [ref for _, ref in choices(store)] if choices else []
    except Exception:  # no models to offer is no reason to keep the dialog shut
        refs = []
    runs = [r for r in refs if r.startswith("run:") and r[4:].isdigit()]
    pick = (["base"] if "base" in refs else []) + sorted(runs, key=lambda r: int(r[4:]))[-1:]
    if len(pick) < 2:
        pick = refs[:2]
    return {"models": ",".join(pick) if len(pick) == 2 else "", "available": refs,
            "prompts": str(DEFAULT_PROMPTS) if DEFAULT_PROMPTS.is_file() else "",
            "n": str(DEFAULT_N)}


class PairText(Widget):
    """Text in a box whose size never depends on the text, scrolled by the mouse wheel.

    A Static in a scroll container changes height with every new answer, and any size change
    re-lays out the whole screen — which cost more than the durable commit of the label. Here a
    new text is wrapped and rendered to lines once, when it is shown; a frame copies the visible
    ones (Textual's line API) and only this box is repainted. The border subtitle says how much
    is below.
    """

    can_focus = False

    def __init__(self, *, id: str, classes: str = "") -> None:
        super().__init__(id=id, classes=classes)
        self._text = Text("")
        self._strips: list[Strip] = []
        self._wrapped_at = -1
        self._subtitle = ""
        self.top = 0

    @property
    def content(self) -> Text:
        """What the box holds (all of it, not only the visible lines)."""
        return self._text

    def show(self, text: Text | str) -> None:
        self._text = text if isinstance(text, Text) else Text(text)
        self.top = 0
        self._wrap()
        self.refresh()

    def _wrap(self) -> None:
        width = self.size.width
        self._wrapped_at = width
        self._strips = [] if width <= 0 else Visual.to_strips(  # 0: not laid out yet
            self, Content.from_rich_text(self._text), width, None, self.visual_style, pad=True)
        self._say_more()

    def _say_more(self) -> None:
        below = len(self._strips) - self.top - self.size.height
        subtitle = f"↓ {below} more lines (wheel)" if below > 0 else ""
        if subtitle != self._subtitle:
            self._subtitle = self.border_subtitle = subtitle

    def on_resize(self, event: events.Resize) -> None:
        self._wrap()

    def render_line(self, y: int) -> Strip:
        if self._wrapped_at != self.size.width:
            self._wrap()
        line = self.top + y
        if line < len(self._strips):
            return self._strips[line]
        return Strip.blank(self.size.width, self.visual_style.rich_style)

    def _scroll(self, by: int) -> None:
        top = max(0, min(self.top + by, len(self._strips) - self.size.height))
        if top != self.top:
            self.top = top
            self._say_more()
            self.refresh()

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        event.stop()
        self._scroll(3)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        event.stop()
        self._scroll(-3)


class EditAnswerScreen(ModalScreen[str | None]):
    """A TextArea prefilled with one answer; ctrl+s saves the rewrite, escape cancels."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save as the better answer", id="label_edit.save"),
        Binding("escape", "cancel", "Cancel", id="label_edit.cancel"),
    ]
    DEFAULT_CSS = MODAL_CSS.format(cls="EditAnswerScreen") + """
    EditAnswerScreen > Vertical { width: 90; }
    EditAnswerScreen TextArea { height: 14; }
    """

    def __init__(self, side: str, text: str) -> None:
        super().__init__()
        self.side = side
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"Write a better answer (starting from {self.side}); it becomes the "
                         f"chosen answer against {self.side}.", classes="modal-title")
            yield TextArea(self.text, id="label-edit-text")
            yield Static("", id="label-edit-error", classes="modal-error")
            with Horizontal():
                yield Button("Cancel", id="cancel")
                yield Button("Save (ctrl+s)", id="save", variant="primary")

    def on_mount(self) -> None:
        self.query_one(TextArea).focus()

    def action_save(self) -> None:
        text = self.query_one(TextArea).text
        if not text.strip():
            self.query_one("#label-edit-error", Static).update("The answer is empty.")
            return
        if text.strip() == self.text.strip():
            self.query_one("#label-edit-error", Static).update(
                f"Unchanged: press {'1' if self.side == 'A' else '2'} instead to pick {self.side}.")
            return
        self.dismiss(text)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)


class NewTasksScreen(ModalScreen[dict | None]):
    """Models, prompt set, how many, task-set name → a dict for engine.start_label_feeder."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="label_new.cancel")]
    DEFAULT_CSS = MODAL_CSS.format(cls="NewTasksScreen") + """
    NewTasksScreen Label { margin-top: 1; }
    """

    def __init__(self, defaults: dict[str, Any] | None = None) -> None:
        super().__init__()
        # Prefilled with real values (new_task_defaults); placeholders only ever say "e.g." or
        # what an empty field means, so nothing dim reads as a value already filled in
        self.defaults = defaults or {}

    def compose(self) -> ComposeResult:
        d = self.defaults
        available = d.get("available") or []
        hint = (f" — can answer: {', '.join(available[:8])}{' …' if len(available) > 8 else ''}"
                if available else " — no trained models yet: train one, or give a folder")
        with Vertical():
            yield Static("New label tasks: answers are generated in the background, a few pairs "
                         "ahead of you.", classes="modal-title")
            yield Label("Models (two or more REFs, comma-separated)" + hint)
            yield Input(d.get("models", ""), placeholder="e.g. base,run:3", id="new-models")
            yield Label("Prompts (a JSONL file, or a dataset version id or name)")
            yield Input(d.get("prompts", ""), placeholder="e.g. path/to/prompts.jsonl",
                        id="new-prompts")
            yield Label("How many prompts (empty: all)")
            yield Input(d.get("n", ""), placeholder="empty: every prompt", id="new-n")
            yield Label("Task set name (empty: the models' names)")
            yield Input(id="new-set")
            yield Static("", id="new-error", classes="modal-error")
            with Horizontal():
                yield Button("Cancel", id="cancel")
                yield Button("Start", id="start", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#new-models", Input).focus()

    def _value(self, id_: str) -> str:
        return self.query_one(f"#{id_}", Input).value.strip()

    def _submit(self) -> None:
        refs = [r.strip() for r in self._value("new-models").split(",") if r.strip()]
        error = ""
        if len(refs) < 2:
            error = "Give two or more model REFs, e.g. base,run:3."
        elif not self._value("new-prompts"):
            error = "Give a prompt set."
        n_text = self._value("new-n")
        if not error and n_text and (not n_text.isdigit() or int(n_text) < 1):
            error = "How many must be a whole number above 0."
        if error:
            self.query_one("#new-error", Static).update(error)
            return
        self.dismiss({"refs": refs, "prompts": self._value("new-prompts"),
                      "n": int(n_text) if n_text else None,
                      "task_set": self._value("new-set") or None})

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
