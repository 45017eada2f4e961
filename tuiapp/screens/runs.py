"""Runs: every run in the store, filterable, with config, metrics, lineage, evaluations and
preference win-rates of the one under the cursor. Read-only; runs are started by the training engine (CLI `tuneloop train ...`)."""

from __future__ import annotations

import json
from typing import Any

from rich.json import JSON
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Label, Select, Static

from tuiapp.messages import RunDetailReady, RunsLoaded, WorkFailed
from tuiapp.screens.areas import AreaScreen
from tuiapp.screens.run_rows import (
    COLUMNS,
    KNOWN_KINDS,
    KNOWN_STATUSES,
    RunRow,
    build_rows,
    filter_rows,
    run_evaluations,
    run_win_rates,
    short_time,
)
from tuiapp.widgets.lineage_tree import LineageTree
from tuiapp.widgets.preference_bar import render_win_rates

ALL = "all"
EMPTY_TEXT = (
    "No runs yet.\n\n"
    "Runs appear here once a training job has been started, with their status, config, "
    "metrics and lineage. Start one with\n\n"
    "    tuneloop train sft --config CONFIG.toml\n\n"
    "and list them headless with `tuneloop runs list`."
)


def _pretty_json(value: Any) -> JSON:
    # rich.json, not rich.syntax: same colours for JSON without importing pygments at start-up
    return JSON(json.dumps(value, indent=2, sort_keys=True, default=str))


METRIC_COLUMNS = (("last", "last"), ("min", "min"), ("max", "max"), ("last step", "last_step"),
                  ("count", "count"))


def _metric_table(summary: dict, width: int | None = None) -> Table | Text:
    """Metric names in full (eval_loss and eval_accuracy must not both read `eval_…`); when
    `width` is short, the right-most columns (count, then last step, max, min) are left out
    rather than cutting the names."""
    if not summary:
        return Text("no metrics logged", style="dim")
    cells = {name: [f"{summary[name].get(k):.4g}" if isinstance(summary[name].get(k), float)
                    else str(summary[name].get(k, "")) for _, k in METRIC_COLUMNS]
             for name in summary}
    name_w = max(len("metric"), *(len(n) for n in summary))
    widths = [max(len(title), *(len(c[i]) for c in cells.values()))
              for i, (title, _) in enumerate(METRIC_COLUMNS)]
    keep = len(METRIC_COLUMNS)
    while width is not None and keep > 1 and name_w + sum(w + 2 for w in widths[:keep]) > width:
        keep -= 1
    table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold")
    table.add_column("metric", no_wrap=True, min_width=name_w)
    for title, _ in METRIC_COLUMNS[:keep]:
        table.add_column(title, justify="right", no_wrap=True)
    for name in sorted(summary):
        table.add_row(name, *cells[name][:keep])
    return table


def _score(name: str, value: float) -> str:
    share = not any(k in name for k in ("mean_tokens", "rm_score", "reward", "loss"))
    return f"{value:.0%}" if share and 0.0 <= value <= 1.0 else f"{value:.2f}"


def _evaluations_text(evaluations: list[dict]) -> Text:
    """Each evaluation linked to the run: its name, size and this run's scores."""
    if not evaluations:
        return Text("none yet: `tuneloop eval --models RUN --prompts FILE` or Compare's batch tab",
                    style="dim")
    out = Text()
    for ev in evaluations:
        name = ev["name"] if len(ev["name"]) <= 60 else ev["name"][:59] + "…"
        out.append(f"#{ev['id']} {name}", style="bold")
        extra = [f"{ev['n']} prompts"] if ev.get("n") else []
        if ev.get("others"):
            extra.append(f"with {ev['others']} other model{'s' if ev['others'] != 1 else ''}")
        out.append(f"  {', '.join(extra)}\n" if extra else "\n", style="dim")
        scores = ev.get("scores") or {}
        out.append("  " + (" · ".join(f"{k} {_score(k, v)}" for k, v in scores.items())
                           or "no scores for this run") + "\n")
    out.rstrip()
    return out


