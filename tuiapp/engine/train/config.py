"""Job configurations: dataclasses with help text, choices and validation.

A config is what a run stores as its resolved config, so any run can be re-run from its row.
Presets are flat TOML files (``sample_data/presets/*.toml``) whose keys are the field names;
``--set key=value`` overrides a key from the command line. No Textual, no torch here: the Train
screen builds its form from these fields' metadata.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from tuiapp import paths
from tuiapp.engine.train.config_align import (
    DPO_LOSSES,
    DPOJobConfig,
    GRPOJobConfig,
    KTOJobConfig,
    PPOJobConfig,
    RewardJobConfig,
    RLOOJobConfig,
)
from tuiapp.engine.train.config_base import (
    CHAT_TEMPLATES,
    DEFAULT_SAMPLE_PROMPTS,
    DEVICES,
    DTYPES,
    METHODS,
    SCHEDULES,
    CommonTrainConfig,
    ConfigError,
    _field_type,
    opt,
)
from tuiapp.engine.train.config_sft import CPTJobConfig, SFTJobConfig

__all__ = [
    "CHAT_TEMPLATES", "CONFIG_CLASSES", "DEFAULT_SAMPLE_PROMPTS", "DEVICES", "DPO_LOSSES", "DTYPES",
    "METHODS", "SCHEDULES", "CPTJobConfig", "CommonTrainConfig", "ConfigError", "DPOJobConfig",
    "GRPOJobConfig", "KTOJobConfig", "PPOJobConfig", "RLOOJobConfig", "RewardJobConfig",
    "SFTJobConfig", "coerce", "config_class", "field_help", "from_dict", "list_presets",
    "load_config", "opt", "parse_override",
]

CONFIG_CLASSES: dict[str, type[CommonTrainConfig]] = {
    "sft": SFTJobConfig,
    "cpt": CPTJobConfig,
    "dpo": DPOJobConfig,
    "kto": KTOJobConfig,
    "reward": RewardJobConfig,
    "ppo": PPOJobConfig,
    "grpo": GRPOJobConfig,
    "rloo": RLOOJobConfig,
}


# --- loading ----------------------------------------------------------------------------------


def config_class(kind: str) -> type[CommonTrainConfig]:
    try:
        return CONFIG_CLASSES[kind]
    except KeyError:
        raise ConfigError("kind", f"unknown job kind {kind!r}; known: {', '.join(CONFIG_CLASSES)}") from None


def from_dict(kind: str, values: dict[str, Any]) -> CommonTrainConfig:
    cls = config_class(kind)
    known = {f.name for f in fields(cls)}
    values = {k: v for k, v in values.items() if k != "kind"}
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(key, f"not a {kind} setting{hint}")
    return cls(**values)


def load_config(path: str | Path, overrides: list[str] | None = None, kind: str | None = None) -> CommonTrainConfig:
    """Read a TOML preset, apply ``key=value`` overrides, validate."""
    path = Path(path)
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("config", f"{path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None
    file_kind = values.get("kind")
    if kind and file_kind and file_kind != kind:
        raise ConfigError("kind", f"{path} is a {file_kind} preset, not {kind}")
    kind = kind or file_kind
    if not kind:
        raise ConfigError("kind", f"{path} does not say its kind (add kind = \"sft\")")
    cls = config_class(kind)
    for item in overrides or []:
        key, value = parse_override(item)
        values[key] = coerce(cls, key, value)
    return from_dict(kind, values)


def parse_override(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError("--set", f"expected key=value, got {item!r}")
    return key.strip(), value.strip()


def coerce(cls: type, key: str, text: str) -> Any:
    """Turn a command-line string into the field's type."""
    by_name = {f.name: f for f in fields(cls)}
    if key not in by_name:
        close = difflib.get_close_matches(key, by_name, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(key, f"not a {cls.kind} setting{hint}")
    kind = _field_type(cls, key)
    try:
        if kind is bool:
            low = text.lower()
            if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError
            return low in ("true", "1", "yes", "on")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is list:
            # Prompts contain commas, so a list with any '|' is split on '|' instead.
            sep = "|" if "|" in text else ","
            return [part.strip() for part in text.split(sep) if part.strip()]
        return text
    except ValueError:
        raise ConfigError(key, f"expected {kind.__name__}, got {text!r}") from None


def field_help(cls: type) -> list[dict[str, Any]]:
    """Fields with their help, type, default and choices — for --help and the Train form."""
    out = []
    for f in fields(cls):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        out.append(
            {
                "name": f.name,
                "type": _field_type(cls, f.name).__name__,
                "default": default,
                "help": f.metadata.get("help", ""),
                "choices": f.metadata.get("choices"),
                "group": f.metadata.get("group", "training"),
            }
        )
    return out


def list_presets(folder: Path | None = None) -> dict[str, Path]:
    folder = folder or paths.PRESETS_DIR
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}
