"""Blind A/B for the Compare screen: two models' answers as A and B, identities hidden and sides
randomised (seeded by the prompt, so the same prompt shows the same sides), the choice recorded as
a preference label through the store, identities revealed afterwards.

The label is written in candidate order: candidate a is the first picked model, b the second;
`swapped` says b was shown as A. The store write runs in a thread worker (labels are written
with synchronous=FULL) and posts `BlindRecorded`.
"""

from __future__ import annotations

import random
from typing import Any

from rich.text import Text
from textual import work
from textual.widgets import Static

from tuiapp.messages import BlindRecorded, WorkFailed
from tuiapp.widgets.output_pane import OutputPane

BLIND_PANES = ("blind-a", "blind-b")
SCREEN_CHOICES = {"a": "A", "b": "B", "tie": "a tie", "both_bad": "both bad"}


def blind_sides(prompt: str, system: str | None, seed: int) -> bool:
    """Whether the second model is shown as A. A str seed is hashed with SHA-512 by `random`,
    so this is the same in every process."""
    return random.Random(f"{prompt}\x00{system or ''}\x00{seed}").random() < 0.5


def to_candidate_order(choice: str, swapped: bool) -> str:
    """A choice made on screen (A/B) in terms of the candidates (a = first picked model)."""
    if swapped and choice in ("a", "b"):
        return "b" if choice == "a" else "a"
    return choice


class BlindMixin:
    """Blind rounds on the Compare screen (which supplies `_start_stream` and the panes)."""

    blind: dict[str, Any] | None = None

    def start_blind(self, refs: list[str], prompt: str, system: str | None, params: dict,
                    labels: dict[str, str]) -> None:
        swapped = blind_sides(prompt, system, int(params.get("seed", 0)))
        shown = [refs[1], refs[0]] if swapped else [refs[0], refs[1]]
        self.blind = {"refs": refs[:2], "prompt": prompt, "system": system, "swapped": swapped,
                      "shown": shown, "labels": labels, "results": {}, "recorded": None}
        for pane_id, ref, side in zip(BLIND_PANES, shown, ("A", "B"), strict=True):
            pane = self.query_one(f"#{pane_id}", OutputPane)
            pane.set_title(side)  # identities stay hidden until the choice is recorded
            self._start_stream(pane_id, ref, prompt, params, system)
        self._blind_status("Both answers are streaming; the models stay hidden until you choose.")

    def blind_ready(self) -> bool:
        b = self.blind
        return bool(b) and b["recorded"] is None and len(b["results"]) == 2 and not b.get("saving")

    def blind_finished(self, pane_id: str, text: str, figures: dict) -> None:
        if self.blind is None:
            return
        self.blind["results"][pane_id] = {"text": text, **figures}
        if len(self.blind["results"]) == 2:
            self._blind_status("Which answer is better?  1 A · 2 B · 3 tie · 4 both bad")
            self.refresh_bindings()

    def blind_failed(self, error: str) -> None:
        self.blind = None
        self._blind_status(f"The blind round stopped: {error}")

    def choose_blind(self, screen_choice: str) -> None:
        if not self.blind_ready():
            return
        b = self.blind
        b["saving"] = True
        choice = to_candidate_order(screen_choice, b["swapped"])
        by_ref = {b["shown"][i]: b["results"][pane] for i, pane in enumerate(BLIND_PANES)}
        candidates = [{"model_ref": ref, "output": by_ref[ref]["text"],
                       "generation_id": by_ref[ref].get("generation_id")} for ref in b["refs"]]
        b["screen_choice"] = screen_choice
        self._record_blind(b["prompt"], b["system"], candidates, choice, b["swapped"])

    @work(thread=True, exit_on_error=False, group="compare-blind")
    def _record_blind(self, prompt: str, system: str | None, candidates: list[dict], choice: str,
                      swapped: bool) -> None:
        try:
            task = self.app.store.create_label_task(prompt, candidates, task_set="blind",
                                                    system=system, source="blind")
            event = self.app.store.add_label(task.id, choice, swapped=swapped)
        except Exception as exc:
            self.post_message(WorkFailed("blind label", str(exc).strip() or type(exc).__name__))
            return
        self.post_message(BlindRecorded(task.id, event.id, choice, swapped))

    def on_blind_recorded(self, message: BlindRecorded) -> None:
        b = self.blind
        if b is None:
            return
        b["recorded"] = message.task_id
        b["saving"] = False
        for pane_id, ref, side in zip(BLIND_PANES, b["shown"], ("A", "B"), strict=True):
            self.query_one(f"#{pane_id}", OutputPane).set_title(f"{side} = {b['labels'].get(ref, ref)}")
        picked = SCREEN_CHOICES[b["screen_choice"]]
        if b["screen_choice"] in ("a", "b"):
            ref = b["shown"][0 if b["screen_choice"] == "a" else 1]
            picked += f" ({b['labels'].get(ref, ref)})"
        self._blind_status(f"You preferred {picked}. Recorded as label task {message.task_id} "
                           f"(choice {message.choice}, sides swapped: {message.swapped}). "
                           "Ctrl+O starts another round.")
        self.refresh_bindings()

    def _blind_status(self, text: str) -> None:
        self.query_one("#blind-status", Static).update(Text(text))
