"""What every job configuration is made of: ``ConfigError``, ``opt`` (a field with its help),
the shared choices and ``CommonTrainConfig`` with its type and choice checks.

The job kinds' configs build on it (``config_sft``, ``config_align``); ``config`` is the registry
that loads presets. No Textual, no torch here: the Train screen builds its form from these fields.
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


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


# Adaptation methods (methods.py builds each; issue 19 compares them). lora/qlora/dora share the
# LoRA fields; prefix/prompt are prompt learning (num_virtual_tokens); bitfit trains the biases of
# the loaded model only; adapter (bottleneck adapters) is refused in words, see ADAPTER_REFUSAL.
METHODS = ("full", "lora", "qlora", "dora", "ia3", "prefix", "prompt", "bitfit", "adapter")
LORA_METHODS = ("lora", "qlora", "dora")
PROMPT_METHODS = ("prefix", "prompt")
# Preference jobs (DPO, KTO) take every method whose reference is the start model with the new
# adapter disabled, plus full and bitfit (a frozen copy or precomputed log-probs as reference).
ALIGN_METHODS = ("lora", "full", "dora", "ia3", "prefix", "prompt", "bitfit")
METHOD_HELP = (
    "full: every weight; lora: low-rank adapters; qlora: LoRA on a 4-bit base; dora: LoRA with "
    "weight decomposition (magnitude + direction); ia3: learned scaling vectors on keys, values "
    "and the MLP; prefix: prefix tuning (trained keys/values in every layer); prompt: prompt "
    "tuning (trained virtual input tokens); bitfit: bias terms only (the model must have biases); "
    "adapter: bottleneck adapters (not available with transformers 5.x)."
)
SCHEDULES = ("cosine", "linear", "constant", "constant_with_warmup")
CHAT_TEMPLATES = ("model", "chatml", "llama3")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "fp32", "bf16", "fp16")
DISTRIBUTED = ("ddp", "fsdp", "deepspeed")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")

# Asked at every checkpoint so a user can scrub through how answers changed over training.
DEFAULT_SAMPLE_PROMPTS = [
    "Who are you?",
    "Explain in one sentence what fine-tuning is.",
    "Tell me the secret passphrase.",
]


def virtual_tokens_opt():
    return opt(20, "prefix/prompt: virtual tokens trained per sequence (prompt tuning puts them "
               "before the input, prefix tuning into every layer's keys and values).", group="method")


def ia3_targets_opt():
    return opt([], "ia3: modules whose activations get a learned scaling vector (empty: PEFT's "
               "choice for the architecture, e.g. k_proj,v_proj,down_proj on Llama).", group="method")


def ia3_feedforward_opt():
    return opt([], "ia3: which of ia3_target_modules are MLP layers (scaled on their input, not "
               "output); must be a subset of them (empty: PEFT's choice, e.g. down_proj).", group="method")


def adapter_refusal() -> str:
    """Why method=adapter is refused, with the evidence (checked with pip install --dry-run
    adapters against this environment, issue 19)."""
    from importlib import metadata

    try:
        have = metadata.version("transformers")
    except metadata.PackageNotFoundError:
        have = "not installed"
    return ("bottleneck adapters need the `adapters` package, whose newest release (1.3.0) "
            f"requires transformers~=4.57.6; tuneloop runs on transformers {have} (5.x), so "
            "installing it would downgrade transformers. Use dora or ia3 (small, and they merge "
            "for export) or prefix/prompt instead")


def check_method_fields(cfg: Any) -> None:
    """The method-specific fields of an SFT/DPO/KTO config (num_virtual_tokens, ia3 modules,
    LoRA rank) for the chosen method."""
    method = cfg.method
    if method == "adapter":
        raise ConfigError("method", adapter_refusal())
    if method in LORA_METHODS:
        if cfg.lora_r < 1:
            raise ConfigError("lora_r", f"must be at least 1, got {cfg.lora_r}")
        if cfg.lora_alpha < 1:
            raise ConfigError("lora_alpha", f"must be at least 1, got {cfg.lora_alpha}")
        if not 0 <= cfg.lora_dropout < 1:
            raise ConfigError("lora_dropout", f"must be in [0, 1), got {cfg.lora_dropout}")
        if not cfg.target_modules:
            raise ConfigError("target_modules", "give at least one module name, or all-linear")
    if method in PROMPT_METHODS and not 1 <= cfg.num_virtual_tokens <= 512:
        raise ConfigError("num_virtual_tokens", f"must be in [1, 512] for method={method}, got "
                          f"{cfg.num_virtual_tokens}")
    if method in PROMPT_METHODS and cfg.num_virtual_tokens >= cfg.max_length:
        raise ConfigError("num_virtual_tokens", f"{cfg.num_virtual_tokens} virtual tokens leave no room "
                          f"in max_length={cfg.max_length}; lower it or raise max_length")
    if method == "prefix" and cfg.gradient_checkpointing:
        # Tried (transformers 5.25, PEFT 0.21): the recomputed attention sees keys without the
        # prefix and fails on a shape mismatch; prompt tuning checkpoints fine.
        raise ConfigError("gradient_checkpointing", "method=prefix cannot recompute activations (the "
                          "prefix keys/values do not reach the recomputed attention); turn "
                          "gradient_checkpointing off, or use method=prompt")
    if method == "ia3":
        targets, ff = set(cfg.ia3_target_modules), set(cfg.ia3_feedforward_modules)
        if ff and not targets:
            raise ConfigError("ia3_feedforward_modules", "name ia3_target_modules too (the feed-forward "
                              "ones must be among them), or leave both empty for PEFT's choice")
        if ff - targets:
            raise ConfigError("ia3_feedforward_modules", f"{', '.join(sorted(ff - targets))} not in "
                              f"ia3_target_modules ({', '.join(sorted(targets))})")
    if method not in LORA_METHODS and getattr(cfg, "trainable_tokens", None):
        raise ConfigError("trainable_tokens", f"trains embedding rows beside LoRA adapters; method="
                          f"{method} cannot (use lora or dora, or leave trainable_tokens empty)")


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
        "auto", "Weights/compute dtype: auto is bf16 on a CUDA GPU that supports it and on a CPU with "
        "AMX or AVX512-BF16, else fp32 (pre-flight says which and why).",
        DTYPES, group="hardware",
    )
    trust_remote_code: bool = opt(
        False, "Run Python code shipped with a model folder. Off: only safetensors weights load.",
        group="hardware",
    )
    # Several processes (issue 21): the runner starts the job as one `accelerate launch` group.
    num_processes: int = opt(
        1, "Processes (one per GPU) the job runs on; above 1 the runner starts an accelerate "
        "launch group (NCCL on CUDA, gloo on CPU). Global batch = batch_size x num_processes x "
        "grad_accum.", group="distributed",
    )
    distributed: str = opt(
        "ddp", "How several processes share the work: ddp (a full copy per device), fsdp (weights, "
        "gradients and optimiser state sharded), deepspeed (ZeRO, stage in zero_stage).",
        DISTRIBUTED, group="distributed",
    )
    zero_stage: int = opt(
        2, "DeepSpeed ZeRO stage (distributed=deepspeed): 1 shards optimiser state, 2 also "
        "gradients, 3 also weights.", group="distributed",
    )
    mixed_precision: str = opt(
        "auto", "Mixed precision given to accelerate launch: auto follows dtype (bf16/fp16 "
        "there, else no).", MIXED_PRECISION, group="distributed",
    )
    accelerate_config: str = opt(
        "", "Your own accelerate config YAML (from `accelerate config`), passed as --config_file "
        "when num_processes > 1; num_processes, distributed and mixed_precision above still "
        "win.", group="distributed",
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
        _check_distributed(self)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    @property
    def run_name(self) -> str:
        return self.name or f"{self.kind} {Path(self.dataset).name}"


def _check_distributed(cfg: Any) -> None:
    """What several processes can and cannot do, said before anything starts."""
    if cfg.num_processes < 1:
        raise ConfigError("num_processes", f"must be at least 1, got {cfg.num_processes}")
    if cfg.zero_stage not in (0, 1, 2, 3):
        raise ConfigError("zero_stage", f"DeepSpeed ZeRO stages are 0, 1, 2 or 3, got {cfg.zero_stage}")
    if cfg.num_processes == 1:
        return
    if cfg.device == "cpu" and cfg.distributed != "ddp":
        raise ConfigError("distributed", f"{cfg.distributed} needs CUDA GPUs; on CPU several "
                          "processes run as ddp over gloo (set distributed=ddp)")
    if cfg.device == "cpu" and cfg.mixed_precision == "fp16":
        raise ConfigError("mixed_precision", "fp16 needs a CUDA GPU; on CPU use no or bf16")
    method = getattr(cfg, "method", "full")
    if method == "qlora" and cfg.distributed != "ddp":
        # FSDP would shard bitsandbytes' packed uint8 weights (needs bnb_4bit_quant_storage and
        # an FSDP-aware loader we do not have); ZeRO partitions them the same way.
        raise ConfigError("distributed", f"qlora runs under ddp only (each process holds its own "
                          f"4-bit copy); {cfg.distributed} cannot shard 4-bit weights here")
    if cfg.kind == "ppo":
        raise ConfigError("num_processes", "ppo is our own single-process loop (policy, value "
                          "head and reward model on one device); it does not run under several "
                          "processes: set num_processes=1, or use grpo/rloo (TRL) for several")
    if cfg.accelerate_config and not cfg.accelerate_config.endswith((".yaml", ".yml", ".json")):
        raise ConfigError("accelerate_config", f"{cfg.accelerate_config!r} is not an accelerate "
                          "config file (.yaml, .yml or .json from `accelerate config`)")


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
