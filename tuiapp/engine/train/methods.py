"""The adaptation methods beyond plain weights: which PEFT config each one builds, what a run of it
saves, and whether that merges into the base weights.

    lora / qlora / dora   LoraConfig (dora: use_dora=True)      adapter folder, merges
    ia3                   IA3Config                             adapter folder, merges
    prefix                PrefixTuningConfig                    adapter folder, nothing to merge
    prompt                PromptTuningConfig (sampled vocab)    adapter folder, nothing to merge
    bitfit                no PEFT: every weight but the biases frozen   a whole model folder
    full                  every weight                          a whole model folder

Prefix and prompt tuning add key/value prefixes or virtual input tokens at run time: there is no
weight delta to fold into the base, so export refuses them and the generation backend loads them
apart from the LoRA-type adapters (PEFT keeps one adapter type per PeftModel). BitFit is not in
PEFT; freezing all but the bias parameters of the loaded model is the whole method, so its run
saves the model like a full fine-tune (export and Compare treat it as one).

torch / peft are imported inside the functions: importing this module is free.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuiapp.engine.train.config_base import LORA_METHODS, PROMPT_METHODS

PEFT_METHODS = (*LORA_METHODS, "ia3", *PROMPT_METHODS)   # trained and saved as a PEFT adapter
WHOLE_MODEL_METHODS = ("full", "bitfit")                 # trained and saved as a whole model
PROMPT_LEARNING_TYPES = ("PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING")


class MethodError(ValueError):
    """A method that cannot work on this model, said so a person can fix it."""

    phase = "load_model"
    kind = "config"


def is_peft(method: str) -> bool:
    return method in PEFT_METHODS


def _targets(names: list[str]):
    return "all-linear" if list(names) == ["all-linear"] else list(names)


def peft_config(config: Any, token_rows: list[int] | None = None, task_type: str = "CAUSAL_LM",
                modules_to_save: list[str] | None = None):
    """The PEFT config of ``config.method`` (one of PEFT_METHODS). ``token_rows``: embedding rows
    trained beside LoRA/DoRA adapters (only LoraConfig supports them)."""
    method = config.method
    extra: dict[str, Any] = {"task_type": task_type}
    if modules_to_save:
        extra["modules_to_save"] = list(modules_to_save)
    if method in LORA_METHODS:
        from peft import LoraConfig

        if token_rows:
            extra["trainable_token_indices"] = list(token_rows)  # rows of the input embedding
        return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=_targets(config.target_modules), bias="none",
                          use_dora=method == "dora", **extra)
    if method == "ia3":
        from peft import IA3Config

        # Empty lists: PEFT's per-architecture choice. Named targets without feed-forward ones:
        # every target is scaled on its output.
        targets = list(getattr(config, "ia3_target_modules", []) or []) or None
        feedforward = list(getattr(config, "ia3_feedforward_modules", []) or []) or ([] if targets else None)
        return IA3Config(target_modules=targets, feedforward_modules=feedforward, **extra)
    if method == "prefix":
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(num_virtual_tokens=config.num_virtual_tokens, **extra)
    if method == "prompt":
        from peft import PromptTuningConfig, PromptTuningInit

        # Vectors sampled from the vocabulary's own embeddings start at the scale the model reads;
        # PEFT's RANDOM init draws N(0, 1), far larger than a trained embedding row.
        return PromptTuningConfig(num_virtual_tokens=config.num_virtual_tokens,
                                  prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB, **extra)
    raise MethodError(f"method={method} is not a PEFT adapter method")


def wrap(model, config: Any, token_rows: list[int] | None = None, model_name: str = "the model",
         task_type: str = "CAUSAL_LM", modules_to_save: list[str] | None = None):
    """``get_peft_model`` for the config's method; PEFT's own refusals (an architecture it has
    no IA3 defaults for, module names that match nothing) are said in words."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, peft_config(config, token_rows, task_type, modules_to_save))
    except ValueError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ""
        if config.method == "ia3":
            hint = (" Set ia3_target_modules (and ia3_feedforward_modules) to module names of this "
                    "model, e.g. k_proj,v_proj,down_proj.")
        elif config.method in LORA_METHODS:
            hint = " Check target_modules against the model's module names."
        raise MethodError(f"method={config.method} cannot be put on {model_name}: {first}.{hint}") from exc


def bias_parameters(model) -> list[tuple[str, Any]]:
    return [(n, p) for n, p in model.named_parameters() if n == "bias" or n.endswith(".bias")]


def train_biases_only(model, model_name: str = "the model") -> int:
    """BitFit: freeze every weight but the biases; returns how many parameters train. A model
    without biases (Llama, SmolLM2, Mistral: attention_bias=false, mlp_bias=false) is refused."""
    biases = bias_parameters(model)
    if not biases:
        arch = ", ".join(getattr(model.config, "architectures", None) or [type(model).__name__])
        raise MethodError(
            f"method=bitfit trains bias terms only, and {model_name} ({arch}) has no bias parameters "
            "(its linear layers and norms are bias-free). Use lora, dora or ia3 on this model, or a "
            "model with biases (e.g. Qwen2, GPT-2) for bitfit")
    wanted = {id(p) for _, p in biases}
    for p in model.parameters():
        p.requires_grad_(id(p) in wanted)
    return sum(p.numel() for _, p in biases)


def meta_trainable(hf_config, config: Any) -> int:
    """Trainable parameters of ``config.method`` on a meta-device model of ``hf_config`` (no
    weights read): the count the job will train. Raises MethodError when the method cannot go
    on this model (bitfit without biases, IA3 modules that match nothing)."""
    import torch
    from transformers import AutoModelForCausalLM

    name = getattr(hf_config, "_name_or_path", "") or "the model"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
        if config.method in WHOLE_MODEL_METHODS:
            return train_biases_only(model, name) if config.method == "bitfit" else \
                sum(p.numel() for p in model.parameters())
        model = wrap(model, config, model_name=name)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------ saved folders (no torch)


def adapter_type(folder: str | Path) -> str | None:
    """The PEFT type an adapter folder records (LORA, IA3, PREFIX_TUNING, ...); None when the
    folder holds no adapter_config.json."""
    cfg = Path(folder) / "adapter_config.json"
    if not cfg.exists():
        return None
    try:
        return str(json.loads(cfg.read_text(encoding="utf-8")).get("peft_type") or "LORA").upper()
    except (OSError, ValueError):
        return None


def is_prompt_learning(folder: str | Path) -> bool:
    return adapter_type(folder) in PROMPT_LEARNING_TYPES


def method_words(peft_type: str | None) -> str:
    return {"PREFIX_TUNING": "prefix tuning", "PROMPT_TUNING": "prompt tuning", "P_TUNING": "p-tuning",
            "MULTITASK_PROMPT_TUNING": "multitask prompt tuning", "IA3": "IA3",
            "LORA": "LoRA"}.get(str(peft_type), str(peft_type))


def no_merge_reason(folder: str | Path) -> str | None:
    """Why the adapter in ``folder`` cannot be merged into its base (None when it can)."""
    kind = adapter_type(folder)
    if kind in PROMPT_LEARNING_TYPES:
        return (f"{folder} is a {method_words(kind)} adapter: it adds trained "
                f"{'key/value prefixes' if kind == 'PREFIX_TUNING' else 'virtual input tokens'} at run "
                "time, no weights, so there is nothing to merge into the base")
    return None
