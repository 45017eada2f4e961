"""The Label screen's export: live labels → an immutable preference dataset version, in the app.

A mixin for `LabelScreen` (key x, and so in the palette as "Label: Export as dataset"): the
engine's export (labels.export through Engine.export_labels) runs in a thread worker — it hashes,
writes and validates a file — and one `LabelsExported` message tells the screen the version's
name, so the person can pick it on Train for a DPO or reward run.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.message import Message


class LabelsExported(Message):
    """The version the labels became (`new`: False when the same labels were exported
    before and the existing version came back), or the error in words."""

    def __init__(self, version: Any = None, new: bool = True, error: str | None = None) -> None:
        super().__init__()
        self.version, self.new, self.error = version, new, error


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
        self.notify(f"{said}. Pick it on Train for DPO or reward.", timeout=10)
