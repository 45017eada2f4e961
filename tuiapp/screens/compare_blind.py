"""Blind A/B for the Compare screen: the prompt, and two models' answers as A and B with their
identities hidden, the choice recorded as a preference label through the store, identities
revealed afterwards in plain words ("A was run 2 (DPO), B was base").

Blind means the answers are new: each round samples afresh (temperature at least
BLIND_TEMPERATURE, a seed of its own), so it never replays what Side by side just showed. One
round seed, derived from the prompt, the form's seed and the round number, gives both the
sampling seed and the sides; it is saved in the task's meta (with the sampling settings), so the
sides of any stored round can be worked out again (`sides_from_seed`).

The label is written in candidate order: candidate a is the first picked model, b the second;
`swapped` says b was shown as A. The store write runs in a thread worker (labels are written
with synchronous=FULL) and posts `BlindRecorded`.
"""

from __future__ import annotations

import random
import re
from typing import Any

from rich.text import Text
from textual import work
from textual.widgets import Static

from tuiapp.messages import BlindRecorded, WorkFailed
from tuiapp.widgets.output_pane import OutputPane

BLIND_PANES = ("blind-a", "blind-b")
SCREEN_CHOICES = {"a": "A", "b": "B", "tie": "a tie", "both_bad": "both bad"}
# Greedy answers (temperature 0) are the ones Side by side shows; a blind round samples.
BLIND_TEMPERATURE = 0.8


def blind_seed(prompt: str, system: str | None, seed: int, round_no: int) -> int:
    """The seed of one blind round. A str seed is hashed with SHA-512 by `random`, so this is
    the same in every process."""
    key = f"{prompt}\x00{system or ''}\x00{seed}\x00{round_no}"
    return random.Random(key).randrange(2**31)


def sides_from_seed(round_seed: int) -> bool:
    """Whether the second model is shown as A in the round with this seed."""
    return random.Random(round_seed).random() < 0.5


def blind_params(params: dict, round_seed: int) -> dict:
    """The form's sampling settings, made to sample: a fresh seed, temperature > 0."""
    temperature = float(params.get("temperature") or 0)
    return {**params, "seed": round_seed,
            "temperature": temperature if temperature > 0 else BLIND_TEMPERATURE}


def plain_name(ref: str, label: str) -> str:
    """A model as a person says it: "run 2 (DPO)" for a run's "run 2 demo-dpo (dpo)", "base"
    for the base model, else the picker's label."""
    run = re.fullmatch(r"run (\d+)\b.*\((\w+)\)\s*", label)
    if run:
        return f"run {run[1]} ({run[2].upper()})"
    if ref == "base":
        return "base"
    return label


def to_candidate_order(choice: str, swapped: bool) -> str:
    """A choice made on screen (A/B) in terms of the candidates (a = first picked model)."""
    if swapped and choice in ("a", "b"):
        return "b" if choice == "a" else "a"
    return choice


class BlindMixin:
    """Blind rounds on the Compare screen (which supplies `_start_stream` and the panes)."""

    blind: dict[str, Any] | None = None
    blind_rounds = 0  # rounds started on this screen: each one samples anew

    def start_blind(self, refs: list[str], prompt: str, system: str | None, params: dict,
                    labels: dict[str, str]) -> None:
        self.blind_rounds += 1
        round_seed = blind_seed(prompt, system, int(params.get("seed", 0)), self.blind_rounds)
        sampling = blind_params(params, round_seed)
        swapped = sides_from_seed(round_seed)
        shown = [refs[1], refs[0]] if swapped else [refs[0], refs[1]]
        names = {ref: plain_name(ref, labels.get(ref, ref)) for ref in refs[:2]}
        self.blind = {"refs": refs[:2], "prompt": prompt, "system": system, "swapped": swapped,
                      "shown": shown, "names": names, "results": {}, "recorded": None,
                      "meta": {"blind_seed": round_seed, "show_swapped": swapped,
                               "sampling": sampling}}
        self._show_blind_prompt(prompt, system)
        for pane_id, ref, side in zip(BLIND_PANES, shown, ("A", "B"), strict=True):
            pane = self.query_one(f"#{pane_id}", OutputPane)
            pane.set_title(side)  # identities stay hidden until the choice is recorded
            self._start_stream(pane_id, ref, prompt, sampling, system)
        self._blind_status(f"Round {self.blind_rounds}: two fresh samples (temperature "
                           f"{sampling['temperature']:g}, seed {round_seed}) are streaming; the "
                           "models stay hidden until you choose.")

    def _show_blind_prompt(self, prompt: str, system: str | None) -> None:
        text = Text()
        if system:
            text.append(f"system: {system}\n", style="dim")
        text.append(prompt)
        self.query_one("#blind-prompt", Static).update(text)

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
        self._record_blind(b["prompt"], b["system"], candidates, choice, b["swapped"], b["meta"])

    @work(thread=True, exit_on_error=False, group="compare-blind")
    def _record_blind(self, prompt: str, system: str | None, candidates: list[dict], choice: str,
                      swapped: bool, meta: dict) -> None:
        try:
            task = self.app.store.create_label_task(prompt, candidates, task_set="blind",
                                                    system=system, source="blind", meta=meta)
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
        names = b["names"]
        for pane_id, ref, side in zip(BLIND_PANES, b["shown"], ("A", "B"), strict=True):
            self.query_one(f"#{pane_id}", OutputPane).set_title(f"{side} was {names[ref]}")
        shown_a, shown_b = (names[ref] for ref in b["shown"])
        picked = {"a": f"You preferred A ({shown_a})", "b": f"You preferred B ({shown_b})",
                  "tie": "You called it a tie", "both_bad": "You found both bad"}
        self._blind_status(f"A was {shown_a}, B was {shown_b}. {picked[b['screen_choice']]}; "
                           f"saved as label task {message.task_id}. Ctrl+O starts another round.")
        self.refresh_bindings()

    def _blind_status(self, text: str) -> None:
        self.query_one("#blind-status", Static).update(Text(text))
