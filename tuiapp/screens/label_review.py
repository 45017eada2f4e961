"""The Label screen's review of judge disagreements: `d` queues the pairs of this task set where
the AI judge (`tuneloop labels judge`) and the person chose differently, each shown with what
the judge said; a key there replaces the person's earlier label (undo + new label, both in the
log), so a second look can change the mind. `d` again goes back to the unlabelled queue.

A mixin for `LabelScreen` (needs store, task_set, queue, current, saving, _draw_next, _status).
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import Any

from rich.text import Text
from textual import work

from tuiapp.messages import LabelReviewLoaded, WorkFailed

SHOWN = {"a": "A", "b": "B", "tie": "a tie", "both_bad": "both bad", "skip": "skip"}


def _as_shown(choice: str, swapped: bool) -> str:
    if choice in ("a", "b") and swapped:
        choice = "b" if choice == "a" else "a"
    return SHOWN.get(choice, choice)


def review_note(pair: Any, disagreement: dict) -> str:
    """"judge: B better (principle 1) — reason · you: A" in the sides as shown."""
    judge = _as_shown(disagreement["judge"], pair.swapped)
    judge = f"{judge} better" if judge in ("A", "B") else judge
    if disagreement.get("consistent") is False:
        judge += " (it flipped with the sides)"
    cited = f" (principle {disagreement['principle']})" if disagreement.get("principle") else ""
    why = f" — {disagreement['rationale']}" if disagreement.get("rationale") else ""
    return f"judge: {judge}{cited}{why} · you: {_as_shown(disagreement['human'], pair.swapped)}"


class LabelReviewMixin:
    reviewing = False

    def action_review_disagreements(self) -> None:
        if self.saving:
            return
        if self.reviewing:  # back to the pairs still to label
            self.reviewing = False
            self.load_queue(self.task_set)
            return
        self.load_disagreements(self.task_set)

    @work(thread=True, exclusive=True, group="label-queue", exit_on_error=False)
    def load_disagreements(self, task_set: str | None) -> None:
        from tuiapp.engine.label.agreement import judge_vs_human

        try:
            found = judge_vs_human(self.store, task_set)["disagreements"]
            tasks = [(self.store.get_label_task(d["task_id"]), d) for d in found]
        except Exception as exc:
            self.post_message(WorkFailed("reading disagreements", str(exc) or
                                         type(exc).__name__))
            return
        self.post_message(LabelReviewLoaded(task_set, tasks))

    def on_label_review_loaded(self, message: LabelReviewLoaded) -> None:
        from tuiapp.screens.label import pair_for

        if not message.tasks:
            self._status(Text("No disagreements with the judge in this task set (run "
                              "`tuneloop labels judge`, then label the same pairs)."))
            return
        self.reviewing = True
        pairs = []
        for task, disagreement in message.tasks:
            pair = pair_for(task)
            pairs.append(replace(pair, review=review_note(pair, disagreement)))
        self.queue = deque(pairs)  # `d` again reloads the unlabelled pairs from the store
        if not self.saving:  # else the save in flight draws the first of them when it lands
            self._draw_next()
        self._status(Text(f"Reviewing {len(pairs)} pairs where the judge disagreed with you; "
                          "a key replaces your label · d: back to labelling",
                          style="bold yellow"))

    def replace_reviewed(self, task: Any) -> None:
        """Before a label on a reviewed pair (writer thread): the person's earlier label goes."""
        old = self.store.live_label(task.id)
        if old is not None:
            self.store.undo_label(old.id)
