"""The Label screen's statistics panel: counts, pace, self-agreement, choices and win-rates.

A mixin for `LabelScreen`: the panel reloads in a thread worker only during a pause in the
typing (labels arriving fast would otherwise compete with their own saves), and draws from one
`LabelStatsReady` message.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual import work
from textual.widgets import DataTable, Static

from tuiapp.messages import LabelStatsReady, WorkFailed
from tuiapp.widgets.preference_bar import PreferenceBar

# "Labels by key pressed": A/B as shown on screen (sides are drawn per task, so the stored
# candidate order a/b would not match what the labeller pressed)
KEYS = ("A", "B", "rewrite A", "rewrite B", "tie", "both bad", "skip")


class LabelStatsPanel:
    """Needs from the screen: engine, store, task_set, saving, stats_idle, the `_last_key_at`,
    `_stats_dirty` / `_stats_running` flags, the session counters and `_collect_if_due`."""

    def _stats_tick(self) -> None:
        # The panel (bootstrap included) waits for a pause in the typing: while labels come
        # fast it would only compete with the saves; the status line keeps the count meanwhile.
        idle = time.perf_counter() - self._last_key_at >= self.stats_idle
        if idle and not self.saving:
            self._collect_if_due()
        if self._stats_dirty and not self._stats_running and idle:
            self.refresh_stats()

    def refresh_stats(self) -> None:
        self._stats_dirty = False
        self._last_key_at = 0.0
        self._stats_running = True
        self.load_stats(self.task_set)

    @work(thread=True, exclusive=True, group="label-stats", exit_on_error=False)
    def load_stats(self, task_set: str | None) -> None:
        try:
            stats_of = getattr(self.engine, "label_stats", None)
            if stats_of is None:  # an engine without labelling still gets the store's counts
                from tuiapp.engine.label import tasks as labels

                stats_of = labels.stats
            stats = stats_of(self.store, task_set)
            live = len(self.store.live_labels())
            all_tasks = len(self.store.list_label_tasks())
            # Counts a person can add up: this set's pairs, its repeats, the rest of the store
            elsewhere = live - stats["labelled"] - stats["repeats"]
            facts = {"task set": task_set or "–",
                     "this set": f"{stats['labelled']}/{stats['tasks']} pairs labelled · "
                                 f"{stats['remaining']} to go",
                     "repeats": f"{stats['repeats']} re-shown pairs labelled (self-agreement "
                                "only)",
                     "all sets": f"{live} live labels = {stats['labelled']} + {stats['repeats']} "
                                 f"repeats + {elsewhere} in other sets · {all_tasks} tasks"}
        except Exception as exc:
            self.post_message(WorkFailed("label stats", str(exc) or type(exc).__name__))
            self.post_message(LabelStatsReady(task_set, {}, {}, []))
            return
        by = stats.get("by_key", {})
        choices = [(k, by[k]) for k in KEYS if by.get(k)]
        self.post_message(LabelStatsReady(task_set, stats, facts, choices))

    def on_label_stats_ready(self, message: LabelStatsReady) -> None:
        self._stats_running = False
        if not message.facts:
            return
        self.stats, st = message.stats, message.stats
        facts = dict(message.facts)
        if self.session_labels and self.session_ms:
            facts["pace"] = (f"{60000 * self.session_labels / self.session_ms:.1f}/min · "
                             f"{self.session_ms / self.session_labels / 1000:.1f} s/label")
        elif st.get("labels_per_minute"):
            facts["pace"] = f"{st['labels_per_minute']:.1f}/min"
        self.facts = facts
        text = Text()
        for label, value in facts.items():
            text.append(f"{label}: ", style="bold")
            text.append(f"{value}\n")
        text.rstrip()
        self.query_one("#facts", Static).update(text)
        self.query_one("#label-agreement", Static).update(
            agreement_text(st["agreement"], st.get("judge")))
        table = self.query_one("#label-choices", DataTable)
        table.clear()
        for choice, count in message.choices:
            table.add_row(choice, str(count))
        table.display = bool(message.choices)
        self.query_one("#label-choices-empty").display = not message.choices
        self.query_one("#label-winrates", PreferenceBar).show(st["win_rates"])


def agreement_text(ag: dict, judge: dict | None = None) -> Text:
    """The label-noise meter: self-agreement on repeated pairs as a bar; below it, where the AI
    judge labelled this set, its agreement with you and its position-flip rate."""
    text = Text()
    text.append("Self-agreement ", style="bold")
    if not ag.get("pairs"):
        text.append("– (no repeats labelled yet)", style="dim")
    else:
        rate = ag["rate"]
        filled = round(rate * 20)
        text.append("█" * filled, style="#87d75f")
        text.append("█" * (20 - filled), style="#ff5f5f")
        text.append(f" {ag['agree']}/{ag['pairs']} ({rate:.0%})\nlabel noise ≈ {ag['noise']:.0%}")
    if judge and judge.get("judged"):
        text.append("\nYou vs judge ", style="bold")
        if judge["compared"]:
            kappa = "–" if judge["kappa"] is None else f"{judge['kappa']:+.2f}"
            text.append(f"{judge['agree']}/{judge['compared']} agree "
                        f"({judge['raw_agreement']:.0%}), κ {kappa}; "
                        f"{len(judge['disagreements'])} to review (d)")
        else:
            text.append("– (label pairs the judge labelled)", style="dim")
        text.append(f"\njudge flipped with the sides on {judge['flips']}/{judge['judged']}")
    return text
