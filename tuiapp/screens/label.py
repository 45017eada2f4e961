"""Label: pairwise preference labelling by keyboard, durable to the keystroke.

One prompt, two answers (models hidden, sides drawn per task), one key per judgement. A key
commits the label through the store (synchronous=FULL) in a thread worker; only when the
`LabelSaved` message arrives does the screen say "saved" and draw the next pair, so nothing shown
as saved can be lost by a crash. Keys pressed while a save is in flight are queued, not dropped.
Undo walks back through this session's labels (then the task set's, newest first); the undone
pair comes back to the front. Some labelled pairs come back sides swapped to measure
self-agreement. A held-out prompt shows its reference answer (references.py)."""

from __future__ import annotations

import gc
import random
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from tuiapp.engine.label.tasks import LabelWriter, display_swapped, make_repeat
from tuiapp.messages import (
    LabelFeederEnded,
    LabelQueueLoaded,
    LabelSaved,
    LabelTaskReady,
    LabelUndone,
    WorkFailed,
)
from tuiapp.screens.areas import AreaScreen
from tuiapp.screens.compare_blind import to_candidate_order
from tuiapp.screens.label_export import LabelExportMixin
from tuiapp.screens.label_modals import (
    EditAnswerScreen,
    NewTasksScreen,
    PairText,
    new_task_defaults,
)
from tuiapp.screens.label_review import LabelReviewMixin
from tuiapp.screens.label_stats import LabelStatsPanel
from tuiapp.screens.references import reference_index, reference_under, references_of
from tuiapp.widgets.preference_bar import PreferenceBar

SAID = {"a": "A is better", "b": "B is better", "tie": "a tie", "both_bad": "both bad",
        "skip": "skipped"}
KEYS_LINE = ("1/← A better · 2/→ B better · t tie · b both bad · s skip · e/E rewrite A/B · "
             "u undo · n new tasks · x export · d judge disagreements · ? help")
COMMANDS = (
    ("tuneloop labels new --models A,B --prompts FILE", "make label tasks from two models"),
    ("tuneloop labels export [--task-set S]", "labels → an immutable preference dataset version"),
    ("tuneloop labels judge --judge REF --task-set S", "an AI judge labels by a constitution"),
    ("tuneloop labels stats", "counts, agreement (you vs judge too) and win-rates"),
)


@dataclass(frozen=True)
class Pair:
    """What is on screen. `task` is None for a repeat not yet saved (made when labelled)."""

    task: Any
    prompt: str
    system: str | None
    candidates: list
    swapped: bool  # candidate b shown as A
    repeat_of: Any = None
    review: str | None = None  # a judge disagreement under review: what the judge said

    def shown(self) -> tuple[dict, dict]:
        a, b = self.candidates[0], self.candidates[1]
        return (b, a) if self.swapped else (a, b)


def pair_for(task: Any) -> Pair:
    return Pair(task, task.prompt, task.system, task.candidates, display_swapped(task))


