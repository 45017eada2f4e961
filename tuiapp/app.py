"""The Textual app shell: areas as modes, global keys, help, command palette, theme.

Dependency injection only: the store, the engine facade and the settings come in from outside
(`tuiapp.__main__.build_app` for real use, tests pass an in-memory Store and a fake engine).
Nothing here imports torch/transformers/datasets: the first paint must not wait for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.theme import Theme

from tuiapp.messages import RunPollFailed, RunProgress
from tuiapp.screens.areas import AREA_KEYS, AREAS
from tuiapp.screens.compare import CompareScreen
from tuiapp.screens.datasets import DatasetsScreen
from tuiapp.screens.export import ExportScreen
from tuiapp.screens.help import HelpScreen
from tuiapp.screens.label import LabelScreen
from tuiapp.screens.modals import ConfirmScreen
from tuiapp.screens.palette import TuneloopCommands
from tuiapp.screens.runs import RunsScreen
from tuiapp.screens.train import TrainScreen


@dataclass
class Settings:
    """What the app needs to know about its surroundings (no behaviour, no heavy objects)."""

    home: Path
    # Seconds between background refreshes of store-backed tables; 0 turns them off
    # (tests and screenshots want a still picture).
    refresh_interval: float = 5.0
    # "Now" for durations of runs still going; None is the wall clock. Tests pin it.
    clock: Callable[[], datetime] | None = None
    # Seconds between polls of the training queue (`engine.poll_runs()`); 0 turns polling off.
    poll_interval: float = 1.0


# Every colour is an exact xterm-256 palette entry, so a 256-colour terminal shows the same
# contrasts as a true-colour one instead of rounding two near shades into one.
TUNELOOP_THEME = Theme(
    name="tuneloop",
    primary="#5fafff",  # 75
    secondary="#5f87af",  # 67
    accent="#ffaf00",  # 214
    warning="#ffaf00",  # 214
    error="#ff5f5f",  # 203
    success="#87d75f",  # 113
    foreground="#e4e4e4",  # 254
    background="#1c1c1c",  # 234
    surface="#262626",  # 235
    panel="#3a3a3a",  # 237
    dark=True,
    variables={
        "footer-key-foreground": "#ffaf00",
        "block-cursor-background": "#005f87",  # 24
        "block-cursor-foreground": "#ffffff",
        "input-selection-background": "#005f87 60%",
    },
)

AREA_GROUP = Binding.Group("areas", compact=True)


def _area_bindings() -> list[Binding]:
    return [
        Binding(
            f"{fkey},{letter}",
            f"app.area('{mode}')",
            title,
            id=f"area.{mode}",
            group=AREA_GROUP,
            show=False,  # the area bar at the top shows these; the footer keeps its room
        )
        for mode, title, fkey, letter in AREA_KEYS
    ]


class TuiApp(App[None]):
    """tuneloop's terminal UI. `TuiApp(store=..., engine=..., settings=...)`."""

    TITLE = "tuneloop"
    CSS_PATH = "app.tcss"
    MODES = {
        "datasets": DatasetsScreen,
        "train": TrainScreen,
        "runs": RunsScreen,
        "compare": CompareScreen,
        "label": LabelScreen,
        "export": ExportScreen,
    }
    DEFAULT_MODE = "datasets"
    COMMANDS = App.COMMANDS | {TuneloopCommands}
    BINDINGS = [
        Binding("f1,question_mark", "app.help", "Help", id="app.help"),
        Binding("ctrl+p", "app.command_palette", "Palette", id="app.command_palette"),
        *_area_bindings(),
        Binding("q", "app.quit", "Quit", id="app.quit"),
        Binding("ctrl+q", "app.quit", "Quit", show=False, priority=True, id="app.quit_anywhere"),
    ]

    def __init__(self, store: Any, engine: Any, settings: Settings | dict) -> None:
        super().__init__()
        self.store = store
        self.engine = engine
        self.settings = settings if isinstance(settings, Settings) else Settings(**settings)
        self.register_theme(TUNELOOP_THEME)
        self.theme = "tuneloop"
        # Latest progress dict per run id, from the poll worker (a screen shown later reads it).
        self.run_progress: dict[int, dict] = {}
        self._poll_error: str | None = None
        self.farewell: str | None = None
        # (kind, dataset version id) for Train to pick when it is next shown (TrainScreen.request)
        self.train_request: tuple[str, str] | None = None

    # ---- training runs: ONE poll worker at a time for the whole app ----------------------------

    def on_mount(self) -> None:
        attach = getattr(self.engine, "attach", None)
        if attach is not None:  # the engine's runner needs the workspace
            attach(self.store, self.settings.home)
        if self.settings.poll_interval > 0 and hasattr(self.engine, "poll_runs"):
            self._poll_worker: Any = None
            self._poll_tick()
            self.set_interval(self.settings.poll_interval, self._poll_tick)

    def _poll_tick(self) -> None:
        # A tick never stacks a second poll on one still running (a finishing job can take a
        # moment to exit); the next tick after it ends polls again.
        if self._poll_worker is None or self._poll_worker.is_finished:
            self._poll_worker = self.poll_runs()

    @work(thread=True, group="runner-poll", exit_on_error=False)
    def poll_runs(self) -> None:
        """Replay job events into the store, move the queue on, and post one coalescing
        RunProgress per active run. Jobs are child processes; this only reads and starts them."""
        try:
            progress_list = self.engine.poll_runs()
        except Exception as exc:  # polling goes on at the next tick; say so once per error
            self.post_message(RunPollFailed(str(exc).strip() or type(exc).__name__))
            return
        for progress in progress_list:
            self.post_message(RunProgress(progress))

    def on_run_progress(self, message: RunProgress) -> None:
        self.run_progress[message.run_id] = message.progress
        stack = self.screen_stack  # empty while the app shuts down
        if stack and isinstance(stack[-1], TrainScreen):
            stack[-1].post_message(RunProgress(message.progress))

    def on_run_poll_failed(self, message: RunPollFailed) -> None:
        if message.error != self._poll_error:
            self._poll_error = message.error
            self.notify(f"watching training jobs failed: {message.error}", severity="error",
                        timeout=10)

    async def action_quit(self) -> None:
        """Quit; while a job is running or queued, say first what happens to it."""
        try:
            active = self.store.list_runs(status=("running", "queued"))
        except Exception:  # a broken store must not keep the user in
            active = []
        if not active or isinstance(self.screen, ConfirmScreen):
            self.exit()
            return
        running = [r for r in active if r.status == "running"]
        queued = [r for r in active if r.status == "queued"]
        parts = []
        if running:
            parts.append(f"{_runs_words(running)} running in its own process: training goes on "
                         "after tuneloop closes, and reopening tuneloop picks it up.")
        if queued:
            parts.append(f"{_runs_words(queued)} queued: queued runs start when tuneloop is "
                         "open again.")
        farewell = " ".join(parts) + f" Follow it with `tuneloop runs show {active[0].id}`."

        def answered(yes: bool | None) -> None:
            if yes:
                self.farewell = farewell  # printed under the shell prompt once the TUI is gone
                self.exit(message=farewell)

        self.push_screen(
            ConfirmScreen("Quit tuneloop? " + " ".join(parts), yes="Quit", no="Stay"), answered
        )

    def get_key_display(self, binding: Binding) -> str:
        # "F2" reads better than Textual's lower-case "f2" in the footer and help.
        if not binding.key_display and binding.key[:1] == "f" and binding.key[1:].isdigit():
            return binding.key.upper()
        return super().get_key_display(binding)

    @property
    def area(self) -> str:
        """The area (mode) on display."""
        return self.current_mode

    def action_area(self, mode: str) -> None:
        if mode not in AREAS:
            self.notify(f"No area called {mode!r}.", severity="error")
            return
        # Leave any modal (help, confirm) first, so the key behaves the same everywhere.
        while len(self.screen_stack) > 1:
            self.pop_screen()
        self.switch_mode(mode)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
            return
        area = type(self.screen)
        self.push_screen(HelpScreen(getattr(area, "AREA_TITLE", None)))


def _runs_words(runs: list) -> str:
    ids = ", ".join(f"#{r.id}" for r in runs)
    return f"Run {ids} is" if len(runs) == 1 else f"Runs {ids} are"
