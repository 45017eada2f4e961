"""The Train screen's right-hand half: the runs list (queue) with cancel and resume, and the
live monitor of the run picked in it. A mixin of TrainScreen, split off to keep files small;
handlers are plain `on_*` methods (a mixin gets no `@on` registration)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from textual import work
from textual.widgets import DataTable

from tuiapp.messages import JobSubmitted, QueueLoaded, RunMetricsReady, RunProgress, WorkFailed
from tuiapp.screens.modals import ConfirmScreen
from tuiapp.screens.train_panels import (
    CANCELLABLE,
    RESUMABLE,
    queue_cells,
    queue_runs,
    run_metrics,
)
from tuiapp.widgets.run_monitor import RunMonitor


def _readable(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


class TrainRunsMixin:
    """Needs from the screen: `queue` (list of runs), `progress_messages`, `store`, `engine`."""

    queue: list[Any]
    progress_messages: int
    _metrics_pending: int | None = None  # run whose curves are being read
    _metrics_again: int | None = None  # run to read again once that read lands

    @property
    def monitor(self) -> RunMonitor:
        return self.query_one("#train-monitor", RunMonitor)

    @property
    def app_progress(self) -> dict[int, dict]:
        return getattr(self.app, "run_progress", {})

    # ---- the queue ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="train-queue", exit_on_error=False)
    def load_queue(self) -> None:
        try:
            runs = queue_runs(self.store)
        except Exception as exc:
            self.post_message(WorkFailed("reading the runs", _readable(exc)))
            return
        self.post_message(QueueLoaded(runs))

    def on_queue_loaded(self, message: QueueLoaded) -> None:
        table = self.query_one("#train-queue", DataTable)
        self.queue = message.runs
        watched = self.monitor.run_id
        with self.prevent(DataTable.RowHighlighted):
            table.clear()
            for run in self.queue:
                table.add_row(*queue_cells(run), key=str(run.id))
        ids = [r.id for r in self.queue]
        if watched in ids:
            with self.prevent(DataTable.RowHighlighted):
                table.move_cursor(row=ids.index(watched), animate=False)
            self.monitor.show_run(self.queue[ids.index(watched)])
        elif self.queue and watched is None:
            # nothing watched yet: the running run, else the newest; the cursor goes with it
            running = [r for r in self.queue if r.status == "running"]
            target = running[0] if running else self.queue[0]
            with self.prevent(DataTable.RowHighlighted):
                table.move_cursor(row=ids.index(target.id), animate=False)
            self.watch_run(target)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "train-queue":
            return
        run = self.selected_run
        if run is not None and run.id != self.monitor.run_id:
            self.watch_run(run)

    @property
    def selected_run(self) -> Any:
        table = self.query_one("#train-queue", DataTable)
        if not self.queue or table.cursor_row is None or table.cursor_row >= len(self.queue):
            return None
        return self.queue[table.cursor_row]

    def watch_run(self, run: Any) -> None:
        self.monitor.show_run(run)
        if run.id in self.app_progress:
            self.monitor.show_progress(self.app_progress[run.id])
        self.refresh_metrics(run.id)

    # ---- live progress --------------------------------------------------------------------

    def on_run_progress(self, message: RunProgress) -> None:
        self.progress_messages += 1
        progress = message.progress
        known = {r.id: r.status for r in self.queue}
        if known.get(message.run_id) != progress.get("status"):
            self.load_queue()  # a new run, or one that changed status
        if self.monitor.run_id is None and progress.get("status") == "running":
            self.watch_run(SimpleNamespace(id=message.run_id, **{
                k: progress.get(k) for k in ("status", "name", "kind", "error")
            }))
            return
        if message.run_id == self.monitor.run_id:
            self.monitor.show_progress(progress)
            self.refresh_metrics(message.run_id)

    def refresh_metrics(self, run_id: int) -> None:
        """Re-read the curves; at most one read in flight, one more queued behind it (progress
        can arrive faster than the store is read, and only the newest picture matters)."""
        if self._metrics_pending is not None:
            self._metrics_again = run_id
            return
        self._metrics_pending = run_id
        self._metrics_again = None
        self.load_metrics(run_id)

    @work(thread=True, group="train-metrics", exit_on_error=False)
    def load_metrics(self, run_id: int) -> None:
        try:
            data = run_metrics(self.store, run_id)
        except Exception as exc:
            self.post_message(RunMetricsReady(run_id, {}))  # frees the slot
            self.post_message(WorkFailed(f"reading run #{run_id}", _readable(exc)))
            return
        self.post_message(RunMetricsReady(run_id, data))

    def on_run_metrics_ready(self, message: RunMetricsReady) -> None:
        again, self._metrics_pending = self._metrics_again, None
        if message.data:
            self.monitor.show_metrics(message.data)
        if again is not None:
            self.refresh_metrics(again)

    # ---- cancel / resume ------------------------------------------------------------------

    def action_cancel_run(self) -> None:
        run = self.selected_run
        if run is None or run.status not in CANCELLABLE:
            self.notify("Pick a queued or running run in the list to cancel.", severity="warning")
            return
        what = (
            "It stops at the next step and writes a last checkpoint, so it can be resumed."
            if run.status == "running"
            else "It leaves the queue without starting."
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.cancel_job(run.id)

        self.app.push_screen(
            ConfirmScreen(f"Cancel run #{run.id} {run.name or ''}? {what}", yes="Cancel run",
                          no="Keep running"),
            answered,
        )

    @work(thread=True, group="train-cancel", exit_on_error=False)
    def cancel_job(self, run_id: int) -> None:
        try:
            self.engine.cancel_run(run_id)
        except Exception as exc:
            self.post_message(WorkFailed(f"cancelling run #{run_id}", _readable(exc)))
            return
        self.post_message(QueueLoaded(queue_runs(self.store)))

    def action_resume_run(self) -> None:
        run = self.selected_run
        if run is None or run.status not in RESUMABLE:
            self.notify("Pick a cancelled, interrupted or failed run in the list to resume.",
                        severity="warning")
            return
        self.resume_job(run.id)

    @work(thread=True, group="train-resume", exit_on_error=False)
    def resume_job(self, run_id: int) -> None:
        try:
            run = self.engine.resume_run(run_id)
        except Exception as exc:
            self.post_message(WorkFailed(f"resuming run #{run_id}", _readable(exc)))
            return
        self.post_message(JobSubmitted(run, started=run.status == "running"))