class RunsScreen(AreaScreen):
    AREA = "runs"
    AREA_TITLE = "Runs"
    BINDINGS = [
        Binding("ctrl+r", "refresh", "Refresh", id="runs.refresh"),
        Binding("s", "cycle_status", "Next status filter", id="runs.status_filter"),
        Binding("k", "cycle_kind", "Next kind filter", id="runs.kind_filter"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.all_rows: list[RunRow] = []
        self.shown_rows: list[RunRow] = []
        self.loaded = False
        self.detail_run_id: int | None = None
        self.detail: dict | None = None
        # The values each filter Select offers (besides "all"), to cycle and to extend.
        self.offered: dict[str, list[str]] = {
            "#runs-status": list(KNOWN_STATUSES),
            "#runs-kind": list(KNOWN_KINDS),
        }

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="runs-filters"):
            yield Label("Status", classes="field-label")
            yield Select(
                self._options(KNOWN_STATUSES), value=ALL, allow_blank=False, id="runs-status"
            )
            yield Label("Kind", classes="field-label")
            yield Select(self._options(KNOWN_KINDS), value=ALL, allow_blank=False, id="runs-kind")
            yield Static("", id="runs-count")
        yield Static(EMPTY_TEXT, id="runs-empty")
        # The table takes the full width (nine columns); the run under the cursor is shown
        # below it: what it is and how it was configured, then what it logged and came from.
        with Vertical(id="runs-body"):
            yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
            with Horizontal(id="runs-detail"):
                with VerticalScroll(id="runs-detail-left"):
                    yield Static("", id="run-head")
                    yield Static("", id="run-error")
                    yield Static("config", classes="section-title")
                    yield Static("", id="run-config")
                    yield Static("environment", classes="section-title")
                    yield Static("", id="run-env")
                with VerticalScroll(id="runs-detail-right"):
                    yield Static("metrics", classes="section-title first")
                    yield Static("", id="run-metrics")
                    yield LineageTree(id="run-lineage")
                    yield Static("evaluations", classes="section-title")
                    yield Static("", id="run-evaluations")
                    yield Static("preference labels (win-rates)", classes="section-title")
                    yield Static("", id="run-winrates")

    @staticmethod
    def _options(values) -> list[tuple[str, str]]:
        return [("all", ALL)] + [(v, v) for v in values]

    def on_mount(self) -> None:
        self.query_one("#runs-table", DataTable).add_columns(*COLUMNS)
        self.query_one("#runs-body").display = False
        self.query_one("#runs-empty").display = False
        self.action_refresh()
        self.start_auto_refresh(self.action_refresh)

    def on_screen_resume(self) -> None:
        if self.loaded:
            self.action_refresh()

    # ---- loading --------------------------------------------------------------------------

    def action_refresh(self) -> None:
        self.load_runs()

    @work(thread=True, exclusive=True, group="runs-load", exit_on_error=False)
    def load_runs(self) -> None:
        clock = getattr(self.settings, "clock", None)
        try:
            rows = build_rows(self.store, clock() if clock else None)
        except Exception as exc:
            self.post_message(WorkFailed("loading runs", str(exc) or type(exc).__name__))
            return
        self.post_message(RunsLoaded(rows))

    def on_runs_loaded(self, message: RunsLoaded) -> None:
        if self.loaded and message.rows == self.all_rows:
            return  # nothing changed: keep the cursor, scroll and expanded tree as they are
        self.all_rows = message.rows
        self.loaded = True
        self._extend_options("#runs-status", KNOWN_STATUSES, {r.status for r in self.all_rows})
        self._extend_options("#runs-kind", KNOWN_KINDS, {r.kind for r in self.all_rows})
        self._apply_filters()

    def _extend_options(self, selector: str, known, present: set[str]) -> None:
        """Offer statuses/kinds the store has that the fixed list lacks, keeping the choice."""
        select = self.query_one(selector, Select)
        extra = sorted(present - set(known))
        wanted = [*known, *extra]
        if self.offered[selector] == wanted:
            return
        value = select.value
        select.set_options(self._options(wanted))
        self.offered[selector] = wanted
        select.value = value if value in wanted or value == ALL else ALL

    # ---- filters --------------------------------------------------------------------------

    def _filter_value(self, selector: str) -> str | None:
        value = self.query_one(selector, Select).value
        return None if value in (ALL, Select.NULL) else str(value)

    @property
    def status_filter(self) -> str | None:
        return self._filter_value("#runs-status")

    @property
    def kind_filter(self) -> str | None:
        return self._filter_value("#runs-kind")

    @on(Select.Changed, "#runs-status")
    @on(Select.Changed, "#runs-kind")
    def _filters_changed(self) -> None:
        if self.loaded:
            self._apply_filters()

    def _cycle(self, selector: str) -> None:
        select = self.query_one(selector, Select)
        values = [ALL, *self.offered[selector]]
        index = values.index(select.value) if select.value in values else 0
        select.value = values[(index + 1) % len(values)]

    def action_cycle_status(self) -> None:
        self._cycle("#runs-status")

    def action_cycle_kind(self) -> None:
        self._cycle("#runs-kind")

    def _apply_filters(self) -> None:
        table = self.query_one("#runs-table", DataTable)
        empty_store = not self.all_rows
        self.query_one("#runs-empty").display = empty_store
        self.query_one("#runs-body").display = not empty_store
        self.shown_rows = filter_rows(self.all_rows, self.status_filter, self.kind_filter)
        cursor_id = self.detail_run_id
        table.clear()
        for row in self.shown_rows:
            table.add_row(*(Text(cell) for cell in row.cells()), key=str(row.id))
        count = self.query_one("#runs-count", Static)
        if empty_store:
            count.update("")
        else:
            count.update(f"{len(self.shown_rows)} of {len(self.all_rows)} runs")
        ids = [row.id for row in self.shown_rows]
        if not ids:
            self._show_detail_text("No run matches these filters.")
            return
        if cursor_id in ids:
            table.move_cursor(row=ids.index(cursor_id))
        else:
            table.move_cursor(row=0)
            self.load_detail(ids[0])

    # ---- detail ---------------------------------------------------------------------------

    @on(DataTable.RowHighlighted, "#runs-table")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.load_detail(int(event.row_key.value))

    @work(thread=True, exclusive=True, group="runs-detail", exit_on_error=False)
    def load_detail(self, run_id: int) -> None:
        store = self.store  # thread-safe: one SQLite connection per thread (store/db.py)
        try:
            detail = {
                "run": store.get_run(run_id),
                "metrics": store.metric_summary(run_id),
                "lineage": store.lineage(run_id),
                "evaluations": run_evaluations(store, run_id),
                "win_rates": run_win_rates(store, run_id),
            }
        except Exception as exc:
            self.post_message(WorkFailed(f"loading run #{run_id}", str(exc) or type(exc).__name__))
            return
        self.post_message(RunDetailReady(run_id, detail))

    def on_run_detail_ready(self, message: RunDetailReady) -> None:
        self.detail_run_id = message.run_id
        self.detail = message.detail
        run = message.detail["run"]
        head = Text()
        head.append(f"run #{run.id} {run.name or ''}\n", style="bold")
        head.append(f"{run.kind} · {run.status}")
        if getattr(run, "seed", None) is not None:
            head.append(f" · seed {run.seed}")
        for label, attr in (
            ("created", "created_at"),
            ("started", "started_at"),
            ("finished", "finished_at"),
        ):
            if getattr(run, attr, None):
                head.append(f"\n{label} {short_time(getattr(run, attr))}")
        if getattr(run, "output_dir", None):
            head.append(f"\noutput {run.output_dir}")
        self.query_one("#run-head", Static).update(head)
        error = getattr(run, "error", None)
        error_box = self.query_one("#run-error", Static)
        error_box.display = bool(error)
        error_box.update(Text(f"error: {error}", style="bold red") if error else "")
        self.query_one("#run-config", Static).update(_pretty_json(run.config or {}))
        metrics = self.query_one("#run-metrics", Static)
        metrics.update(_metric_table(message.detail["metrics"], width=metrics.size.width or None))
        env = getattr(run, "environment", None)
        self.query_one("#run-env", Static).update(
            _pretty_json(env) if env else Text("not recorded", style="dim")
        )
        self.query_one("#run-lineage", LineageTree).show(
            message.detail["lineage"], f"lineage of run #{run.id}"
        )
        self.query_one("#run-evaluations", Static).update(
            _evaluations_text(message.detail["evaluations"]))
        width = max(10, (self.query_one("#runs-detail-right").size.width or 40) - 4)
        self.query_one("#run-winrates", Static).update(
            render_win_rates(message.detail["win_rates"], width=width))

    def _show_detail_text(self, text: str) -> None:
        self.detail_run_id = None
        self.detail = None
        self.query_one("#run-head", Static).update(text)
        for selector in ("#run-config", "#run-metrics", "#run-env", "#run-error", "#run-evaluations",
                         "#run-winrates"):
            self.query_one(selector, Static).update("")
        self.query_one("#run-lineage", LineageTree).show(None)

    def on_work_failed(self, message: WorkFailed) -> None:
        self.notify(f"{message.what} failed: {message.error}", severity="error", timeout=8)
