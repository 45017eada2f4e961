"""Messages that workers post to screens.

Workers run in threads and never touch widgets; they post one of these and the screen's handler
updates the widgets on the event loop. Every message carries the path or id it is about so a
handler can drop results that arrive after the user has moved on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.message import Message


class WorkFailed(Message):
    """A worker hit an error; `what` says which step, `error` is a sentence for people."""

    def __init__(self, what: str, error: str, path: Path | None = None) -> None:
        super().__init__()
        self.what = what
        self.error = error
        self.path = path


class FilesListed(Message):
    """The dataset files the picker can offer, plus the paths already imported as versions."""

    def __init__(self, files: list[Path], imported: dict[Path, int]) -> None:
        super().__init__()
        self.files = files
        self.imported = imported


class ValidationReady(Message):
    """`engine.validate(path, kind)` finished."""

    def __init__(self, path: Path, report: Any) -> None:
        super().__init__()
        self.path = path
        self.report = report


class StatsReady(Message):
    """`engine.stats(report, max_length=...)` finished."""

    def __init__(self, path: Path, stats: dict) -> None:
        super().__init__()
        self.path = path
        self.stats = stats


class ExamplesReady(Message):
    """`engine.render_examples(report)` finished."""

    def __init__(self, path: Path, examples: list[str]) -> None:
        super().__init__()
        self.path = path
        self.examples = examples


class PreviewReady(Message):
    """Lines around `line` of `path`, read off the event loop."""

    def __init__(self, path: Path, line: int, first_line: int, lines: list[str]) -> None:
        super().__init__()
        self.path = path
        self.line = line
        self.first_line = first_line
        self.lines = lines

    def can_replace(self, message: Message) -> bool:
        # Scrolling through problems fires many previews; only the newest matters.
        return isinstance(message, PreviewReady)


class DatasetImported(Message):
    """A dataset version row exists in the store (new, or the existing one for the same bytes)."""

    def __init__(self, path: Path, version: Any) -> None:
        super().__init__()
        self.path = path
        self.version = version


class RunsLoaded(Message):
    """A fresh snapshot of the runs table (rows already formatted off the event loop)."""

    def __init__(self, rows: list[Any]) -> None:
        super().__init__()
        self.rows = rows

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunsLoaded)


class RunDetailReady(Message):
    """Config, environment, metric summary and lineage for one run."""

    def __init__(self, run_id: int, detail: dict) -> None:
        super().__init__()
        self.run_id = run_id
        self.detail = detail

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunDetailReady)


class OverviewLoaded(Message):
    """Rows for an overview screen's tables, keyed by table id (read from the store)."""

    def __init__(self, tables: dict[str, list[tuple]], facts: dict[str, str]) -> None:
        super().__init__()
        self.tables = tables
        self.facts = facts


# ---- training (Train screen, app poll worker) ------------------------------------------------


class RunProgress(Message, bubble=False):
    """The latest state of one run from the app's poll worker (`engine.poll_runs()`).

    Coalesces: a burst of progress for the same run is drawn once, with the newest values (the
    store keeps every step). Does not bubble: the app forwards it to the Train screen itself.
    """

    def __init__(self, progress: dict) -> None:
        super().__init__()
        self.progress = progress
        self.run_id = progress.get("run_id")

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunProgress) and message.run_id == self.run_id


class RunPollFailed(Message, bubble=False):
    """The app's poll worker hit an error (it keeps polling); `error` is for people."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class TrainChoicesLoaded(Message):
    """What the Train screen's pickers offer: presets of a kind, base models, dataset versions."""

    def __init__(self, kind: str, presets: dict, models: list, versions: list) -> None:
        super().__init__()
        self.kind = kind
        self.presets = presets
        self.models = models
        self.versions = versions


class PreflightReady(Message):
    """`engine.preflight(config)` finished; `report` is its dict form (PreflightReport.to_dict)."""

    def __init__(self, config: dict, report: dict) -> None:
        super().__init__()
        self.config = config
        self.report = report


class JobSubmitted(Message):
    """A run row exists for a submitted (or resumed) job; `started` if it is running now."""

    def __init__(self, run: Any, started: bool) -> None:
        super().__init__()
        self.run = run
        self.started = started


class JobRefused(Message):
    """Submit refused by pre-flight; the report says why."""

    def __init__(self, report: dict) -> None:
        super().__init__()
        self.report = report


class QueueLoaded(Message):
    """Training runs for the queue table (newest first), read off the event loop."""

    def __init__(self, runs: list[Any]) -> None:
        super().__init__()
        self.runs = runs

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, QueueLoaded)


