"""The live view of one run: status, step/total bar, the numbers that matter, loss curves and the
answers to the sample prompts at each checkpoint — the newest, or any earlier one scrubbed to with
`older_samples()` / `newer_samples()` to see how the answers changed over training.

Two inputs, both applied on the event loop by the screen's message handlers:
`show_progress(progress)` — the poll worker's dict (step, total, ETA, latest loss, tokens/s) —
and `show_metrics(data)` — curves, last values and samples read from the store in a worker.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import ProgressBar, Static

from tuiapp.widgets.loss_chart import LossChart

FINISHED = ("completed", "failed", "cancelled", "interrupted")  # store.models' finished statuses
STATUS_STYLE = {
    "running": "bold #5fafff",
    "queued": "dim",
    "completed": "bold green",
    "failed": "bold red",
    "interrupted": "bold yellow",
    "cancelled": "yellow",
}


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def number(value: Any, spec: str = ".4g") -> str:
    return "–" if value is None else format(value, spec)


@lru_cache(maxsize=256)
def _resume_step(output_dir: str | None) -> int | None:
    """The checkpoint step a resumed run started from, read from the job file the runner wrote
    (`resume_from: …/checkpoint-N`); it never changes for a run, hence the cache."""
    if not output_dir:
        return None
    try:
        job = json.loads((Path(output_dir) / "job.json").read_text(encoding="utf-8"))
        return int(str(job["resume_from"]).rstrip("/").rsplit("-", 1)[-1])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resume_note(run: Any) -> str:
    """'resumed from #4 at step 60' for a run that continues another; '' for a fresh one. A
    resumed run keeps its parent's name, so without this the two read as one run twice."""
    parent = getattr(run, "resumed_from", None)
    if not parent:
        return ""
    step = _resume_step(getattr(run, "output_dir", None))
    return f"resumed from #{parent}" + (f" at step {step}" if step is not None else "")


