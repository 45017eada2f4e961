"""Compare: 2–4 models answer one prompt side by side, a prompt set scored across them, and a
blind A/B round that records a preference label.

Every answer streams from its own thread worker iterating `engine.generate_stream(...)`; the
worker accumulates the text and posts coalescing `PaneChunk` messages, so a fast model never
floods the event loop and the prompt editor stays responsive while panes stream. Panes of one
base model take turns on its lock inside the engine; GGUF panes run truly in parallel.
The Generator stores every finished answer; the prompt history is read back from the store.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import (
    Input,
    Label,
    OptionList,
    Select,
    Static,
    TabbedContent,
    TabPane,
    TextArea,
)
from textual.widgets.option_list import Option

from tuiapp.messages import CompareChoicesLoaded, PaneChunk, PaneDone, PaneFailed, WorkFailed
from tuiapp.screens.areas import AreaScreen
from tuiapp.screens.compare_batch import BatchPanel, short
from tuiapp.screens.compare_blind import BLIND_PANES, BlindMixin
from tuiapp.screens.prompt_area import PromptArea
from tuiapp.screens.references import reference_for, reference_index, reference_line
from tuiapp.screens.tab_keys import TabKeysMixin, tab_bindings
from tuiapp.widgets.model_picker import ModelPicker
from tuiapp.widgets.output_pane import OutputPane

MAX_PANES = 4
PROMPT_KINDS = ("prompt", "sft")
# (input id, label, params key, type, default)
SETTINGS = (
    ("cmp-max", "max tok", "max_new_tokens", int, "128"),
    ("cmp-temp", "temp", "temperature", float, "0"),
    ("cmp-top-p", "top-p", "top_p", float, "1"),
    ("cmp-seed", "seed", "seed", int, "0"),
)
NO_MODELS = ("No models to compare yet. Build the demo base (`tuneloop demo build-base`), finish "
             "an SFT run, or type a model folder, adapter folder or .gguf path in REF.")
# A pane redraws at most this often; faster tokens are folded into the next redraw. Every
# redraw is main-thread work the generating threads wait for (the GIL; a small model's forward
# pass is mostly Python), so 5 per second per pane: still live to the eye. A redraw repaints
# only the pane's changed rows and figures line (~5 ms), never a layout; bench/compare_overhead.py
# measures the whole UI at ~0.1 s of event-loop CPU per three 128-token answers.
REDRAW_EVERY_S = 0.2
FIGURE_KEYS = ("tokens", "latency_s", "first_token_s", "tokens_per_s", "finish_reason")
# Narrower than this, side-by-side panes wrap words every few letters: 3-4 panes go two by two.
MIN_PANE_WIDTH = 24


def _readable(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


class CompareScreen(TabKeysMixin, BlindMixin, AreaScreen):
    AREA = "compare"
    AREA_TITLE = "Compare"
    BINDINGS = [
        Binding("ctrl+g", "generate", "Generate", id="compare.generate"),
        Binding("ctrl+b", "stop", "Stop", id="compare.stop"),
        # the prompt's title says alt+↑↓; help and palette list them too
        Binding("alt+up", "history(1)", "Older prompt", id="compare.history_older", show=False),
        Binding("alt+down", "history(-1)", "Newer prompt", id="compare.history_newer",
                show=False),
        Binding("ctrl+r", "run_batch", "Batch eval", id="compare.run_batch"),
        Binding("ctrl+o", "blind", "Blind A/B", id="compare.blind"),
        Binding("1", "choose('a')", "A is better", id="compare.blind_a"),
        Binding("2", "choose('b')", "B is better", id="compare.blind_b"),
        Binding("3", "choose('tie')", "Tie", id="compare.blind_tie"),
        Binding("4", "choose('both_bad')", "Both bad", id="compare.blind_both_bad"),
        *tab_bindings("compare"),
    ]
    TABS_ID = "cmp-tabs"
    TAB_IDS = ("cmp-tab-side", "cmp-tab-batch", "cmp-tab-blind")
    DEFAULT_CSS = """
    #cmp-tabs { height: 1fr; }
    #cmp-side { height: 1fr; }
    #cmp-left { width: 34%; min-width: 32; max-width: 44; padding: 0 1;
                border-right: vkey $panel; }
    #cmp-left .section-title { height: 1; text-style: bold; color: $accent; margin-top: 1; }
    #cmp-left .section-title.-first { margin-top: 0; }
    #cmp-system { width: 1fr; }
    #cmp-prompt { height: 6; }
    #cmp-reference { display: none; height: auto; padding: 0 1; }
    .cmp-settings { height: 1; margin-top: 1; }
    .cmp-settings Label { width: 8; color: $text-muted; }
    .cmp-settings Input { width: 1fr; margin-right: 1; }
    #cmp-history { height: 1fr; min-height: 4; }
    #cmp-panes { width: 1fr; }
    #cmp-panes.-grid { layout: grid; grid-size: 2; }
    #blind-status { height: 2; padding: 0 1; }
    #blind-prompt { height: auto; max-height: 5; border: round $panel; padding: 0 1; }
    #blind-panes { height: 1fr; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.choices: list[tuple[str, str]] = []
        self.history: list[tuple[str, str | None]] = []
        self.choices_loaded = False
        self.references: dict[str, str] = {}  # held-out prompt → its reference answer
        self._prompt_sets: list[tuple[str, str]] = []
        self.generating = False
        self.gen = 0
        self._pane_gen: dict[str, int] = {}
        self._cancels: dict[str, threading.Event] = {}
        self._started: dict[str, float] = {}
        self.refs_shown: list[str] = []
        self.results: dict[str, dict] = {}  # pane id -> {"text", figures...} of the last answers
        self._history_pos = -1
        self._draft: tuple[str, str] | None = None

    def compose_body(self) -> ComposeResult:
        with TabbedContent(id="cmp-tabs", initial="cmp-tab-side"):
            with TabPane("Side by side", id="cmp-tab-side"), Horizontal(id="cmp-side"):
                with VerticalScroll(id="cmp-left"):
                    yield Static("Models (2–4)", classes="section-title -first")
                    yield ModelPicker(id="cmp-models")
                    yield Static("System prompt (optional)", classes="section-title")
                    yield Input(placeholder="e.g. Answer in one sentence.", id="cmp-system",
                                compact=True)
                    yield Static("Prompt  (ctrl+g generate · alt+↑↓ history)",
                                 classes="section-title")
                    yield PromptArea(id="cmp-prompt", compact=True, placeholder="Ask something…")
                    yield Static("", id="cmp-reference")
                    for row in (SETTINGS[:2], SETTINGS[2:]):
                        with Horizontal(classes="cmp-settings"):
                            for input_id, label, _, _, default in row:
                                yield Label(label)
                                yield Input(default, id=input_id, compact=True)
                    yield Static("History", classes="section-title")
                    yield OptionList(id="cmp-history", compact=True)
                with Horizontal(id="cmp-panes"):
                    for i in range(MAX_PANES):
                        yield OutputPane(id=f"cmp-pane-{i}")
            with TabPane("Batch eval", id="cmp-tab-batch"):
                yield BatchPanel(id="cmp-batch")
            with TabPane("Blind A/B", id="cmp-tab-blind"), Vertical():
                yield Static(Text("Pick two models and a prompt on Side by side, then press "
                                  "ctrl+o: their answers appear here as A and B, sides shuffled."),
                             id="blind-status")
                prompt = Static("", id="blind-prompt")
                prompt.border_title = "Prompt"
                yield prompt
                with Horizontal(id="blind-panes"):
                    yield OutputPane("A", id=BLIND_PANES[0])
                    yield OutputPane("B", id=BLIND_PANES[1])

    def on_mount(self) -> None:
        for i in range(MAX_PANES):
            self.query_one(f"#cmp-pane-{i}").display = i < 2
        self.refresh_choices()

    def on_screen_resume(self) -> None:
        if self.is_mounted and self.choices_loaded:
            self.refresh_choices()  # runs trained meanwhile join the pickers (no restart)

    def on_unmount(self) -> None:
        for event in self._cancels.values():
            event.set()
        close = getattr(self.engine, "close_generator", None)
        if close is not None:
            close()

    # ---- choices, history, prompt sets, stored evaluations (read off the event loop) ----

    def refresh_choices(self) -> None:
        self._load_choices()

    @work(thread=True, exclusive=True, group="compare-load", exit_on_error=False)
    def _load_choices(self) -> None:
        try:
            choices = getattr(self.engine, "model_choices", None)
            models = choices(self.store) if choices is not None else []
            seen: dict[tuple[str, str | None], None] = {}
            for g in self.store.list_generations(limit=300):
                seen.setdefault((g.prompt, g.system), None)
            versions = [v for v in self.store.list_dataset_versions() if v.kind in PROMPT_KINDS]
            prompt_sets = [(f"{v.name} · v{v.id} · {v.kind} · {v.rows} rows", str(v.id))
                           for v in reversed(versions)]
            evaluations = self.store.list_evaluations()
            self.references = reference_index(self.store)  # read by the handler below
        except Exception as exc:
            self.post_message(WorkFailed("loading the model list", _readable(exc)))
            return
        self.post_message(CompareChoicesLoaded(models, list(seen), prompt_sets, evaluations))

    def on_compare_choices_loaded(self, message: CompareChoicesLoaded) -> None:
        # only what changed is redrawn: rebuilding pickers and tables re-lays out the screen,
        # and this runs after every generation (for the history)
        if message.models != self.choices or not self.choices_loaded:
            self.choices = message.models
            self.query_one(ModelPicker).set_choices(message.models)
        first = self.query_one("#cmp-pane-0", OutputPane)
        if not message.models and first.state == "idle":
            first.show(NO_MODELS)
        if message.history != self.history:
            self.history = message.history
            options = self.query_one("#cmp-history", OptionList)
            options.clear_options()
            options.add_options(Option(Text(short(p, 40)), id=str(i))
                                for i, (p, _) in enumerate(self.history))
        batch = self.query_one(BatchPanel)
        if message.prompt_sets != self._prompt_sets:
            self._prompt_sets = message.prompt_sets
            batch.set_prompt_sets(message.prompt_sets)
        if [e.id for e in message.evaluations] != [e.id for e in batch.evaluations] \
                or not self.choices_loaded:
            batch.set_evaluations(message.evaluations)
        self.choices_loaded = True
        self._show_reference()

    @on(TextArea.Changed, "#cmp-prompt")
    def _show_reference(self) -> None:
        """The prompt's reference answer under it, when it is a held-out question that has one."""
        reference = reference_for(self.references, self.prompt)
        box = self.query_one("#cmp-reference", Static)
        box.display = reference is not None
        box.update(reference_line(reference) if reference else "")

    def on_work_failed(self, message: WorkFailed) -> None:
        if message.what == "blind label" and self.blind:
            self.blind["saving"] = False  # the choice can be made again
        self.notify(f"{message.what} failed: {message.error}", severity="error", timeout=10)

    # ---- the form ----

    @property
    def prompt(self) -> str:
        return self.query_one("#cmp-prompt", TextArea).text

    def set_prompt(self, prompt: str, system: str | None = None) -> None:
        self.query_one("#cmp-prompt", TextArea).text = prompt
        self.query_one("#cmp-system", Input).value = system or ""

    def params(self) -> tuple[dict, str | None]:
        """Sampling settings from the form, or an error sentence naming the bad field."""
        values: dict[str, Any] = {}
        for input_id, label, key, kind, _ in SETTINGS:
            text = self.query_one(f"#{input_id}", Input).value.strip()
            try:
                values[key] = kind(text)
            except ValueError:
                what = "a whole number" if kind is int else "a number"
                return {}, f"{label} must be {what} (got {text!r})"
        if values["max_new_tokens"] < 1:
            return {}, "max tok must be at least 1"
        if values["temperature"] < 0:
            return {}, "temp must be ≥ 0 (0 is greedy)"
        if not 0 < values["top_p"] <= 1:
            return {}, "top-p must be in (0, 1]"
        return values, None

    def _request(self, at_least: int) -> tuple[list[str], str, str | None, dict] | None:
        refs = self.query_one(ModelPicker).refs()
        prompt = self.prompt.strip()
        params, error = self.params()
        if error is None and len(refs) < at_least:
            error = f"pick at least {at_least} model{'s' if at_least > 1 else ''}"
        if error is None and len(refs) > MAX_PANES:
            error = f"at most {MAX_PANES} models side by side (clear a slot or the typed REF)"
        if error is None and not prompt:
            error = "type a prompt first"
        if error:
            self.notify(error, severity="warning")
            return None
        system = self.query_one("#cmp-system", Input).value.strip() or None
        return refs, prompt, system, params

    # ---- streaming ----

    def _start_stream(self, pane_id: str, ref: str, prompt: str, params: dict,
                      system: str | None) -> None:
        self.gen += 1
        old = self._cancels.get(pane_id)
        if old is not None:
            old.set()  # a pane shows one answer: the previous one stops
        cancel = threading.Event()
        self._cancels[pane_id] = cancel
        self._pane_gen[pane_id] = self.gen
        self._started[pane_id] = time.perf_counter()
        self.query_one(f"#{pane_id}", OutputPane).start()
        self._stream_worker(pane_id, self.gen, ref, prompt, params, system, cancel)

    @work(thread=True, exit_on_error=False, group="compare-gen")
    def _stream_worker(self, pane_id: str, gen: int, ref: str, prompt: str, params: dict,
                       system: str | None, cancel: threading.Event) -> None:
        text, t0, posted, final = "", time.perf_counter(), float("-inf"), None
        try:
            # run the stream to its end (not just to the final chunk) so the backend's lock is
            # released here and now, not when the generator is collected
            for chunk in self.engine.generate_stream(ref, prompt, params, system=system,
                                                     cancel=cancel):
                if chunk.done:
                    final = chunk
                    continue
                text += chunk.text
                now = time.perf_counter()
                if now - posted >= REDRAW_EVERY_S:  # the final message carries the whole text
                    posted = now
                    self.post_message(PaneChunk(pane_id, gen, text, chunk.tokens, now - t0))
        except Exception as exc:  # a model that does not load, a bad REF: shown in the pane
            self.post_message(PaneFailed(pane_id, gen, _readable(exc)))
            return
        if final is None:
            self.post_message(PaneFailed(pane_id, gen, "the stream ended without a final answer"))
            return
        figures = {k: getattr(final, k, None) for k in FIGURE_KEYS}
        figures.update(final.meta or {})
        self.post_message(PaneDone(pane_id, gen, final.text, figures))

    def _current(self, pane: str, gen: int) -> bool:
        return self._pane_gen.get(pane) == gen

    def on_pane_chunk(self, message: PaneChunk) -> None:
        if self._current(message.pane, message.gen):
            self.query_one(f"#{message.pane}", OutputPane).show_progress(
                message.text, message.tokens, message.elapsed_s)

    def on_pane_done(self, message: PaneDone) -> None:
        if not self._current(message.pane, message.gen):
            return
        self._pane_gen.pop(message.pane, None)
        self._cancels.pop(message.pane, None)
        self.query_one(f"#{message.pane}", OutputPane).finish(message.text, message.figures)
        if message.pane in BLIND_PANES:
            self.blind_finished(message.pane, message.text, message.figures)
        else:
            self.results[message.pane] = {"text": message.text, **message.figures}
        self._maybe_finished()

    def on_pane_failed(self, message: PaneFailed) -> None:
        if not self._current(message.pane, message.gen):
            return
        self._pane_gen.pop(message.pane, None)
        self._cancels.pop(message.pane, None)
        self.query_one(f"#{message.pane}", OutputPane).fail(message.error)
        if message.pane in BLIND_PANES:
            self.blind_failed(message.error)
        self._maybe_finished()

    def _maybe_finished(self) -> None:
        if self.generating and not self._pane_gen:
            self.generating = False
            self.refresh_choices()  # the new prompt joins the history

    # ---- actions ----

    def action_generate(self) -> None:
        request = self._request(at_least=1)
        if request is None:
            return
        refs, prompt, system, params = request
        self.query_one("#cmp-tabs", TabbedContent).active = "cmp-tab-side"
        self.refs_shown = refs
        self.results = {}
        self.generating = True
        self._history_pos = -1
        self._fit_panes(len(refs))
        for i in range(MAX_PANES):
            pane = self.query_one(f"#cmp-pane-{i}", OutputPane)
            if i < len(refs):
                pane.set_title(self.query_one(ModelPicker).label_of(refs[i]))
                self._start_stream(pane.id, refs[i], prompt, params, system)
            else:
                pane.set_title("")

    def _fit_panes(self, count: int) -> None:
        """Show as many panes as models (at least two). A change re-lays out the whole screen
        (~0.1 s of main-thread time on a small box), so it happens when the picks change, not
        when Generate starts the streams."""
        for i in range(MAX_PANES):
            pane = self.query_one(f"#cmp-pane-{i}", OutputPane)
            shown = i < max(2, count)
            if pane.display != shown:
                pane.display = shown
        self._arrange_panes()

    def _arrange_panes(self) -> None:
        """Two by two when the panes in one row would be too narrow to read (a 100-column
        terminal with three models)."""
        box = self.query_one("#cmp-panes")
        count = sum(1 for i in range(MAX_PANES) if self.query_one(f"#cmp-pane-{i}").display)
        width = box.size.width or self.size.width
        grid = count > 2 and width / count < MIN_PANE_WIDTH
        if box.has_class("-grid") != grid:
            box.set_class(grid, "-grid")

    def on_resize(self) -> None:
        if self.is_mounted:
            self._arrange_panes()

    @on(Select.Changed, "ModelPicker Select")
    @on(Input.Changed, "ModelPicker Input")
    def _picks_changed(self) -> None:
        if not self._pane_gen:  # streaming panes stay put until they finish
            self._fit_panes(min(MAX_PANES, len(self.query_one(ModelPicker).refs())))

    def action_stop(self) -> None:
        if not self._cancels:
            self.notify("nothing is generating")
            return
        for event in self._cancels.values():
            event.set()

    def action_history(self, step: int) -> None:
        if not self.history:
            self.notify("no earlier prompts yet")
            return
        if self._history_pos == -1:
            self._draft = (self.prompt, self.query_one("#cmp-system", Input).value)
        pos = max(-1, min(len(self.history) - 1, self._history_pos + step))
        self._history_pos = pos
        if pos == -1:
            self.set_prompt(*(self._draft or ("", "")))
            return
        self.set_prompt(*self.history[pos])
        self.query_one("#cmp-history", OptionList).highlighted = pos

    @on(OptionList.OptionSelected, "#cmp-history")
    def _history_selected(self, event: OptionList.OptionSelected) -> None:
        pos = int(event.option.id)
        self._history_pos = pos
        self.set_prompt(*self.history[pos])
        self.query_one("#cmp-prompt", TextArea).focus()

    def action_run_batch(self) -> None:
        params, error = self.params()
        if error:
            self.notify(error, severity="warning")
            return
        self.query_one("#cmp-tabs", TabbedContent).active = "cmp-tab-batch"
        self.query_one(BatchPanel).run(self.query_one(ModelPicker).refs(), params)

    def action_blind(self) -> None:
        request = self._request(at_least=2)
        if request is None:
            return
        refs, prompt, system, params = request
        self.query_one("#cmp-tabs", TabbedContent).active = "cmp-tab-blind"
        picker = self.query_one(ModelPicker)
        self.start_blind(refs, prompt, system, params, {r: picker.label_of(r) for r in refs[:2]})

    def action_choose(self, choice: str) -> None:
        self.choose_blind(choice)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "choose":
            # only while a blind round waits for its answer (the digits type elsewhere)
            tabs = self.query("#cmp-tabs")
            return bool(tabs) and tabs.first(TabbedContent).active == "cmp-tab-blind" \
                and self.blind_ready()
        return True
