"""The Train screen's pre-flight and start/queue: measuring the job in a thread worker and
submitting it, with the refusal shown beside the form. A mixin of TrainScreen, split off to keep
files small; handlers are plain `on_*` methods (a mixin gets no `@on` registration)."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual import work
from textual.widgets import Static

from tuiapp.messages import JobRefused, JobSubmitted, PreflightReady, WorkFailed
from tuiapp.screens.train_panels import preflight_text


def _readable(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


def _key(config: dict) -> str:
    return json.dumps(config, sort_keys=True, default=str)


class TrainSubmitMixin:
    """Pre-flight and submit for TrainScreen (reads its config, engine and buttons)."""

    # ---- pre-flight -----------------------------------------------------------------------

    def action_preflight(self) -> None:
        if self.config is None:
            self.notify("Fix the fields marked in red first.", severity="warning")
            return
        if self.preflight_running:
            return
        self.preflight_running = True
        self._update_buttons()
        self.query_one("#train-preflight", Static).update(
            Text("Checking: reading the model config and measuring the data…", "dim")
        )
        self.run_preflight(self.config)

    @work(thread=True, exclusive=True, group="train-preflight", exit_on_error=False)
    def run_preflight(self, config: Any) -> None:
        try:
            report = self.engine.preflight(config)
        except Exception as exc:
            self.post_message(WorkFailed("pre-flight", _readable(exc)))
            self.post_message(PreflightReady(config.to_dict(), {}))
            return
        self.post_message(PreflightReady(config.to_dict(), report))

    def on_preflight_ready(self, message: PreflightReady) -> None:
        self.preflight_running = False
        self.preflight_report = message.report or None
        self.preflight_key = _key(message.config) if message.report else None
        self._show_preflight()
        self._update_buttons()

    def _show_preflight(self) -> None:
        panel = self.query_one("#train-preflight", Static)
        if self.preflight_report is None:
            panel.update(Text("Not checked yet: ^t measures the job before it runs.", "dim"))
            return
        stale = self.preflight_key != self.config_key
        panel.update(preflight_text(self.preflight_report, stale=stale))

    # ---- start / queue --------------------------------------------------------------------

    def action_start(self) -> None:
        self._submit(start=True)

    def action_queue(self) -> None:
        self._submit(start=False)

    def _submit(self, start: bool) -> None:
        if self.config is None:
            self.notify("Fix the fields marked in red first.", severity="warning")
            return
        if self.refused:
            self.notify("Pre-flight refused this job; see the reasons on the right.",
                        severity="error")
            return
        if self.submitting:
            return
        self.submitting = True
        self._update_buttons()
        self.submit_job(self.config, start)

    @work(thread=True, group="train-submit", exit_on_error=False)
    def submit_job(self, config: Any, start: bool) -> None:
        try:
            run = self.engine.submit(config, start=start)
        except Exception as exc:
            report = getattr(exc, "report", None)
            if isinstance(report, dict):
                self.post_message(PreflightReady(config.to_dict(), report))
                self.post_message(JobRefused(report))
            else:
                self.post_message(WorkFailed("starting the job", _readable(exc)))
                self.post_message(JobRefused({}))
            return
        self.post_message(JobSubmitted(run, started=run.status == "running"))

    def on_job_refused(self, message: JobRefused) -> None:
        self.submitting = False
        self._update_buttons()
        if message.report:
            self.notify("Pre-flight refused the job; see the reasons on the right.",
                        severity="error", timeout=8)

    def on_job_submitted(self, message: JobSubmitted) -> None:
        self.submitting = False
        self._update_buttons()
        run = message.run
        what = "started" if message.started else "queued"
        self.notify(f"run #{run.id} {what}")
        self.watch_run(run)
        self.load_queue()
