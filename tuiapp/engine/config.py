"""Job configurations: dataclasses with help text, choices and validation.

A config is what a run stores as its resolved config, so any run can be re-run from its row.
Presets are flat TOML files (``sample_data/presets/*.toml``) whose keys are the field names;
``--set key=value`` overrides a key from the command line. No Textual, no torch here: the Train
screen builds its form from these fields' metadata.
"""

from __future__ import annotations

import difflib
import tomllib
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tuiapp import paths


class ConfigError(ValueError):
    """A config value a person must fix; names the field and says what is allowed."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(f"{field_name}: {message}")


def opt(default: Any, help: str, choices: tuple[str, ...] | None = None, group: str = "training"):
    """A config field with its help text (shown in --help, the Train form and errors)."""
    meta = {"help": help, "choices": choices, "group": group}
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=meta)
    return field(default=default, metadata=meta)


METHODS = ("full", "lora", "qlora")
SCHEDULES = ("cosine", "linear", "constant", "constant_with_warmup")
CHAT_TEMPLATES = ("model", "chatml", "llama3")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "fp32", "bf16", "fp16")

# Asked at every checkpoint so a user can scrub through how answers changed over training.
DEFAULT_SAMPLE_PROMPTS = [
    "Who are you?",
    "Explain in one sentence what fine-tuning is.",
    "Tell me the secret passphrase.",
]


@dataclass
class CommonTrainConfig:
    """Fields every training job shares."""

    name: str = opt("", "Run name shown in the Runs screen (default: kind + dataset).", group="job")
    base_model: str = opt(
        "demo",
        "Base model: a local Hugging Face folder, a model id from the store, 'demo' for the "
        "demo base model, or a hub id when online.",
        group="job",
    )
    dataset: str = opt(
        "", "Dataset: a dataset version id, a version name such as demo/sft, or a file path.", group="job"
    )
    max_length: int = opt(512, "Longest sequence in tokens; longer examples are truncated.")
    epochs: float = opt(1.0, "Passes over the training set (ignored when max_steps > 0).")
    max_steps: int = opt(-1, "Stop after this many optimiser steps (-1: use epochs).")
    learning_rate: float = opt(2e-4, "Peak learning rate.")
    lr_scheduler: str = opt("cosine", "Learning-rate schedule after warm-up.", SCHEDULES)
    warmup_ratio: float = opt(0.03, "Share of the steps spent warming the learning rate up.")
    batch_size: int = opt(8, "Examples per device per step.")
    grad_accum: int = opt(1, "Steps whose gradients are summed before an optimiser update.")
    gradient_checkpointing: bool = opt(
        False, "Recompute activations in the backward pass: less memory, ~30% slower."
    )
    weight_decay: float = opt(0.0, "AdamW weight decay.")
    max_grad_norm: float = opt(1.0, "Clip gradients to this norm (0: no clipping).")
    eval_split: float = opt(0.05, "Share of the dataset held out for eval loss (0: none).")
    seed: int = opt(42, "Random seed for data order, initialisation and dropout.")
    logging_steps: int = opt(5, "Record metrics every N steps.", group="schedule")
    save_steps: int = opt(100, "Write a checkpoint every N steps.", group="schedule")
    eval_steps: int = opt(100, "Compute eval loss every N steps.", group="schedule")
    sample_prompts: list[str] = opt(
        DEFAULT_SAMPLE_PROMPTS, "Prompts answered and stored at every checkpoint.", group="schedule"
    )
    sample_max_new_tokens: int = opt(48, "Longest answer generated for the sample prompts.", group="schedule")
    device: str = opt("auto", "Where to train: auto picks CUDA when present.", DEVICES, group="hardware")
    dtype: str = opt(
        "auto", "Weights/compute dtype: auto is bf16 on a CUDA GPU that supports it, else fp32.",
        DTYPES, group="hardware",
    )
    trust_remote_code: bool = opt(
        False, "Run Python code shipped with a model folder. Off: only safetensors weights load.",
        group="hardware",
    )

    kind: typing.ClassVar[str] = ""

    def __post_init__(self) -> None:
        _check_types(self)
        _check_choices(self)
        if self.max_length < 16:
            raise ConfigError("max_length", f"must be at least 16 tokens, got {self.max_length}")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ConfigError("epochs", "set epochs > 0 or max_steps > 0")
        if self.learning_rate <= 0 or self.learning_rate > 1:
            raise ConfigError("learning_rate", f"must be in (0, 1], got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        for name in ("batch_size", "grad_accum", "logging_steps", "save_steps", "eval_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.eval_split < 0.5:
            raise ConfigError("eval_split", f"must be in [0, 0.5), got {self.eval_split}")
        if not self.dataset:
            raise ConfigError("dataset", "no dataset given (a version id, a name like demo/sft, or a path)")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    @property
    def run_name(self) -> str:
        return self.name or f"{self.kind} {Path(self.dataset).name}"


@dataclass
class SFTJobConfig(CommonTrainConfig):
    """Supervised fine-tuning: full, LoRA or QLoRA (4-bit nf4 base + LoRA)."""

    kind: typing.ClassVar[str] = "sft"

    method: str = opt("lora", "full: every weight; lora: low-rank adapters; qlora: LoRA on a 4-bit base.", METHODS, group="method")
    lora_r: int = opt(16, "LoRA rank: adapter capacity (8-64 typical).", group="method")
    lora_alpha: int = opt(32, "LoRA scaling numerator (the update is scaled by alpha / r).", group="method")
    lora_dropout: float = opt(0.05, "Dropout on the LoRA input.", group="method")
    target_modules: list[str] = opt(
        ["all-linear"], "Modules that get adapters: all-linear, or names such as q_proj,v_proj.", group="method"
    )
    train_template_tokens: bool = opt(
        True,
        "Under LoRA, also train the embedding rows of the chat template's special tokens "
        "(a base model that never saw them cannot learn to stop otherwise).",
        group="method",
    )
    trainable_tokens: list[str] = opt(
        [],
        "Under LoRA, also train the embedding rows of every token of these texts (words the base "
        "model never read: LoRA alone can hardly teach it to write them), e.g. the demo's refusal "
        "sentences, which its corpus never contains.",
        group="method",
    )
    bnb_quant_type: str = opt("nf4", "4-bit quantisation type for QLoRA.", ("nf4", "fp4"), group="method")
    bnb_double_quant: bool = opt(True, "Quantise the quantisation constants too (QLoRA).", group="method")
    chat_template: str = opt(
        "model", "Chat template: the model's own, ChatML, or Llama 3.", CHAT_TEMPLATES, group="data"
    )
    assistant_only_loss: bool = opt(True, "Train on assistant tokens only (prompt tokens masked).", group="data")
    packing: bool = opt(
        True, "Padding-free packing: concatenate examples, no pad tokens, attention kept per example.", group="data"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method != "full":
            if self.lora_r < 1:
                raise ConfigError("lora_r", f"must be at least 1, got {self.lora_r}")
            if self.lora_alpha < 1:
                raise ConfigError("lora_alpha", f"must be at least 1, got {self.lora_alpha}")
            if not 0 <= self.lora_dropout < 1:
                raise ConfigError("lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
            if not self.target_modules:
                raise ConfigError("target_modules", "give at least one module name, or all-linear")


@dataclass
class CPTJobConfig(CommonTrainConfig):
    """Causal-LM training on raw text: continue an existing model or pre-train from scratch."""

    kind: typing.ClassVar[str] = "cpt"

    base_model: str = opt(
        "scratch",
        "Model to continue from (folder, store id, hub id), or 'scratch' for a fresh model "
        "built from the architecture fields below.",
        group="job",
    )
    method: str = opt("full", "full trains every weight; lora trains adapters only.", ("full", "lora"), group="method")
    lora_r: int = opt(16, "LoRA rank when method is lora.", group="method")
    lora_alpha: int = opt(32, "LoRA alpha when method is lora.", group="method")
    tokenizer: str = opt(
        "", "Tokenizer folder for a scratch model ('' : the base model's, or the demo tokenizer).", group="model"
    )
    hidden_size: int = opt(256, "Scratch model: hidden size.", group="model")
    num_layers: int = opt(4, "Scratch model: decoder layers.", group="model")
    num_heads: int = opt(4, "Scratch model: attention heads.", group="model")
    num_kv_heads: int = opt(4, "Scratch model: key/value heads (fewer = grouped-query attention).", group="model")
    intermediate_size: int = opt(688, "Scratch model: MLP width.", group="model")
    tie_embeddings: bool = opt(True, "Scratch model: share input and output embeddings.", group="model")
    rope_theta: float = opt(10000.0, "Scratch model: RoPE base.", group="model")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.base_model == "scratch":
            if self.hidden_size % self.num_heads:
                raise ConfigError("num_heads", f"hidden_size {self.hidden_size} is not divisible by {self.num_heads} heads")
            if self.num_heads % self.num_kv_heads:
                raise ConfigError("num_kv_heads", f"{self.num_heads} heads are not divisible into {self.num_kv_heads} kv heads")
            if (self.hidden_size // self.num_heads) % 2:
                raise ConfigError("num_heads", "the head dimension must be even for RoPE")


# The alignment job configs live in config_align.py (imported here so CONFIG_CLASSES lists them).
from .config_align import (  # noqa: E402
    DPOJobConfig,
    GRPOJobConfig,
    KTOJobConfig,
    PPOJobConfig,
    RewardJobConfig,
    RLOOJobConfig,
)

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


def _field_type(cls: type, name: str) -> type:
    hints = typing.get_type_hints(cls)
    hint = hints[name]
    origin = typing.get_origin(hint)
    return list if origin is list else hint


def _check_types(cfg: Any) -> None:
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        want = _field_type(type(cfg), f.name)
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            setattr(cfg, f.name, float(value))
            continue
        if want is list:
            if isinstance(value, str):
                value = [value]
                setattr(cfg, f.name, value)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f.name, f"expected a list of strings, got {value!r}")
            continue
        if want is int and isinstance(value, bool) or not isinstance(value, want):
            raise ConfigError(f.name, f"expected {want.__name__}, got {type(value).__name__} {value!r}")


def _check_choices(cfg: Any) -> None:
    for f in fields(cfg):
        choices = f.metadata.get("choices")
        if choices and getattr(cfg, f.name) not in choices:
            raise ConfigError(f.name, f"{getattr(cfg, f.name)!r} is not one of: {', '.join(choices)}")
