"""The Label screen's modals: writing a better answer, and starting a new task set."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static, TextArea

from tuiapp.screens.modals import MODAL_CSS


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

    def __init__(self, models_hint: str = "") -> None:
        super().__init__()
        self.models_hint = models_hint

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("New label tasks: answers are generated in the background, a few pairs "
                         "ahead of you.", classes="modal-title")
            yield Label("Models (two or more REFs, comma-separated)" + self.models_hint)
            yield Input(placeholder="base,run:3", id="new-models")
            yield Label("Prompts (a JSONL file, or a dataset version id or name)")
            yield Input(placeholder="sample_data/demo/eval_prompts.jsonl", id="new-prompts")
            yield Label("How many prompts (empty: all)")
            yield Input(placeholder="20", id="new-n")
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
