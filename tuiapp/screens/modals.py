"""Modal screens shared by the areas: confirmations and a one-field name prompt."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

MODAL_CSS = """
{cls} {{ align: center middle; }}
{cls} > Vertical {{
    width: 72; height: auto; border: thick $primary; background: $surface; padding: 1 2;
}}
{cls} .modal-title {{ text-style: bold; color: $accent; margin-bottom: 1; }}
{cls} .modal-error {{ color: $error; height: auto; }}
{cls} Horizontal {{ height: auto; align-horizontal: right; margin-top: 1; }}
{cls} Button {{ margin-left: 2; }}
"""


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no question; dismisses with True only on an explicit yes."""

    BINDINGS = [
        Binding("escape", "answer(False)", "Cancel", id="confirm.cancel"),
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
    ]
    DEFAULT_CSS = MODAL_CSS.format(cls="ConfirmScreen")

    def __init__(self, question: str, yes: str = "Yes", no: str = "Cancel") -> None:
        super().__init__()
        self.question = question
        self.yes = yes
        self.no = no  # says what staying means when "Cancel" would read as the action itself

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, classes="modal-title")
            with Horizontal():
                yield Button(self.no, id="no")
                yield Button(self.yes, id="yes", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class NameScreen(ModalScreen[str | None]):
    """Ask for a name (e.g. of a dataset version); None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="name.cancel")]
    DEFAULT_CSS = MODAL_CSS.format(cls="NameScreen")

    def __init__(self, title: str, value: str, action: str = "OK", hint: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.value = value
        self.action_label = action
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_text, classes="modal-title")
            if self.hint:
                yield Label(self.hint)
            yield Input(value=self.value, id="name-input", placeholder="name")
            yield Static("", id="name-error", classes="modal-error")
            with Horizontal():
                yield Button("Cancel", id="cancel")
                yield Button(self.action_label, id="ok", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#name-input", Input).focus()

    def _submit(self) -> None:
        name = self.query_one("#name-input", Input).value.strip()
        if not name:
            self.query_one("#name-error", Static).update("A name is needed.")
            return
        self.dismiss(name)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
