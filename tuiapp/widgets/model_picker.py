"""Pick 2–4 models for Compare: four slots offering the known models, plus one typed REF
(a model or adapter folder, a .gguf file, a run id) for anything the store does not list."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label, Select

SLOTS = 4


class ModelPicker(Vertical):
    DEFAULT_CSS = """
    ModelPicker { height: auto; }
    ModelPicker .mp-row { height: 1; }
    ModelPicker .mp-label { width: 6; color: $text-muted; }
    ModelPicker Select, ModelPicker Input { width: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.choices: list[tuple[str, str]] = []

    def compose(self) -> ComposeResult:
        for slot in range(1, SLOTS + 1):
            with Horizontal(classes="mp-row"):
                yield Label(f"#{slot}", classes="mp-label")
                yield Select([], prompt="(none)", id=f"mp-slot{slot}", compact=True)
        with Horizontal(classes="mp-row"):
            yield Label("REF", classes="mp-label")
            yield Input(placeholder="folder, .gguf path or run id", id="mp-typed", compact=True)

    def set_choices(self, choices: list[tuple[str, str]]) -> None:
        """Offer `choices` [(label, ref)]; a slot keeps its pick if still offered. Empty slots
        are filled with the first choices not already picked, up to two slots."""
        self.choices = list(choices)
        refs = [ref for _, ref in choices]
        picked = []
        for slot in range(1, SLOTS + 1):
            select = self.query_one(f"#mp-slot{slot}", Select)
            keep = select.value if select.value in refs else None
            select.set_options(self.choices)
            if keep is not None:
                select.value = keep
                picked.append(keep)
        free = [r for r in refs if r not in picked]
        for slot in range(1, SLOTS + 1):
            select = self.query_one(f"#mp-slot{slot}", Select)
            if len(picked) >= 2 or not free:
                break
            if select.is_blank():
                select.value = free[0]
                picked.append(free.pop(0))

    def select(self, refs: list[str]) -> None:
        """Put `refs` in the slots in order (refs not offered go to the typed REF field)."""
        offered = {ref for _, ref in self.choices}
        listed = [r for r in refs if r in offered][:SLOTS]
        for slot in range(1, SLOTS + 1):
            select = self.query_one(f"#mp-slot{slot}", Select)
            if slot <= len(listed):
                select.value = listed[slot - 1]
            else:
                select.clear()
        others = [r for r in refs if r not in offered]
        self.query_one("#mp-typed", Input).value = others[0] if others else ""

    def refs(self) -> list[str]:
        """The picked REFs in slot order, the typed one last; duplicates dropped."""
        chosen: list[str] = []
        for slot in range(1, SLOTS + 1):
            value = self.query_one(f"#mp-slot{slot}", Select).value
            if isinstance(value, str) and value not in chosen:
                chosen.append(value)
        typed = self.query_one("#mp-typed", Input).value.strip()
        if typed and typed not in chosen:
            chosen.append(typed)
        return chosen

    def label_of(self, ref: str) -> str:
        return next((label for label, r in self.choices if r == ref), ref)
