"""Compare's batch-evaluation tab: a prompt set through the chosen models, scored.

The evaluation (every answer of every model) runs in one thread worker calling
`engine.run_eval(...)`; its progress callback posts coalescing `EvalProgress` messages. The result
— per-model means, and the prompts where the models' scores differ — is drawn by the handlers;
selecting a prompt shows each model's answer side by side. Stored evaluations (including the demo
proof table when present) are listed and open the same way.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Input, Label, ProgressBar, Select, Static

from tuiapp.messages import EvalFinished, EvalProgress, WorkFailed
from tuiapp.widgets.output_pane import OutputPane

MAX_PANES = 4


def short(text: Any, limit: int = 60) -> str:
    if isinstance(text, list):  # a message list: its last user turn is the question
        users = [m.get("content", "") for m in text if isinstance(m, dict) and m.get("role") == "user"]
        text = users[-1] if users else text
    flat = " ".join(str(text if text is not None else "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "—" if value is None else str(value)


def result_from_evaluation(ev: Any) -> dict:
    """A stored evaluation row in the shape run_eval returns (what the tables draw)."""
    details = dict(ev.details or {})
    return {"name": ev.name, "models": list(ev.model_refs), "metrics": dict(ev.metrics or {}),
            "scorers": details.get("scorers"), "prompts": details.get("prompts") or [],
            "disagreements": details.get("disagreements") or [],
            "labels": details.get("labels") or {}, "n_prompts": details.get("n_prompts"),
            "evaluation_id": ev.id}


def score_columns(result: dict) -> list[str]:
    """The scorers to show: the result's own list, else every score name any model has."""
    if result.get("scorers"):
        return list(result["scorers"])
    names: list[str] = []
    for m in result.get("metrics", {}).values():
        scores = m.get("scores") if isinstance(m, dict) and isinstance(m.get("scores"), dict) else m
        for key, value in (scores or {}).items() if isinstance(scores, dict) else ():
            if isinstance(value, (int, float)) and key not in names and key != "n":
                names.append(key)
    return names


