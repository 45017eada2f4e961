"""A form generated from a job config's field metadata (`engine.config_fields(kind)`).

One row per field, grouped by the field's `group`: a Switch reading on/off for a bool, a Select for a field with
choices, an Input for everything else (numbers and strings typed as text, lists as comma- or
`|`-separated text, so prompts with commas still fit). The form does not judge values itself:
it posts `ConfigForm.Changed`, the screen asks the engine to build the config, and shows the
messages it gets back under the fields with `show_errors`.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label, Select, Static, Switch

from tuiapp.widgets.toggles import TextSwitch


def list_to_text(items: list[str]) -> str:
    """A list field as one line: commas unless an item has one, then `|`."""
    items = [str(i) for i in items]
    return " | ".join(items) if any("," in i for i in items) else ", ".join(items)


def field_text(value: Any) -> str:
    if isinstance(value, list):
        return list_to_text(value)
    return "" if value is None else str(value)


class ConfigForm(VerticalScroll):
    """`ConfigForm(fields, values)`; `values()` gives what is typed, `show_errors` marks fields."""

    DEFAULT_CSS = """
    ConfigForm { height: 1fr; }
    ConfigForm .cf-group { text-style: bold; color: $accent; margin-top: 1; height: 1; }
    ConfigForm .cf-row { height: 1; }
    ConfigForm .cf-label { width: 24; color: $text-muted; }
    ConfigForm .cf-row Input, ConfigForm .cf-row Select { width: 1fr; }
    ConfigForm .cf-row Switch { width: 5; height: 1; border: none; padding: 0; }
    ConfigForm .cf-row Switch:focus { border: none; background: $block-cursor-background; }
    ConfigForm .cf-error { color: $error; height: auto; padding-left: 24; }
    ConfigForm .-invalid { background: $error 25%; }
    """

    class Changed(Message):
        """A field's value changed (typed, toggled or picked); `name` is the field."""

        def __init__(self, form: ConfigForm, name: str | None) -> None:
            super().__init__()
            self.form = form
            self.name = name

        @property
        def control(self) -> ConfigForm:
            return self.form

    def __init__(
        self,
        fields: list[dict[str, Any]],
        values: dict[str, Any] | None = None,
        *,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.fields = list(fields)
        self.by_name = {f["name"]: f for f in self.fields}
        self.initial = {f["name"]: f["default"] for f in self.fields} | dict(values or {})
        self.errors: dict[str, str] = {}
        self._shown: dict[str, str] = {}  # field -> the error row's text on screen

    def compose(self) -> ComposeResult:
        groups: dict[str, list[dict[str, Any]]] = {}
        for f in self.fields:
            groups.setdefault(f.get("group") or "training", []).append(f)
        for group, members in groups.items():
            yield Static(group, classes="cf-group")
            for f in members:
                with Horizontal(classes="cf-row"):
                    yield Label(f["name"], classes="cf-label")
                    yield self._control(f, self.initial.get(f["name"], f["default"]))
                yield Static("", id=f"cf-{f['name']}-error", classes="cf-error")

    def _control(self, f: dict[str, Any], value: Any):
        wid, tip = f"cf-{f['name']}", f.get("help") or None
        if f["type"] == "bool":
            control = TextSwitch(bool(value), id=wid)  # says on/off in words
        elif f.get("choices"):
            options = [(c, c) for c in f["choices"]]
            if value not in f["choices"]:
                options.append((str(value), value))
            control = Select(options, value=value, allow_blank=False, id=wid, compact=True)
        else:
            control = Input(field_text(value), id=wid, compact=True)
        control.tooltip = tip
        return control

    def on_mount(self) -> None:
        for name in self.by_name:
            self.query_one(f"#cf-{name}-error").display = False

    # ---- values -----------------------------------------------------------------------------

    def control(self, name: str):
        return self.query_one(f"#cf-{name}")

    def values(self) -> dict[str, Any]:
        """Field → what the control holds: text for inputs, bool for switches, the choice."""
        out: dict[str, Any] = {}
        for name in self.by_name:
            control = self.control(name)
            out[name] = control.value
        return out

    def set_values(self, values: dict[str, Any]) -> None:
        """Fill fields (unknown keys ignored) and post one Changed for the lot."""
        with self.prevent(Input.Changed, Switch.Changed, Select.Changed):
            for name, value in values.items():
                f = self.by_name.get(name)
                if f is None:
                    continue
                control = self.control(name)
                if isinstance(control, Switch):
                    control.value = bool(value)
                elif isinstance(control, Select):
                    if value not in f["choices"]:
                        continue  # only the choices the field offers
                    control.value = value
                else:
                    control.value = field_text(value)
        self.post_message(self.Changed(self, None))

    def help_for(self, name: str) -> str:
        f = self.by_name.get(name)
        return f.get("help", "") if f else ""

    # ---- errors -----------------------------------------------------------------------------

    def show_errors(self, errors: dict[str, str]) -> None:
        """Show each message under its field; fields not named are cleared."""
        self.errors = {k: v for k, v in errors.items() if k in self.by_name}
        for name in self.by_name:
            box = self.query_one(f"#cf-{name}-error", Static)
            message = self.errors.get(name)
            text = f"✗ {message}" if message else ""
            # Only what changed is touched: every display flip re-lays out the form, and this
            # runs on every keystroke while the person is typing
            if self._shown.get(name, "") != text:
                self._shown[name] = text
                box.update(Text(text))
                box.display = bool(message)
                control = self.control(name)
                control.set_class(bool(message), "-invalid")
                if message and control.has_focus:
                    # the row under the field being typed in: keep it in view, not cut off
                    self.call_after_refresh(self.scroll_to_widget, box, animate=False)

    # ---- events -----------------------------------------------------------------------------

    def _changed(self, event: Input.Changed | Switch.Changed | Select.Changed) -> None:
        wid = event.control.id or ""
        if not wid.startswith("cf-"):
            return
        event.stop()
        self.post_message(self.Changed(self, wid[3:]))

    def on_input_changed(self, event: Input.Changed) -> None:
        self._changed(event)

    def on_switch_changed(self, event: Switch.Changed) -> None:
        self._changed(event)

    def on_select_changed(self, event: Select.Changed) -> None:
        self._changed(event)
