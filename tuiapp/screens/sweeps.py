"""Sweeps: the runs of a `tuneloop sweep` side by side, as a table and the method comparison's
two figures (trainable parameters against LoRA rank; grouped bars of trainable parameters, peak
memory and held-out score per method), drawn with plotext from the user's own runs.

Opened from the command palette ("Sweeps: …"); `e` saves both figures as SVG files and the
screen itself as an SVG screenshot into HOME/reports/sweep-ID/ for a report. Read-only: sweeps
are started with `tuneloop sweep`. Store reads run in a thread worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static
from textual_plotext import PlotextPlot

EMPTY = ("No sweeps yet.\n\nA sweep queues one run per point of a grid and compares them here:\n\n"
         "    tuneloop sweep --config sample_data/presets/demo-sft-lora.toml \\\n"
         "        --grid method=lora,full --grid lora_r=4,8,16,32 --eval demo/eval_heldout --run")
RUN_COLUMNS = ("run", "status", "method", "r", "trainable", "peak MiB", "tok/s", "loss", "score")


class SweepsLoaded(Message):
    def __init__(self, sweeps: list[Any]) -> None:
        super().__init__()
        self.sweeps = sweeps

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SweepsLoaded)


class SweepRowsReady(Message):
    def __init__(self, sweep: Any, rows: list[dict[str, Any]]) -> None:
        super().__init__()
        self.sweep = sweep
        self.rows = rows

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SweepRowsReady)


def _num(value: Any, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


class SweepsScreen(Screen):
    AREA_TITLE = "Sweeps"
    DEFAULT_CSS = """
    SweepsScreen #sweeps-list { width: 34; height: 1fr; }
    SweepsScreen #sweep-main { width: 1fr; }
    SweepsScreen #sweep-head { height: auto; padding: 0 1; }
    SweepsScreen #sweep-runs { height: auto; max-height: 12; }
    SweepsScreen #sweep-charts { height: 1fr; min-height: 12; }
    SweepsScreen #sweeps-empty { padding: 1 2; }
    SweepsScreen #chart-legend { height: auto; padding: 0 1 0 6; }
    """
    BINDINGS = [
        Binding("escape", "close", "Back", id="sweeps.close"),
        Binding("ctrl+r", "refresh", "Refresh", id="sweeps.refresh"),
        Binding("e", "save_charts", "Save charts (SVG)", id="sweeps.save"),
    ]

    def __init__(self, sweep_id: int | None = None) -> None:
        super().__init__()
        self.wanted = sweep_id
        self.sweeps: list[Any] = []
        self.sweep: Any = None
        self.rows: list[dict[str, Any]] = []
        self.saved: list[Path] = []

    @property
    def store(self) -> Any:
        return self.app.store

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static(EMPTY, id="sweeps-empty")
        with Horizontal(id="sweeps-body"):
            yield DataTable(id="sweeps-list", cursor_type="row")
            with Vertical(id="sweep-main"):
                yield Static("", id="sweep-head")
                yield DataTable(id="sweep-runs", cursor_type="row", zebra_stripes=True)
                with Horizontal(id="sweep-charts"):
                    yield PlotextPlot(id="chart-rank")
                    with Vertical(id="chart-methods-box"):
                        yield PlotextPlot(id="chart-methods")
                        yield Static("", id="chart-legend")
        yield Footer(show_command_palette=False)  # ^p is an ordinary app binding (app.py)

    def on_mount(self) -> None:
        self.query_one("#sweeps-list", DataTable).add_columns("id", "name", "runs")
        self.query_one("#sweep-runs", DataTable).add_columns(*RUN_COLUMNS)
        self.query_one("#sweeps-body").display = False
        self.load_sweeps()

    # ---- loading (thread workers; handlers touch widgets) --------------------------------

    @work(thread=True, exclusive=True, group="sweeps-list", exit_on_error=False)
    def load_sweeps(self) -> None:
        self.post_message(SweepsLoaded(self.store.list_sweeps()))

    @work(thread=True, exclusive=True, group="sweep-rows", exit_on_error=False)
    def load_rows(self, sweep_id: int) -> None:
        from tuiapp.engine.jobs.sweep import sweep_table

        self.post_message(SweepRowsReady(self.store.get_sweep(sweep_id), sweep_table(self.store, sweep_id)))

    def on_sweeps_loaded(self, message: SweepsLoaded) -> None:
        self.sweeps = message.sweeps
        self.query_one("#sweeps-empty").display = not self.sweeps
        self.query_one("#sweeps-body").display = bool(self.sweeps)
        table = self.query_one("#sweeps-list", DataTable)
        table.clear()
        for s in self.sweeps:
            table.add_row(str(s.id), s.name, str(len(s.run_ids)), key=str(s.id))
        if not self.sweeps:
            return
        ids = [s.id for s in self.sweeps]
        wanted = self.wanted if self.wanted in ids else (self.sweep.id if self.sweep else ids[0])
        table.move_cursor(row=ids.index(wanted))
        self.load_rows(wanted)

    @on(DataTable.RowHighlighted, "#sweeps-list")
    def _picked(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            sweep_id = int(event.row_key.value)
            if self.sweep is None or self.sweep.id != sweep_id:
                self.wanted = sweep_id
                self.load_rows(sweep_id)

    def on_sweep_rows_ready(self, message: SweepRowsReady) -> None:
        self.sweep, self.rows = message.sweep, message.rows
        grid = " × ".join(f"{k}={','.join(map(str, v))}" for k, v in self.sweep.grid)
        scorer = (self.sweep.details or {}).get("scorer")
        score = f"score: {scorer}" if scorer else "no score yet (`tuneloop sweep eval ID`)"
        done = sum(r["status"] == "completed" for r in self.rows)
        self.query_one("#sweep-head", Static).update(
            f"[b]sweep {self.sweep.id}: {self.sweep.name}[/b]  {self.sweep.kind} · {grid} · "
            f"{done} of {len(self.rows)} completed · {score}")
        self._fill_table()
        self._draw_rank()
        self._draw_methods()

    # ---- drawing ----------------------------------------------------------------------------

    def _fill_table(self) -> None:
        from tuiapp.engine.jobs.sweep_charts import human

        table = self.query_one("#sweep-runs", DataTable)
        table.clear()
        for r in self.rows:
            mem = _num(r["peak_memory_mb"], "{:,.0f}")
            if r["memory_source"] == "pre-flight":
                mem = f"≈{mem}"
            params = r["trainable_params"]
            table.add_row(str(r["run_id"]), r["status"], str(r["method"] or "–"),
                          str(r["lora_r"] or "–"), "–" if params is None else human(params), mem,
                          _num(r["tokens_per_s"], "{:,.0f}"), _num(r["final_loss"], "{:.4f}"),
                          _num(r["score"], "{:.3f}"), key=str(r["run_id"]))

    def _draw_rank(self) -> None:
        from tuiapp.engine.jobs.sweep_charts import human, rank_series

        widget = self.query_one("#chart-rank", PlotextPlot)
        plt = widget.plt
        plt.clear_figure()
        plt.title("trainable parameters vs LoRA rank")
        series = rank_series(self.rows)
        for method, points in series.items():
            plt.plot([r for r, _ in points], [n for _, n in points], marker="braille", label=method)
            plt.scatter([r for r, _ in points], [n for _, n in points], marker="dot")
        ranks = sorted({r for pts in series.values() for r, _ in pts})
        counts = [n for pts in series.values() for _, n in pts]
        if ranks:
            plt.xticks(ranks, [str(r) for r in ranks])
            top = max(counts)
            ticks = [top * i / 4 for i in range(5)]
            plt.yticks(ticks, [human(t) for t in ticks])
            plt.ylim(0, top * 1.05)
        plt.xlabel("rank r")
        widget.refresh()

    def _draw_methods(self) -> None:
        from tuiapp.engine.jobs.sweep_charts import MEASURES, method_groups

        widget = self.query_one("#chart-methods", PlotextPlot)
        plt = widget.plt
        plt.clear_figure()
        plt.title("per method, % of the largest")
        groups = method_groups(self.rows)
        if groups:
            tops = {k: max((g[k] or 0.0) for g in groups.values()) or 1.0 for k, _ in MEASURES}
            bars = [[100 * (g[k] or 0.0) / tops[k] for g in groups.values()] for k, _ in MEASURES]
            names = list(groups)
            plt.multiple_bar(list(range(1, len(names) + 1)), bars,
                             labels=["params", "memory", "score"])
            # Groups are numbered under the bars and named in the x label: plotext shifts long
            # tick labels by a character depending on the process's string hash seed, which
            # would make the same sweep draw differently from run to run.
            plt.xticks(list(range(1, len(names) + 1)), [str(i) for i in range(1, len(names) + 1)])
            plt.ylim(0, 100)
        self.query_one("#chart-legend", Static).update(
            "  ".join(f"[b]{i}[/b] {n}" for i, n in enumerate(groups, 1)))
        widget.refresh()

    # ---- actions ----------------------------------------------------------------------------

    def action_close(self) -> None:
        self.app.pop_screen()

    def action_refresh(self) -> None:
        self.load_sweeps()

    def action_save_charts(self) -> None:
        if self.sweep is None:
            self.notify("no sweep to save", severity="warning")
            return
        from tuiapp.engine.jobs.sweep_charts import write_charts

        folder = Path(self.app.settings.home) / "reports" / f"sweep-{self.sweep.id}"
        self.saved = write_charts(self.rows, folder, f"sweep {self.sweep.id}")
        self.saved.append(Path(self.app.save_screenshot(filename="screen.svg", path=str(folder))))
        self.notify(f"saved {len(self.saved)} SVG files in {folder}", timeout=8)


def open_sweeps(app: Any, sweep_id: int | None = None) -> None:
    app.push_screen(SweepsScreen(sweep_id))
