"""Pre-flight's model shape: the device, the model config and tokenizer a job will load (no
weights), trainable/total parameter counts on the meta device, the memory estimate and what
to change when it does not fit. Split from preflight.py to keep it small; preflight.py
re-exports these names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tuiapp.engine.jobs.resolve import ALIGNMENT_KINDS

GiB = 2**30


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001
        return "cpu"


def load_model_config(config: Any, model_path: str | None):
    """The transformers config of the base model, or of the scratch model a cpt job builds."""
    from transformers import AutoConfig, LlamaConfig

    if model_path is None:
        tok = load_job_tokenizer(config, None)
        return LlamaConfig(
            vocab_size=len(tok), hidden_size=config.hidden_size,
            num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
            num_key_value_heads=config.num_kv_heads, intermediate_size=config.intermediate_size,
            tie_word_embeddings=config.tie_embeddings, rope_theta=config.rope_theta,
            max_position_embeddings=max(config.max_length, 128))
    return AutoConfig.from_pretrained(model_path, trust_remote_code=config.trust_remote_code)


def load_job_tokenizer(config: Any, model_path: str | None):
    from tuiapp.engine.data import load_tokenizer

    if config.kind == "sft" and model_path:
        try:
            from tuiapp.engine.train import modeling
        except ImportError:
            modeling = None
        if modeling is not None:  # the tokenizer the job will use, chat template included
            return modeling.load_tokenizer(model_path, config.chat_template, config.trust_remote_code)
    if config.kind in ALIGNMENT_KINDS and model_path:
        from tuiapp.engine.train import (  # the tokenizer (and chat template) the job will load
            modeling,
        )

        return modeling.load_tokenizer(model_path, getattr(config, "chat_template", "model"),
                                       config.trust_remote_code)
    explicit = getattr(config, "tokenizer", "")
    if explicit:
        return load_tokenizer(explicit)
    if model_path and Path(model_path).is_dir() and not any(
            (Path(model_path) / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        return load_tokenizer(None)
    return load_tokenizer(model_path)


def count_parameters(model_cfg: Any, config: Any, tokenizer: Any = None) -> dict[str, Any]:
    """Total and trainable parameters for the job's method, from a meta-device model."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_cfg)
    total = sum(p.numel() for p in model.parameters())
    linear_params = sum(m.weight.numel() for n, m in model.named_modules()
                        if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head"))
    method = getattr(config, "method", "full")
    if method == "full":
        trainable = total
    elif method not in ("lora", "qlora"):  # the engine's own method on a meta model (methods.py)
        from tuiapp.engine.train.methods import meta_trainable

        trainable = meta_trainable(model_cfg, config)
    else:
        r = config.lora_r
        targets = set(getattr(config, "target_modules", ["all-linear"]))
        trainable = 0
        for name, mod in model.named_modules():
            if not isinstance(mod, torch.nn.Linear) or name.endswith("lm_head"):
                continue
            if "all-linear" in targets or name.rsplit(".", 1)[-1] in targets:
                trainable += r * (mod.in_features + mod.out_features)
        if tokenizer is not None:
            trainable += token_row_count(config, tokenizer) * model_cfg.hidden_size
    return {"total": int(total), "trainable": int(trainable),
            "share": round(trainable / total, 6) if total else 0.0,
            "linear": int(linear_params), "method": method,
            "hidden_size": model_cfg.hidden_size, "layers": model_cfg.num_hidden_layers,
            "vocab_size": model_cfg.vocab_size}


def token_row_count(config: Any, tokenizer: Any) -> int:
    """Embedding rows trained beside the adapters (see modeling.trainable_token_ids)."""
    if getattr(config, "trainable_tokens", None):  # words may share rows with the template
        from tuiapp.engine.train import modeling

        return len(modeling.trainable_token_ids(config, tokenizer))
    return template_token_count(tokenizer) if getattr(config, "train_template_tokens", False) else 0


def template_token_count(tokenizer: Any) -> int:
    """Special tokens the chat template writes (their embedding rows are trained under LoRA)."""
    template = getattr(tokenizer, "chat_template", None) or ""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return sum(1 for tok in added.values() if str(tok) and str(tok) in template)


_DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def estimate_memory(model_cfg: Any, config: Any, params: dict[str, Any], device: str) -> dict[str, Any]:
    """Weights + gradients + Adam states + activations + logits, in bytes (an estimate)."""
    from tuiapp.engine.train import modeling

    dtype = config.dtype if config.dtype != "auto" else modeling.auto_dtype(device)[0]
    wb = _DTYPE_BYTES[dtype]
    total, trainable, linear = params["total"], params["trainable"], params["linear"]
    method = params["method"]
    if method == "qlora":
        # nf4: half a byte per weight plus one fp32 scale per 64-weight block.
        weights = linear * (0.5 + 4 / 64) + (total - linear) * wb + trainable * 4
    elif method not in ("full", "bitfit"):  # a PEFT adapter (fp32) on a base in the compute dtype
        weights = total * wb + trainable * 4
    else:
        weights = total * wb
    grads = trainable * (4 if method != "full" else wb)
    adam = trainable * 8
    h, layers = model_cfg.hidden_size, model_cfg.num_hidden_layers
    tokens = config.batch_size * config.max_length * _sequences_per_example(config)
    if method == "full" and config.kind in ("dpo", "kto") and not getattr(config, "precompute_ref_log_probs", True):
        weights += total * wb  # a frozen reference copy
    # ~17 values per token, hidden unit and layer without recomputation; ~2 with it.
    per = 2 if config.gradient_checkpointing else 17
    activations = tokens * h * layers * per * wb
    logits = tokens * model_cfg.vocab_size * 4 * 2   # fp32 logits and their gradient
    estimate = int(weights + grads + adam + activations + logits)
    return {"dtype": dtype, "weights_bytes": int(weights), "grads_bytes": int(grads),
            "optimizer_bytes": int(adam), "activations_bytes": int(activations),
            "logits_bytes": int(logits), "estimate_bytes": estimate}


def _sequences_per_example(config: Any) -> int:
    """Sequences one example puts through the model per step: a pair for DPO and reward models,
    completion + mismatched KL sequence for KTO, a group of answers for GRPO/RLOO."""
    if config.kind in ("dpo", "kto", "reward"):
        return 2
    if config.kind in ("grpo", "rloo"):
        return max(1, int(getattr(config, "num_generations", 1)))
    return 1


def free_memory(device: str) -> int | None:
    """Free accelerator memory on CUDA, MemAvailable on a CPU machine (None if unknown)."""
    if device == "cuda":
        try:
            import torch

            return int(torch.cuda.mem_get_info()[0])
        except Exception:  # noqa: BLE001
            return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def memory_knob(config: Any) -> str:
    """The first setting to turn when a job does not fit."""
    if config.batch_size > 1:
        return (f"halve batch_size ({config.batch_size} → {config.batch_size // 2}) and double "
                f"grad_accum ({config.grad_accum} → {config.grad_accum * 2}) to keep the same "
                "effective batch")
    if not config.gradient_checkpointing:
        return "turn on gradient_checkpointing=true"
    if getattr(config, "method", "full") == "full":
        return "use method=lora (or qlora) instead of full fine-tuning"
    if getattr(config, "method", "") == "lora":
        return "use method=qlora to keep the base weights in 4 bits"
    return f"lower max_length (now {config.max_length})"