class BatchPanel(Vertical):
    DEFAULT_CSS = """
    BatchPanel { height: 1fr; padding: 0 1; }
    BatchPanel .bp-row { height: 1; margin-bottom: 1; }
    BatchPanel .bp-label { width: 12; color: $text-muted; }
    BatchPanel #batch-set { width: 1fr; }
    BatchPanel #batch-path { width: 1fr; }
    BatchPanel #batch-scorers { width: 1fr; }
    BatchPanel #batch-limit { width: 8; }
    BatchPanel Button { min-width: 10; margin-left: 1; }
    BatchPanel #batch-status { height: 1; color: $text-muted; }
    BatchPanel #batch-status.-error { color: $error; }
    BatchPanel .section-title { height: 1; text-style: bold; color: $accent; }
    BatchPanel #batch-results { height: auto; max-height: 7; }
    BatchPanel #batch-lower { height: 1fr; }
    BatchPanel #batch-lists { width: 56; }
    BatchPanel #batch-disagree, BatchPanel #batch-stored { height: 1fr; }
    BatchPanel #batch-panes { width: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.result: dict | None = None
        self.running = False
        self.progress: tuple[int, int] = (0, 0)
        self.evaluations: list[Any] = []
        self._shown_prompts: list[int] = []

    def compose(self) -> ComposeResult:
        with Horizontal(classes="bp-row"):
            yield Label("Prompt set", classes="bp-label")
            yield Select([], prompt="(choose a dataset version)", id="batch-set", compact=True)
            yield Input(placeholder="…or a JSONL path (prompt, reference)", id="batch-path",
                        compact=True)
        with Horizontal(classes="bp-row"):
            yield Label("Scorers", classes="bp-label")
            yield Input(placeholder="blank: defaults (exact, contains; demo scorers on demo sets)",
                        id="batch-scorers", compact=True)
            yield Label(" limit ", classes="bp-label")
            yield Input(placeholder="all", id="batch-limit", compact=True)
            yield Button("Run", id="batch-run", compact=True)
        with Horizontal(classes="bp-row"):
            # a bar with no total animates at 15 frames a second (even on a hidden tab), waking
            # the event loop while the Side by side panes stream: idle, it is an empty bar
            yield ProgressBar(total=1, id="batch-progress", show_eta=False)
            yield Static("", id="batch-status")
        yield Static("Results (means per model)", classes="section-title")
        yield DataTable(id="batch-results", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="batch-lower"):
            with Vertical(id="batch-lists"):
                yield Static("Prompts where the models disagree", classes="section-title")
                yield DataTable(id="batch-disagree", cursor_type="row", zebra_stripes=True)
                yield Static("Stored evaluations", classes="section-title")
                yield DataTable(id="batch-stored", cursor_type="row", zebra_stripes=True)
            with Horizontal(id="batch-panes"):
                for i in range(MAX_PANES):
                    yield OutputPane(id=f"batch-pane-{i}")

    def on_mount(self) -> None:
        self.query_one("#batch-disagree", DataTable).add_columns("#", "prompt", "reference")
        self.query_one("#batch-stored", DataTable).add_columns("id", "name", "models")
        for i in range(MAX_PANES):
            self.query_one(f"#batch-pane-{i}").display = i < 2

    # ---- choices from the screen's loader ----

    def set_prompt_sets(self, prompt_sets: list[tuple[str, str]]) -> None:
        select = self.query_one("#batch-set", Select)
        keep = select.value
        select.set_options(prompt_sets)
        if any(spec == keep for _, spec in prompt_sets):
            select.value = keep
        elif prompt_sets:
            select.value = prompt_sets[0][1]

    def set_evaluations(self, evaluations: list[Any]) -> None:
        self.evaluations = list(evaluations)
        table = self.query_one("#batch-stored", DataTable)
        table.clear()
        for ev in self.evaluations:
            table.add_row(str(ev.id), short(ev.name, 30), short(", ".join(ev.model_refs), 24),
                          key=str(ev.id))

    # ---- running ----

    def spec(self) -> tuple[str | None, list[str] | None, int | None, str | None]:
        """(prompt set, scorers, limit, error) from the form."""
        path = self.query_one("#batch-path", Input).value.strip()
        chosen = self.query_one("#batch-set", Select).value
        prompt_set = path or (chosen if isinstance(chosen, str) else None)
        if not prompt_set:
            return None, None, None, "choose a prompt set or type a JSONL path"
        scorers = [s.strip() for s in self.query_one("#batch-scorers", Input).value.split(",")
                   if s.strip()] or None
        limit_text = self.query_one("#batch-limit", Input).value.strip()
        limit = None
        if limit_text:
            if not limit_text.isdigit() or int(limit_text) < 1:
                return None, None, None, f"limit must be a whole number ≥ 1 (got {limit_text!r})"
            limit = int(limit_text)
        return prompt_set, scorers, limit, None

    def run(self, refs: list[str], params: dict) -> bool:
        if self.running:
            self._status("an evaluation is already running")
            return False
        prompt_set, scorers, limit, error = self.spec()
        if error or not refs:
            self._status(error or "pick at least one model on the Side by side tab", error=True)
            return False
        self.running = True
        self.progress = (0, 0)
        self.query_one("#batch-progress", ProgressBar).update(total=None, progress=0)
        self._status(f"evaluating {', '.join(refs)} on {prompt_set}…")
        self._eval_worker(list(refs), prompt_set, scorers, dict(params), limit)
        return True

    @work(thread=True, exit_on_error=False, group="compare-eval")
    def _eval_worker(self, refs: list[str], prompt_set: str, scorers: list[str] | None,
                     params: dict, limit: int | None) -> None:
        def progress(done: int, total: int, ref: str) -> None:
            self.post_message(EvalProgress(done, total, ref))

        try:
            result = self.app.engine.run_eval(refs, prompt_set, scorers=scorers, params=params,
                                              limit=limit, progress=progress)
        except Exception as exc:  # bad set, bad REF, a model that fails to load: say which
            self.post_message(WorkFailed("batch evaluation", str(exc).strip() or type(exc).__name__))
            return
        self.post_message(EvalFinished(result))

    def on_eval_progress(self, message: EvalProgress) -> None:
        message.stop()
        self.progress = (message.done, message.total)
        self.query_one("#batch-progress", ProgressBar).update(total=message.total,
                                                               progress=message.done)
        self._status(f"{message.done}/{message.total} answers · now {message.ref}")

    def on_eval_finished(self, message: EvalFinished) -> None:
        message.stop()
        self.running = False
        self.show_result(message.result)
        ev_id = message.result.get("evaluation_id")
        self._status(f"done: {message.result.get('n_prompts')} prompts"
                     + (f" · stored as evaluation {ev_id}" if ev_id else ""))
        self.screen.refresh_choices()

    def on_work_failed(self, message: WorkFailed) -> None:
        if message.what != "batch evaluation":
            return
        message.stop()
        self.running = False
        self._status(f"batch evaluation failed: {message.error}", error=True)

    @on(Button.Pressed, "#batch-run")
    def _run_pressed(self) -> None:
        self.screen.action_run_batch()

    # ---- drawing a result ----

    def show_result(self, result: dict) -> None:
        self.result = result
        scorers = score_columns(result)
        table = self.query_one("#batch-results", DataTable)
        table.clear(columns=True)
        table.add_columns("model", "n", *scorers, "mean tokens", "tok/s")
        labels = result.get("labels") or {}
        for ref in result.get("models", []):
            m = result.get("metrics", {}).get(ref, {})
            scores = m.get("scores") if isinstance(m.get("scores"), dict) else m
            label = labels.get(ref) or m.get("label") or ref
            table.add_row(short(label, 28), _fmt(m.get("n")), *(_fmt(scores.get(s)) for s in scorers),
                          _fmt(m.get("mean_tokens")), _fmt(m.get("tokens_per_s")), key=ref)
        prompts = {p.get("index", i): p for i, p in enumerate(result.get("prompts", []))}
        disagree = self.query_one("#batch-disagree", DataTable)
        disagree.clear()
        self._shown_prompts = [i for i in result.get("disagreements", []) if i in prompts]
        for i in self._shown_prompts:
            p = prompts[i]
            disagree.add_row(str(i + 1), short(p.get("prompt"), 34), short(p.get("reference"), 14),
                             key=str(i))
        models = result.get("models", [])
        for k in range(MAX_PANES):
            pane = self.query_one(f"#batch-pane-{k}", OutputPane)
            pane.display = k < max(2, len(models))
            pane.set_title(short(labels.get(models[k], models[k]), 40) if k < len(models) else "")
            pane.show("", "")
        if self._shown_prompts:
            self.show_prompt(self._shown_prompts[0])

    def show_prompt(self, index: int) -> None:
        """Each model's answer to prompt `index` of the shown result, with its scores."""
        if self.result is None:
            return
        entry = next((p for p in self.result.get("prompts", []) if p.get("index") == index), None)
        if entry is None:
            return
        for k, ref in enumerate(self.result.get("models", [])[:MAX_PANES]):
            scores = (entry.get("scores") or {}).get(ref) or {}
            figures = " · ".join(f"{s} {_fmt(v)}" for s, v in scores.items())
            self.query_one(f"#batch-pane-{k}", OutputPane).show(
                (entry.get("outputs") or {}).get(ref, ""), figures)

    @on(DataTable.RowHighlighted, "#batch-disagree")
    def _disagreement_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self.show_prompt(int(event.row_key.value))

    @on(DataTable.RowSelected, "#batch-stored")
    def _stored_selected(self, event: DataTable.RowSelected) -> None:
        ev = next((e for e in self.evaluations if str(e.id) == event.row_key.value), None)
        if ev is not None:
            self.show_result(result_from_evaluation(ev))
            self._status(f"evaluation {ev.id}: {ev.name}")

    def _status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#batch-status", Static)
        status.update(Text(text))
        status.set_class(error, "-error")
