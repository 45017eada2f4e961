"""Train: configure a job (kind, preset, base model, dataset version, every config field), check
it with pre-flight, start or queue it, and watch the selected run live.

Nothing slow runs on the event loop: pre-flight (it imports torch), submit, cancel, resume and
every store read run in thread workers that post messages. Progress comes from the app's one
poll worker as `RunProgress` messages (coalesced); the curves are re-read from the store in a
worker when progress for the watched run arrives. Validation of the form is cheap (building a
dataclass) and happens on every keystroke.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, DataTable, Input, Label, Select, Static

from tuiapp.messages import (
    TrainChoicesLoaded,
    WorkFailed,
)
from tuiapp.screens.areas import AreaScreen
from tuiapp.screens.train_panels import (
    DATASET_KINDS,
    QUEUE_COLUMNS,
    TRAIN_KINDS,
)
from tuiapp.screens.train_runs import TrainRunsMixin
from tuiapp.screens.train_submit import TrainSubmitMixin, _key, _readable
from tuiapp.widgets.config_form import ConfigForm
from tuiapp.widgets.run_monitor import RunMonitor

NO_PRESET = "(field defaults)"
DEFAULT_PRESETS = {
    "sft": "demo-sft-lora",
    "cpt": "demo-cpt-quick",
    "dpo": "demo-dpo",
    "kto": "demo-kto",
    "reward": "demo-reward",
    "ppo": "demo-ppo",
    "grpo": "demo-grpo",
    "rloo": "demo-rloo",
}
# Chosen by the pickers above the form, so not repeated in it.
JOB_FIELDS = ("base_model", "dataset")


class TrainScreen(TrainSubmitMixin, TrainRunsMixin, AreaScreen):
    AREA = "train"
    AREA_TITLE = "Train"
    BINDINGS = [
        Binding("ctrl+t", "preflight", "Pre-flight", id="train.preflight"),
        Binding("ctrl+s", "start", "Start", id="train.start"),
        Binding("ctrl+l", "queue", "Queue", id="train.queue"),
        Binding("ctrl+b", "cancel_run", "Cancel run", id="train.cancel"),
        Binding("ctrl+n", "resume_run", "Resume run", id="train.resume"),
        Binding("ctrl+r", "refresh", "Refresh lists", id="train.refresh", show=False),
        # the footer keeps room for the job keys; help, palette and the monitor list these
        Binding("alt+left", "older_samples", "Older samples", id="train.older_samples",
                show=False),
        Binding("alt+right", "newer_samples", "Newer samples", id="train.newer_samples",
                show=False),
    ]
    DEFAULT_CSS = """
    #train-body { height: 1fr; }
    #train-left { width: 46%; min-width: 44; max-width: 64; padding: 0 1; border-right: vkey $panel; }
    #train-left .section-title { margin-top: 0; }
    .tr-row { height: 1; }
    .tr-label { width: 12; color: $text-muted; }
    .tr-row Select, .tr-row Input { width: 1fr; }
    #train-kind { width: 12; }
    #train-job-error { color: $error; height: auto; }
    #train-form { height: 1fr; border-top: hkey $panel; }
    #train-field-help { height: 2; color: $text-muted; }
    #train-buttons { height: 1; }
    #train-buttons Button { margin-right: 1; }
    #train-right { width: 1fr; padding: 0 1; }
    #train-right .section-title { margin-top: 0; }
    #train-preflight-box { height: auto; max-height: 9; }
    #train-queue { height: 6; max-height: 20%; }
    #train-monitor { border-top: hkey $panel; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.kind = "sft"
        self.fields: list[dict[str, Any]] = []
        self.presets: dict[str, Any] = {}
        self.versions: list[Any] = []
        self.config: Any = None
        self.errors: dict[str, str] = {}
        self.preflight_report: dict | None = None
        self.preflight_key: str | None = None
        self.preflight_running = False
        self.submitting = False
        self.queue: list[Any] = []
        self.progress_messages = 0  # RunProgress handled (after coalescing)
        self.choices_loaded = False
        self.preset_kind: str | None = None  # the kind whose default preset was applied
        self._model_options: list[tuple[str, str]] = [("demo", "demo")]
        self._dataset_options: list[tuple[str, str]] = []
        # A dataset version id asked for by another screen (`request`): picked once the lists
        # load, and it wins over the dataset the kind's default preset names.
        self.requested_dataset: str | None = None
        self._preset_pending = False  # a default preset was picked; its Changed is on the way

    @staticmethod
    def request(app: Any, kind: str, version_id: Any) -> None:
        """Open Train with `kind` and dataset version `version_id` picked (the Label screen's
        "train from these labels"). The request waits on the app until Train is mounted and
        shown, so it works whether or not Train was opened before."""
        app.train_request = (kind, str(version_id))
        app.action_area("train")

    # ---- layout -------------------------------------------------------------------------

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="train-body"):
            with Vertical(id="train-left"):
                yield Static("Job", classes="section-title")
                with Horizontal(classes="tr-row"):
                    yield Label("kind", classes="tr-label")
                    yield Select(
                        [(k, k) for k in TRAIN_KINDS],
                        value="sft",
                        allow_blank=False,
                        compact=True,
                        id="train-kind",
                    )
                    yield Label("  preset ", classes="tr-label")
                    yield Select([], prompt=NO_PRESET, compact=True, id="train-preset")
                with Horizontal(classes="tr-row"):
                    yield Label("base model", classes="tr-label")
                    yield Select([("demo", "demo")], value="demo", allow_blank=False,
                                 compact=True, id="train-model")
                with Horizontal(classes="tr-row"):
                    yield Label("  or folder", classes="tr-label")
                    yield Input(placeholder="a model folder (overrides the pick)", compact=True,
                                id="train-model-path")
                with Horizontal(classes="tr-row"):
                    yield Label("dataset", classes="tr-label")
                    yield Select([], prompt="no dataset version", compact=True, id="train-dataset")
                yield Static("", id="train-job-error")
                yield Vertical(id="train-form-box")
                yield Static("", id="train-field-help")
                with Horizontal(id="train-buttons"):
                    yield Button("Pre-flight ^t", id="train-preflight-button", compact=True)
                    yield Button("Start ^s", id="train-start", variant="primary", compact=True)
                    yield Button("Queue ^l", id="train-queue-button", compact=True)
            with Vertical(id="train-right"):
                yield Static("Pre-flight", classes="section-title")
                with VerticalScroll(id="train-preflight-box"):
                    yield Static(
                        Text("Not checked yet: ^t measures the job before it runs.", "dim"),
                        id="train-preflight",
                    )
                yield Static("Runs  (^b cancel · ^n resume)", classes="section-title")
                yield DataTable(id="train-queue", cursor_type="row", zebra_stripes=True)
                yield RunMonitor(id="train-monitor")

    async def on_mount(self) -> None:
        self.query_one("#train-queue", DataTable).add_columns(*QUEUE_COLUMNS)
        self.query_one("#train-job-error").display = False
        await self._build_form("sft")
        if not await self.take_request():
            self.load_choices("sft")
        self.load_queue()

    async def on_screen_resume(self) -> None:
        if not self.is_mounted:
            return
        # versions (a labels export), runs and models may have appeared while away: the lists
        # reload, keeping the user's choices and edits
        if not await self.take_request():
            self.load_choices(self.kind)
        self.load_queue()
        watched = self.monitor.run_id
        if watched is not None and watched in self.app_progress:
            self.monitor.show_progress(self.app_progress[watched])

    async def take_request(self) -> bool:
        """Apply a pending `request` (kind, dataset version); False when there is none."""
        request = getattr(self.app, "train_request", None)
        if request is None:
            return False
        self.app.train_request = None
        kind, self.requested_dataset = request
        if kind != self.kind:
            with self.prevent(Select.Changed):
                self.query_one("#train-kind", Select).value = kind
            await self._switch_kind(kind)
        else:
            self.load_choices(kind)
        return True

    @property
    def form(self) -> ConfigForm:
        return self.query_one("#train-form", ConfigForm)

    # ---- the form -----------------------------------------------------------------------

    async def _build_form(self, kind: str, values: dict | None = None) -> None:
        self.kind = kind
        self.fields = [f for f in self.engine.config_fields(kind) if f["name"] not in JOB_FIELDS]
        box = self.query_one("#train-form-box")
        await box.remove_children()
        await box.mount(ConfigForm(self.fields, values, id="train-form"))
        self.revalidate()

    def _base_model(self) -> str:
        typed = self.query_one("#train-model-path", Input).value.strip()
        if typed:
            return typed
        value = self.query_one("#train-model", Select).value
        return "" if value is Select.NULL else str(value)

    def _dataset(self) -> str:
        value = self.query_one("#train-dataset", Select).value
        return "" if value is Select.NULL else str(value)

    def revalidate(self) -> None:
        """Build the config from what is on screen; show what the config refuses, where."""
        try:
            form = self.form
        except Exception:  # the form is being rebuilt (kind changed)
            return
        values = form.values() | {"base_model": self._base_model(), "dataset": self._dataset()}
        self.config, self.errors = self.engine.build_config(self.kind, values)
        form.show_errors(self.errors)
        job_errors = [f"✗ {k}: {v}" for k, v in self.errors.items() if k not in form.by_name]
        box = self.query_one("#train-job-error", Static)
        box.update(Text("\n".join(job_errors)))
        box.display = bool(job_errors)
        if self.preflight_report is not None:
            self._show_preflight()
        self._update_buttons()

    @property
    def config_key(self) -> str | None:
        return _key(self.config.to_dict()) if self.config is not None else None

    @property
    def refused(self) -> bool:
        """Pre-flight refused exactly this config."""
        return (
            self.preflight_report is not None
            and self.preflight_key == self.config_key
            and bool(self.preflight_report.get("refusals"))
        )

    @property
    def can_start(self) -> bool:
        return self.config is not None and not self.refused and not self.submitting

    def _update_buttons(self) -> None:
        self.query_one("#train-start", Button).disabled = not self.can_start
        self.query_one("#train-queue-button", Button).disabled = not self.can_start
        self.query_one("#train-preflight-button", Button).disabled = (
            self.config is None or self.preflight_running
        )

    @on(ConfigForm.Changed)
    @on(Input.Changed, "#train-model-path")
    @on(Select.Changed, "#train-model")
    @on(Select.Changed, "#train-dataset")
    def _form_changed(self, event) -> None:
        event.stop()
        self.revalidate()

    def on_descendant_focus(self, event) -> None:
        wid = getattr(event.widget, "id", None) or ""
        if wid.startswith("cf-") and self.is_mounted:
            name = wid[3:]
            self.query_one("#train-field-help", Static).update(
                Text.assemble((name, "bold"), ": ", self.form.help_for(name))
            )

    @on(Select.Changed, "#train-kind")
    async def _kind_changed(self, event: Select.Changed) -> None:
        event.stop()
        kind = str(event.value)
        # a stale event (the Select's first value, posted after a request changed it) is no pick
        if kind == self.kind or event.select.value != event.value:
            return
        self.requested_dataset = None  # a pick by hand ends what another screen asked for
        await self._switch_kind(kind)

    async def _switch_kind(self, kind: str) -> None:
        self.preflight_report = self.preflight_key = None
        self._show_preflight()
        await self._build_form(kind)
        self.load_choices(kind)

    @on(Select.Changed, "#train-preset")
    def _preset_changed(self, event: Select.Changed) -> None:
        event.stop()
        self._preset_pending = False
        if event.value is Select.NULL:
            return
        path = self.presets.get(str(event.value))
        if path is None:
            return
        try:
            values = self.engine.load_preset(path)  # a small TOML file
        except Exception as exc:
            self.notify(f"preset {event.value}: {_readable(exc)}", severity="error", timeout=8)
            return
        self.apply_values(values)

    def apply_values(self, values: dict[str, Any]) -> None:
        """Fill the pickers and the form from a config dict (a preset)."""
        model, dataset = str(values.get("base_model", "")), str(values.get("dataset", ""))
        if self.requested_dataset is not None:  # asked for by another screen: it wins once
            dataset, self.requested_dataset = self.requested_dataset, None
        picker = self.query_one("#train-model", Select)
        options = self._model_options
        if model and model not in [v for _, v in options]:
            options = [*options, (model, model)]
            self._model_options = options
            picker.set_options(options)
        with self.prevent(Select.Changed, Input.Changed):
            if model:
                picker.value = model
            self.query_one("#train-model-path", Input).value = ""
            self._select_dataset(dataset)
        self.form.set_values({k: v for k, v in values.items() if k not in JOB_FIELDS})

    def _select_dataset(self, spec: str) -> None:
        """Pick the version a preset names (id or name; the newest of that name)."""
        select = self.query_one("#train-dataset", Select)
        # A file path matches the version imported from that file (resolved as the engine will,
        # relative to the working directory).
        where = str(Path(spec).expanduser().resolve()) if spec else ""
        wanted = next(
            (str(v.id) for v in self.versions if spec in (str(v.id), v.name) or where == v.path),
            None,
        )
        if wanted is None and spec:
            self._dataset_options = [*self._dataset_options, (f"{spec} (not imported)", spec)]
            select.set_options(self._dataset_options)
            wanted = spec
        if wanted is not None:
            select.value = wanted

    # ---- the monitor's samples: scrub through checkpoints ---------------------------------

    def action_older_samples(self) -> None:
        if not self.monitor.older_samples():
            self.notify("no earlier checkpoint with samples", timeout=2)

    def action_newer_samples(self) -> None:
        if not self.monitor.newer_samples():
            self.notify("already at the newest checkpoint", timeout=2)

    # ---- choices (presets, models, dataset versions) -------------------------------------

    def action_refresh(self) -> None:
        self.load_choices(self.kind)
        self.load_queue()

    @work(thread=True, exclusive=True, group="train-choices", exit_on_error=False)
    def load_choices(self, kind: str) -> None:
        try:
            presets = self.engine.list_presets(kind)
            models = [m for m in self.store.list_models() if m.kind == "hf"]
            wanted = DATASET_KINDS.get(kind, ())
            versions = [v for v in self.store.list_dataset_versions() if v.kind in wanted]
        except Exception as exc:
            self.post_message(WorkFailed("reading presets and the store", _readable(exc)))
            return
        self.post_message(TrainChoicesLoaded(kind, presets, models, versions))

    def on_train_choices_loaded(self, message: TrainChoicesLoaded) -> None:
        if message.kind != self.kind:
            return
        self.choices_loaded = True
        self.presets = dict(message.presets)
        self.versions = sorted(message.versions, key=lambda v: -v.id)  # newest first
        models = [("demo (the demo base model)", "demo")]
        if self.kind == "cpt":
            models.append(("scratch (fresh weights)", "scratch"))
        models += [(f"#{m.id} {m.name}", str(m.id)) for m in message.models]
        self._model_options = models
        self._dataset_options = [
            (f"#{v.id} {v.name} · {v.rows} rows", str(v.id)) for v in self.versions
        ]
        model_select = self.query_one("#train-model", Select)
        dataset_select = self.query_one("#train-dataset", Select)
        keep_model, keep_dataset = model_select.value, dataset_select.value
        with self.prevent(Select.Changed):
            model_select.set_options(models)
            values = [v for _, v in models]
            model_select.value = keep_model if keep_model in values else values[0]
            dataset_select.set_options(self._dataset_options)
            if self.requested_dataset in [v for _, v in self._dataset_options]:
                dataset_select.value = self.requested_dataset
            elif keep_dataset in [v for _, v in self._dataset_options]:
                dataset_select.value = keep_dataset
            elif self._dataset_options:
                dataset_select.value = self._dataset_options[0][1]
            preset_select = self.query_one("#train-preset", Select)
            keep_preset = preset_select.value
            preset_select.set_options([(name, name) for name in self.presets])
            if keep_preset in self.presets and self.preset_kind == self.kind:
                preset_select.value = keep_preset  # a refresh keeps the user's edits
        if self.preset_kind != self.kind:
            # First load for this kind: its demo preset fills the form (through Changed).
            self.preset_kind = self.kind
            default = DEFAULT_PRESETS.get(self.kind)
            if default in self.presets:
                preset_select.value = default  # apply_values uses the requested dataset
                self._preset_pending = True
                self.revalidate()
                return
        if not self._preset_pending:  # else the preset, when it lands, takes the request
            self.requested_dataset = None
        self.revalidate()

    # ---- buttons and errors ---------------------------------------------------------------

    def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {
            "train-preflight-button": self.action_preflight,
            "train-start": self.action_start,
            "train-queue-button": self.action_queue,
        }
        if event.button.id in actions:
            event.stop()
            actions[event.button.id]()

    def on_work_failed(self, message: WorkFailed) -> None:
        if message.what == "pre-flight":
            self.preflight_running = False
            self._update_buttons()
        self.notify(f"{message.what} failed: {message.error}", severity="error", timeout=8)