class LabelScreen(LabelExportMixin, LabelStatsPanel, LabelReviewMixin, AreaScreen):
    AREA = "label"
    AREA_TITLE = "Label"
    BINDINGS = [
        Binding("1,left", "choose('a')", "A better", id="label.a"),
        Binding("2,right", "choose('b')", "B better", id="label.b"),
        # the keys line under the answers shows every key; the footer keeps the main ones
        Binding("t", "choose('tie')", "Tie", id="label.tie", show=False),
        Binding("b", "choose('both_bad')", "Both bad", id="label.both_bad", show=False),
        Binding("s", "choose('skip')", "Skip", id="label.skip", show=False),
        Binding("e", "edit('A')", "Rewrite A", id="label.edit_a", show=False),
        Binding("E", "edit('B')", "Rewrite B", id="label.edit_b", show=False),
        Binding("u", "undo", "Undo", id="label.undo"),
        Binding("n", "new_tasks", "New tasks", id="label.new", show=False),
        Binding("x", "export_labels", "Export as dataset", id="label.export"),
        Binding("d", "review_disagreements", "Judge disagreements", id="label.disagreements",
                show=False),  # in the keys line; the footer has no room at 100 columns
        Binding("ctrl+r", "refresh", "Refresh", id="label.refresh", show=False),
    ]
    DEFAULT_CSS = """
    #label-main { width: 1fr; padding: 0 1; }
    #label-status { height: 2; }
    #label-prompt { height: 6; border: round $panel; padding: 0 1; }
    #label-answers { height: 1fr; }
    .label-answer { width: 1fr; height: 1fr; border: round $panel; padding: 0 1; }
    #label-keys { height: 1; color: $text-muted; }
    #label-side { width: 44; border-left: vkey $panel; padding: 0 1; }
    #label-side .section-title { text-style: bold; color: $accent; margin-top: 1; }
    #label-choices { height: auto; max-height: 7; }
    """
    # Share of labels followed by a repeat of an earlier pair (sides swapped).
    repeat_share = 0.1
    # Seconds between stats refreshes while labelling (the bootstrap is not free).
    stats_gap = 0.5
    stats_idle = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.task_set: str | None = None
        self.references: dict[str, str] = {}  # held-out prompt → reference answer (shown)
        self.queue: deque[Pair] = deque()
        self.current: Pair | None = None
        self.history: list[tuple[Any, Pair]] = []  # (label event, pair) of this session
        self.saving = False
        self.pending: deque[tuple[str, Any]] = deque()
        self.shown_at = 0.0
        self.drawn = 0  # pairs drawn so far (tests and the benchmark wait on it)
        self.drawn_at = 0.0
        self.last_saved: tuple[int, int] | None = None  # (task id, event id) shown as saved
        self.last_undone: int | None = None  # label event id shown as undone
        self.session_labels = 0
        self.session_ms = 0
        self.repeated: set[int] = set()
        self.rng = random.Random(0)
        self.feeder: Any = None
        self._early: list[Any] = []
        self.facts: dict[str, str] = {}
        self.stats: dict | None = None
        self.loaded = False
        self._stats_running = False
        self._stats_dirty = False
        self._last_key_at = 0.0
        self._gc_thresholds: tuple[int, int, int] | None = None

    def compose_body(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="label-main"):
                # Fixed sizes: drawing the next pair repaints these boxes, never re-lays out
                yield Static("", id="label-status")
                yield PairText(id="label-prompt")
                with Horizontal(id="label-answers"):
                    for side in ("a", "b"):
                        answer = PairText(id=f"label-text-{side}", classes="label-answer")
                        answer.border_title = side.upper()
                        yield answer
                yield Static(KEYS_LINE, id="label-keys")
            side = VerticalScroll(id="label-side")
            side.can_focus = False
            with side:
                yield Static("", id="facts", classes="facts")
                yield Static("", id="label-agreement")
                yield Static("Labels by key pressed (this set)", classes="section-title")
                table = DataTable(id="label-choices", cursor_type="none", zebra_stripes=True)
                table.can_focus = False
                yield table
                yield Static("No labels yet.", id="label-choices-empty", classes="empty")
                yield Static("Win-rates", classes="section-title")
                yield PreferenceBar(id="label-winrates")
                yield Static(self._commands_text(), classes="commands")

    @staticmethod
    def _commands_text() -> Text:
        text = Text()
        for command, what in COMMANDS:
            text.append(f"$ {command}\n", style="bold")
            text.append(f"  {what}\n")
        text.rstrip()
        return text

    def on_mount(self) -> None:
        self._boxes = [self.query_one(f"#{id_}", PairText)
                       for id_ in ("label-prompt", "label-text-a", "label-text-b")]
        self._status_line = self.query_one("#label-status", Static)
        # Saves and undos run in order on one thread with one prepared connection (runs in
        # the writer thread: `_save`, `_undo`; they post LabelSaved / LabelUndone when committed)
        self.writer = LabelWriter(on_error=lambda exc: self.post_message(
            WorkFailed("saving a label", str(exc) or type(exc).__name__)))
        self.query_one("#label-choices", DataTable).add_columns("key", "labels")
        self.load_queue()
        self.set_interval(self.stats_gap, self._stats_tick)

    def on_unmount(self) -> None:
        if self.feeder is not None:
            self.feeder.stop()
        self.writer.close(wait=None)
        self._restore_gc()

    def action_refresh(self) -> None:
        self.load_queue()

    # ---- the queue -----------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="label-queue", exit_on_error=False)
    def load_queue(self, task_set: str | None = None) -> None:
        """The task set to label (the given one, else the newest with unlabelled tasks, blind
        rounds aside) and its unlabelled tasks."""
        try:
            store = self.store
            if task_set is None:
                open_ = [t for t in store.list_label_tasks(unlabelled_only=True)
                         if t.task_set != "blind"]
                task_set = open_[-1].task_set if open_ else None
            tasks = store.list_label_tasks(task_set, unlabelled_only=True) if task_set else []
            if task_set is None:  # tasks without a set
                tasks = [t for t in store.list_label_tasks(unlabelled_only=True)
                         if t.task_set is None]
            self.references = reference_index(store)  # set before the handler below draws
        except Exception as exc:
            self.post_message(WorkFailed("reading label tasks", str(exc) or type(exc).__name__))
            return
        self.post_message(LabelQueueLoaded(task_set, tasks))

    # ---- garbage collection off the critical path -----------------------------------------
    # A full collection walks every object and paused the event loop 30-150 ms every few
    # hundred labels — the tail of keypress-to-next-pair. What is alive once the queue is
    # loaded (app, screens, libraries, the tasks) is frozen out of collections for good; while
    # this screen is shown the full collections run in pauses of typing (`_stats_tick`), not
    # on a keypress. Young collections run as usual; leaving the screen restores the thresholds.

    def on_screen_resume(self) -> None:
        if self._gc_thresholds is None:
            self._gc_thresholds = gc.get_threshold()
            young, middle, _ = self._gc_thresholds
            gc.set_threshold(young, middle, 1_000_000)

    def on_screen_suspend(self) -> None:
        self._restore_gc()

    def _restore_gc(self) -> None:
        if self._gc_thresholds is not None:
            gc.set_threshold(*self._gc_thresholds)
            self._gc_thresholds = None

    def _collect_if_due(self) -> None:
        if self._gc_thresholds is not None and gc.get_count()[2] >= self._gc_thresholds[2]:
            gc.collect()

    def on_label_queue_loaded(self, message: LabelQueueLoaded) -> None:
        gc.freeze()
        self.task_set = message.task_set
        self.reviewing = False
        self.queue = deque(pair_for(t) for t in message.tasks if len(t.candidates) >= 2)
        self.current = None
        self.loaded = True
        self._draw_next()
        self.refresh_stats()

    def _draw_next(self) -> None:
        self.current = self.queue.popleft() if self.queue else None
        self._draw()

    def _draw(self) -> None:
        pair = self.current
        prompt, text_a, text_b = self._boxes
        if pair is None:
            waiting = self.feeder is not None and self.feeder.running
            prompt.show("Generating the next pair…" if waiting else
                        "Nothing to label. Press n to make label tasks from two models, "
                        "or run the command on the right.")
            text_a.show("")
            text_b.show("")
        else:
            body = Text()
            if pair.review:
                body.append(f"{pair.review}\n", style="italic yellow")
            if pair.system:
                body.append(f"system: {pair.system}\n", style="dim")
            body.append(pair.prompt)
            body.append_text(reference_under(self.references, pair.prompt))
            prompt.show(body)
            shown_a, shown_b = pair.shown()
            text_a.show(shown_a["output"])
            text_b.show(shown_b["output"])
        self.shown_at = self.drawn_at = time.perf_counter()
        self.drawn += 1

    # ---- keys ----------------------------------------------------------------------------

    def action_choose(self, screen_choice: str, edited: str | None = None) -> None:
        self._last_key_at = time.perf_counter()
        if self.saving:
            self.pending.append(("choose", (screen_choice, edited)))
            return
        pair = self.current
        if pair is None:
            self._status(Text("Nothing to label here yet."))
            return
        self.saving = True
        elapsed = int((time.perf_counter() - self.shown_at) * 1000)
        choice = to_candidate_order(screen_choice, pair.swapped)
        self.writer.submit(self._save, pair, choice, edited, elapsed)

    def _save(self, pair: Pair, choice: str, edited: str | None, elapsed_ms: int) -> None:
        try:
            task = pair.task or make_repeat(self.store, pair.repeat_of, pair.swapped)
            if pair.review:
                self.replace_reviewed(task)
            event = self.store.add_label(task.id, choice, swapped=pair.swapped, edited=edited,
                                         elapsed_ms=elapsed_ms)
        except Exception as exc:
            self.post_message(LabelSaved(pair, None, str(exc) or type(exc).__name__))
            return
        self.post_message(LabelSaved(pair, task, event))

    def on_label_saved(self, message: LabelSaved) -> None:
        self.saving = False
        pair = message.pair
        if message.task is None:  # not saved: say why, move on (e.g. labelled elsewhere)
            self._status(Text(f"Not saved: {message.event}", style="bold red"))
            self._draw_next()
            self._run_pending()
            return
        event = message.event
        pair = replace(pair, task=message.task)
        self.history.append((event, pair))
        self.last_saved = (message.task.id, event.id)
        self.session_labels += 1
        self.session_ms += event.elapsed_ms or 0
        if self.feeder is not None and pair.repeat_of is None:
            self.feeder.consumed()
        self._maybe_repeat(pair, event)
        self._draw_next()
        self._status(self._saved_line(pair, event))
        self._stats_dirty = True
        self._run_pending()

    def _saved_line(self, pair: Pair, event: Any) -> Text:
        shown_a, shown_b = pair.shown()
        said = SAID[to_candidate_order(event.choice, pair.swapped)]
        if event.edited:
            said = f"your rewrite beats {'A' if said.startswith('A') else 'B'}"
        text = Text()
        text.append(f"✓ saved task {pair.task.id}: {said}", style="bold green")
        text.append(f" — A was {shown_a['model_ref']}, B was {shown_b['model_ref']}")
        if pair.repeat_of is not None:
            text.append(f" (repeat of task {pair.repeat_of.id})", style="dim")
        pace = (f" · {60000 * self.session_labels / self.session_ms:.1f} labels/min"
                if self.session_ms else "")
        text.append(f"\n{self.session_labels} labelled this session · {len(self.queue)} "
                    f"more in the queue{pace}", style="dim")
        return text

    def _maybe_repeat(self, pair: Pair, event: Any) -> None:
        if self.rng.random() >= self.repeat_share:
            return
        done = [(e, p) for e, p in self.history if p.repeat_of is None
                and e.choice != "skip" and p.task.id not in self.repeated]
        if not done:
            return
        original_event, original = done[self.rng.randrange(len(done))]
        self.repeated.add(original.task.id)
        self.queue.appendleft(Pair(None, original.prompt, original.system, original.candidates,
                                   not original_event.swapped, repeat_of=original.task))

    def action_undo(self) -> None:
        self._last_key_at = time.perf_counter()
        if self.saving:
            self.pending.append(("undo", None))
            return
        self.saving = True
        if self.history:
            event, pair = self.history.pop()
            self.writer.submit(self._undo, event.id, pair)
        else:
            self.writer.submit(self._undo, None, None)

    def _undo(self, event_id: int | None, pair: Pair | None) -> None:
        try:
            if event_id is not None:
                undo = self.store.undo_label(event_id)
            else:
                undo = self.store.undo_label(task_set=self.task_set)
                if undo is not None:
                    task = self.store.get_label_task(undo.task_id)
                    label = self.store.get_label_event(undo.undoes_event_id)
                    pair = replace(pair_for(task), swapped=label.swapped)
        except Exception as exc:
            self.post_message(WorkFailed("undo", str(exc) or type(exc).__name__))
            self.post_message(LabelUndone(None, None))
            return
        self.post_message(LabelUndone(undo, pair))

    def on_label_undone(self, message: LabelUndone) -> None:
        self.saving = False
        if message.undo is None:
            if message.pair is None:
                self._status(Text("Nothing to undo."))
        else:
            self.last_undone = message.undo.undoes_event_id
            if self.current is not None:
                self.queue.appendleft(self.current)
            self.current = message.pair
            self._draw()
            self.session_labels = max(0, self.session_labels - 1)
            self._status(Text(f"↶ undid the label of task {message.pair.task.id}; label it again",
                              style="bold yellow"))
            self._stats_dirty = True
        self._run_pending()

    def _run_pending(self) -> None:
        while self.pending and not self.saving:
            kind, arg = self.pending.popleft()
            if kind == "choose":
                self.action_choose(*arg)
            else:
                self.action_undo()

    def action_edit(self, side: str) -> None:
        pair = self.current
        if pair is None or self.saving:
            return
        shown = pair.shown()[0 if side == "A" else 1]

        def done(text: str | None) -> None:
            if text is not None and self.current is pair:
                self.action_choose("a" if side == "A" else "b", edited=text)

        self.app.push_screen(EditAnswerScreen(side, shown["output"]), done)

    # ---- new tasks: generated ahead in the background ------------------------------------

    @work(thread=True, exclusive=True, group="label-new", exit_on_error=False)
    def action_new_tasks(self) -> None:
        defaults = new_task_defaults(self.engine, self.store)  # reads the store: off the loop
        self.app.call_from_thread(self._ask_new_tasks, defaults)

    def _ask_new_tasks(self, defaults: dict) -> None:
        def done(spec: dict | None) -> None:
            if spec:
                self._start_feeder(spec)

        self.app.push_screen(NewTasksScreen(defaults), done)

    @work(thread=True, group="label-feeder", exit_on_error=False)
    def _start_feeder(self, spec: dict) -> None:
        if self.feeder is not None:
            self.feeder.stop()
        box: dict[str, Any] = {}
        self.references.update(references_of(spec["prompts"], self.store))  # the named set's
        try:
            box["feeder"] = self.engine.start_label_feeder(
                self.store, spec["refs"], spec["prompts"], task_set=spec.get("task_set"),
                n=spec.get("n"),
                on_task=lambda task: self.post_message(LabelTaskReady(task, box.get("feeder"))),
                on_done=lambda made: self.post_message(LabelFeederEnded(box.get("feeder"), made)),
                on_error=lambda err: self.post_message(
                    LabelFeederEnded(box.get("feeder"), 0, err)))
        except Exception as exc:
            self.post_message(WorkFailed("new label tasks", str(exc) or type(exc).__name__))
            return
        self.post_message(LabelTaskReady(None, box["feeder"]))

    def on_label_task_ready(self, message: LabelTaskReady) -> None:
        task = message.task
        if task is None:  # the feeder started: its task set takes over the queue
            self.feeder = message.feeder
            self.task_set = self.feeder.task_set
            early, self._early = [t for t in self._early if t.task_set == self.task_set], []
            self.queue = deque(pair_for(t) for t in early)
            self.current = None
            if not self.saving:
                self._draw_next()
            self._status(Text(f"Generating {self.feeder.total} pairs for {self.task_set!r}, "
                              f"a few ahead of you…"))
            return
        if self.feeder is None or task.task_set != self.task_set:
            self._early.append(task)  # made before the start message arrived
            return
        self.queue.append(pair_for(task))
        if self.current is None and not self.saving:
            self._draw_next()
        self._stats_dirty = True

    def on_label_feeder_ended(self, message: LabelFeederEnded) -> None:
        if message.error:
            self.notify(f"making label tasks stopped: {message.error}", severity="error",
                        timeout=10)
        if self.current is None:
            self._draw()

    # ---- stats panel ---------------------------------------------------------------------

    def _status(self, text: Text) -> None:
        self._status_line.update(text, layout=False)  # two fixed lines: no re-layout

    def on_work_failed(self, message: WorkFailed) -> None:
        self.notify(f"{message.what} failed: {message.error}", severity="error", timeout=8)