class RunMetricsReady(Message):
    """Curves, last values and latest samples of one run, read from the store."""

    def __init__(self, run_id: int, data: dict) -> None:
        super().__init__()
        self.run_id = run_id
        self.data = data

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunMetricsReady) and message.run_id == self.run_id


# ---- compare (side-by-side panes, batch evaluation, blind mode) --------------------------------


class CompareChoicesLoaded(Message):
    """What the Compare pickers offer: models [(label, ref)], prompt history [(prompt, system)],
    prompt sets [(label, spec)] and stored evaluations (rows), read off the event loop."""

    def __init__(self, models: list, history: list, prompt_sets: list, evaluations: list) -> None:
        super().__init__()
        self.models = models
        self.history = history
        self.prompt_sets = prompt_sets
        self.evaluations = evaluations


class PaneChunk(Message):
    """The text a pane's worker has accumulated so far. Coalesces per pane and generation: a
    burst of tokens is drawn once, with the newest text (the worker keeps the whole answer)."""

    def __init__(self, pane: str, gen: int, text: str, tokens: int, elapsed_s: float) -> None:
        super().__init__()
        self.pane = pane
        self.gen = gen
        self.text = text
        self.tokens = tokens
        self.elapsed_s = elapsed_s

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, PaneChunk) and (message.pane, message.gen) == (self.pane, self.gen)


class PaneDone(Message):
    """A pane's answer finished: the whole text and the figures of the final chunk
    (tokens, latency_s, first_token_s, tokens_per_s, finish_reason, generation_id, ref, label)."""

    def __init__(self, pane: str, gen: int, text: str, figures: dict) -> None:
        super().__init__()
        self.pane = pane
        self.gen = gen
        self.text = text
        self.figures = figures


class PaneFailed(Message):
    """A pane's generation raised; `error` is for people."""

    def __init__(self, pane: str, gen: int, error: str) -> None:
        super().__init__()
        self.pane = pane
        self.gen = gen
        self.error = error


class EvalProgress(Message):
    """Batch evaluation progress (answers done of total); coalesces to the newest."""

    def __init__(self, done: int, total: int, ref: str) -> None:
        super().__init__()
        self.done = done
        self.total = total
        self.ref = ref

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, EvalProgress)


class EvalFinished(Message):
    """`engine.run_eval(...)` returned (or a stored evaluation was opened): its result dict."""

    def __init__(self, result: dict) -> None:
        super().__init__()
        self.result = result


class BlindRecorded(Message):
    """A blind choice is in the store as label task `task_id` with label event `label_id`."""

    def __init__(self, task_id: int, label_id: int, choice: str, swapped: bool) -> None:
        super().__init__()
        self.task_id = task_id
        self.label_id = label_id
        self.choice = choice
        self.swapped = swapped


# ---- Label screen ----------------------------------------------------------------------------


class LabelQueueLoaded(Message):
    """The unlabelled tasks of `task_set` (None: no task set has any) read from the store."""

    def __init__(self, task_set: str | None, tasks: list[Any]) -> None:
        super().__init__()
        self.task_set = task_set
        self.tasks = tasks


class LabelSaved(Message):
    """A label is committed (synchronous=FULL) as `event` on `task`; `pair` is what was shown."""

    def __init__(self, pair: Any, task: Any, event: Any) -> None:
        super().__init__()
        self.pair = pair
        self.task = task
        self.event = event


class LabelUndone(Message):
    """The undo event `undo` is committed; `pair` goes back in front of the queue."""

    def __init__(self, undo: Any, pair: Any) -> None:
        super().__init__()
        self.undo = undo
        self.pair = pair


class LabelTaskReady(Message):
    """The background feeder made a new task (its candidates are generated)."""

    def __init__(self, task: Any, feeder: Any) -> None:
        super().__init__()
        self.task = task
        self.feeder = feeder


class LabelFeederEnded(Message):
    """The feeder finished (`error` None) or stopped on an error said in words."""

    def __init__(self, feeder: Any, made: int, error: str | None = None) -> None:
        super().__init__()
        self.feeder = feeder
        self.made = made
        self.error = error


class LabelStatsReady(Message):
    """`engine.label_stats(...)` for the Label screen's panel, plus store-wide facts."""

    def __init__(self, task_set: str | None, stats: dict, facts: dict[str, str],
                 choices: list[tuple[str, int]]) -> None:
        super().__init__()
        self.task_set = task_set
        self.stats = stats
        self.facts = facts
        self.choices = choices


class LabelReviewLoaded(Message):
    """The pairs of `task_set` where the judge and the person disagree: [(task, disagreement
    dict from engine.label.agreement)]."""

    def __init__(self, task_set: str | None, tasks: list[tuple[Any, dict]]) -> None:
        super().__init__()
        self.task_set = task_set
        self.tasks = tasks