class RunMonitor(Vertical):
    """`show_progress(dict)`, `show_metrics(dict)`, `show_run(run)`, `clear(text)`."""

    DEFAULT_CSS = """
    RunMonitor { height: 1fr; }
    RunMonitor #mon-head { height: auto; }
    RunMonitor #mon-bar-row { height: 1; }
    RunMonitor #mon-bar { width: auto; }
    RunMonitor #mon-bar Bar { width: 24; }
    RunMonitor #mon-step { width: 1fr; padding-left: 1; }
    RunMonitor #mon-stats { height: auto; }
    RunMonitor #mon-chart { height: 1fr; min-height: 4; }
    RunMonitor #mon-samples { height: auto; max-height: 8; }
    RunMonitor #mon-error { color: $error; height: auto; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.run_id: int | None = None
        self.status: str | None = None
        self.step: int | None = None
        self.total: int | None = None
        self.progress: dict[str, Any] = {}
        self.last_values: dict[str, float] = {}
        self.samples: list[tuple[str, str]] = []
        self.samples_by_step: dict[int, list[tuple[str, str]]] = {}
        self.sample_step: int | None = None  # the checkpoint shown
        self.follow_newest = True  # until the user scrubs back
        self.updates = 0  # progress updates drawn (coalesced messages count once)

    def compose(self) -> ComposeResult:
        yield Static("", id="mon-head")
        yield Static("", id="mon-error")
        with Horizontal(id="mon-bar-row"):
            # No ETA widget of its own: Textual's is wall-clock based; the job's ETA is shown.
            yield ProgressBar(total=None, show_eta=False, id="mon-bar")
            yield Static("", id="mon-step")
        yield Static("", id="mon-stats")
        yield LossChart(id="mon-chart")
        yield Static("", id="mon-samples")

    def on_mount(self) -> None:
        self.clear("No run selected. Start or queue a job, or pick a run in the queue.")

    # ---- what is shown ----------------------------------------------------------------------

    def clear(self, text: str) -> None:
        self.run_id = self.status = self.step = self.total = None
        self.progress, self.last_values, self.samples = {}, {}, []
        self.samples_by_step, self.sample_step, self.follow_newest = {}, None, True
        self.query_one("#mon-head", Static).update(Text(text, style="dim"))
        self.query_one("#mon-error").display = False
        self.query_one("#mon-bar-row").display = False
        self.query_one("#mon-stats", Static).update("")
        self.query_one("#mon-chart", LossChart).set_series([], [])
        self.query_one("#mon-chart").display = False
        self.query_one("#mon-samples", Static).update("")

    def show_run(self, run: Any) -> None:
        """Start watching `run` (a store row): resets what belonged to the previous run."""
        if run.id != self.run_id:
            self.clear("")
            self.run_id = run.id
        self.status = run.status
        self.progress.setdefault("name", run.name)
        self.progress.setdefault("kind", run.kind)
        self.progress["status"] = run.status
        self.progress["error"] = run.error
        self.progress["resumed"] = resume_note(run)
        self.query_one("#mon-bar-row").display = True
        self.query_one("#mon-chart").display = True
        self._draw()

    def show_progress(self, progress: dict[str, Any]) -> None:
        """The poll worker's latest for this run; keys left None keep their last value."""
        if progress.get("run_id") != self.run_id:
            return
        self.updates += 1
        for key, value in progress.items():
            if value is not None or key in ("error",):
                self.progress[key] = value
        self.status = self.progress.get("status", self.status)
        self._draw()

    def show_metrics(self, data: dict[str, Any]) -> None:
        """Curves and last values from the store (`series`, `last`, `samples`, `sample_step`)."""
        if data.get("run_id") != self.run_id:
            return
        series = data.get("series", {})
        self.last_values = dict(data.get("last", {}))
        self.samples_by_step = dict(data.get("samples_by_step") or {})
        if not self.samples_by_step and data.get("sample_step") is not None:
            self.samples_by_step = {data["sample_step"]: list(data.get("samples", []))}
        if self.follow_newest or self.sample_step not in self.samples_by_step:
            self.sample_step = max(self.samples_by_step) if self.samples_by_step else None
        self.query_one("#mon-chart", LossChart).set_series(
            series.get("loss", []), series.get("eval_loss", []), self.total
        )
        if self.step is None and data.get("last_step") is not None:
            self.step = data["last_step"]
        self._draw()
        self._draw_samples()

    def older_samples(self) -> bool:
        return self._scrub(-1)

    def newer_samples(self) -> bool:
        return self._scrub(+1)

    def _scrub(self, delta: int) -> bool:
        """Show the previous/next checkpoint's answers; False when there is none that way."""
        steps = sorted(self.samples_by_step)
        if self.sample_step not in steps:
            return False
        k = steps.index(self.sample_step) + delta
        if not 0 <= k < len(steps):
            return False
        self.sample_step = steps[k]
        self.follow_newest = k == len(steps) - 1
        self._draw_samples()
        return True

    def _draw_samples(self) -> None:
        self.samples = list(self.samples_by_step.get(self.sample_step, [])) \
            if self.sample_step is not None else []
        samples = Text()
        if self.samples:
            steps = sorted(self.samples_by_step)
            k = steps.index(self.sample_step) + 1
            samples.append(f"samples at step {self.sample_step}", style="bold")
            if len(steps) > 1:
                samples.append(f"  (checkpoint {k} of {len(steps)}"
                               f"{'' if self.follow_newest else ', not the newest'}"
                               " · alt+←/→ older/newer)", style="dim")
            samples.append("\n")
            for i, (prompt, output) in enumerate(self.samples):
                # one line a sample: newlines in a prompt or answer shown as ⏎
                samples.append(prompt.replace("\n", " ⏎ "), style="bold")
                samples.append(" → ")
                samples.append(
                    output.replace("\n", " ⏎ ") if output else "(empty)",
                    style="" if output else "dim",
                )
                if i < len(self.samples) - 1:
                    samples.append("\n")
        else:
            samples.append("no samples yet (answers appear at each checkpoint)", style="dim")
        self.query_one("#mon-samples", Static).update(samples)

    def _draw(self) -> None:
        p = self.progress
        step, total = p.get("step"), p.get("total_steps")
        if step is not None:
            self.step = step
        if total:
            self.total = total
        status = self.status or "?"
        head = Text()
        head.append(f"run #{self.run_id} ", style="bold")
        head.append(f"{p.get('name') or p.get('kind') or ''} · ")
        head.append(status, style=STATUS_STYLE.get(status, ""))
        if p.get("resumed"):
            head.append(f" · {p['resumed']}", style="italic")
        if status == "running" and p.get("phase"):
            head.append(f" · {p['phase']}", style="dim")
        self.query_one("#mon-head", Static).update(head)
        error = p.get("error")
        box = self.query_one("#mon-error", Static)
        box.display = bool(error) and status != "running"
        box.update(Text(f"error: {error}") if error else "")
        bar = self.query_one("#mon-bar", ProgressBar)
        total = self.total
        finished = status in FINISHED
        if total is None and status == "completed" and self.step:
            total = self.step  # reopened after the run: its last step was the end
        # an unknown total pulses ("still working"); a run that has ended must not
        bar.display = total is not None or not finished
        bar.update(total=total, progress=self.step or 0)
        where = f"step {self.step if self.step is not None else '–'}"
        if total:
            where += f" / {total}"
        elif finished and self.step is not None:
            where += f" ({status}; total not recorded)"
        self.query_one("#mon-step", Static).update(where)
        last = self.last_values
        loss = p.get("loss", last.get("loss"))
        eval_loss = p.get("eval_loss", last.get("eval_loss"))
        tps = p.get("tokens_per_s", last.get("tokens_per_s"))
        memory = last.get("memory_mb")
        eta = clock(p.get("eta_s")) if status == "running" else "–"
        cells = [
            [("loss", number(loss)), ("eval", number(eval_loss)),
             ("lr", number(last.get("learning_rate"), ".2e")),
             ("gnorm", number(last.get("grad_norm"), ".3g"))],
            [("tok/s", number(tps, ",.0f")), ("ETA", eta),
             ("mem", "–" if memory is None else f"{memory:,.0f} MiB"),
             ("epoch", number(last.get("epoch"), ".2f"))],
        ]
        # preference runs (DPO and its kin) log TRL's implicit rewards: the margin between
        # chosen and rejected and how often chosen wins say more than the loss alone
        margin, accuracy = last.get("rewards/margins"), last.get("rewards/accuracies")
        if margin is not None or accuracy is not None:
            cells.append([("margin", number(margin, ".3g")),
                          ("acc", "–" if accuracy is None else f"{accuracy:.0%}"),
                          ("chosen", number(last.get("rewards/chosen"), ".3g")),
                          ("rej", number(last.get("rewards/rejected"), ".3g"))])
        stats = Text()
        for i, row in enumerate(cells):
            for j, (label, value) in enumerate(row):
                stats.append(f"{label} ", style="bold")
                # 13 cells a value: four fit the narrowest monitor (52 columns)
                stats.append(value.ljust(12 - len(label)) if j < len(row) - 1 else value)
            if i < len(cells) - 1:
                stats.append("\n")
        self.query_one("#mon-stats", Static).update(stats)
