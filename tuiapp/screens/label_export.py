"""The Label screen's export: live labels → an immutable preference dataset version, in the app.

A mixin for `LabelScreen` (key x, and so in the palette as "Label: Export as dataset"): the
engine's export (labels.export through Engine.export_labels) runs in a thread worker — it hashes,
writes and validates a file — and one `LabelsExported` message tells the screen the version's
name. A dialog then offers the loop's next step: Train opened on a DPO or reward job with the new
version picked (`TrainScreen.request`), or not now.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from tuiapp.screens.modals import MODAL_CSS
from tuiapp.screens.train import TrainScreen


class LabelsExported(Message):
    """The version the labels became (`new`: False when the same labels were exported
    before and the existing version came back), or the error in words."""

    def __init__(self, version: Any = None, new: bool = True, error: str | None = None) -> None:
        super().__init__()
        self.version, self.new, self.error = version, new, error


class TrainFromLabelsScreen(ModalScreen[str | None]):
    """"Train DPO (d) / Train reward (r) / Not now": dismisses with the job kind or None."""

    BINDINGS = [
        Binding("d", "pick('dpo')", "Train DPO", id="train_from.dpo"),
        Binding("r", "pick('reward')", "Train reward", id="train_from.reward"),
        Binding("escape,n", "pick('')", "Not now", id="train_from.not_now"),
    ]
    DEFAULT_CSS = MODAL_CSS.format(cls="TrainFromLabelsScreen")

    def __init__(self, version: Any) -> None:
        super().__init__()
        self.version = version

    def compose(self) -> ComposeResult:
        v = self.version
        with Vertical():
            yield Static(f"Train from {v.name!r} (id {v.id}, {v.rows} preference pairs)?",
                         classes="modal-title")
            yield Static("DPO aligns a model on the pairs directly; a reward model learns to "
                         "score answers (for PPO later). Train opens with the version picked.")
            with Horizontal():
                yield Button("Not now (n)", id="train-from-no")
                yield Button("Train reward (r)", id="train-from-reward")
                yield Button("Train DPO (d)", id="train-from-dpo", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#train-from-dpo", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_pick({"train-from-dpo": "dpo", "train-from-reward": "reward"}
                         .get(event.button.id or "", ""))

    def action_pick(self, kind: str) -> None:
        self.dismiss(kind or None)


class LabelExportMixin:
    """Needs from the screen: engine, store, task_set, `_status`, notify."""

    last_export: Any = None  # the version the last export made (tests read it)

    def action_export_labels(self) -> None:
        self._status(Text("Exporting the labels as a preference dataset version…"))
        self._export_labels(self.task_set)

    @work(thread=True, exclusive=True, group="label-export", exit_on_error=False)
    def _export_labels(self, task_set: str | None) -> None:
        try:
            before = {v.id for v in self.store.list_dataset_versions()}
            version = self.engine.export_labels(self.store, task_set)
        except Exception as exc:  # LabelsError says what to do (e.g. label some pairs first)
            self.post_message(LabelsExported(error=str(exc).strip() or type(exc).__name__))
            return
        self.post_message(LabelsExported(version, new=version.id not in before))

    def on_labels_exported(self, message: LabelsExported) -> None:
        if message.error:
            self._status(Text(f"Not exported: {message.error}", style="bold red"))
            self.notify(f"Export failed: {message.error}", severity="error", timeout=8)
            return
        v = message.version
        self.last_export = v
        stats = v.stats or {}
        said = (f"Exported {v.rows} preference pairs as dataset version {v.name!r} (id {v.id})"
                if message.new else
                f"These labels were exported before: dataset version {v.name!r} (id {v.id}), "
                f"{v.rows} pairs")
        detail = (f"{stats.get('both_bad', 0)} both bad, {stats.get('edited', 0)} rewrites; "
                  "ties and skips left out. Pick it on Train for a DPO or reward run.")
        self._status(Text.assemble((f"✓ {said}", "bold green"), f"\n{detail}"))
        self.offer_training(v)

    def offer_training(self, version: Any) -> None:
        def picked(kind: str | None) -> None:
            if kind:
                TrainScreen.request(self.app, kind, version.id)

        self.app.push_screen(TrainFromLabelsScreen(version), picked)
