"""Where an alignment job's policy starts, and loading it.

A preference or RL job (dpo, kto, reward, ppo, grpo, rloo) starts either from a base model or
from an earlier SFT run (``start_from``). An SFT run's ``final/`` folder holds a LoRA adapter or
a full model. For an adapter we load the base, load the adapter, merge it in memory, then put a
NEW LoRA adapter on top for this job: the reference model is that same object with the new
adapter disabled, so the reference costs no second copy of the weights.

    start = resolve_start(config, store)                 # runner side: no torch, ids → folders
    model, tokenizer, info = load_start_model(config, ctx, start=start)   # child side

The runner writes the StartPoint into job.json and the child hands it to the algorithm as
``ctx.start``; standalone callers may leave it out and give ``start_from`` as a folder (an
adapter or a full model) instead of a run id. torch/transformers/peft are imported inside the
functions: importing this module is free.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuiapp.engine.train import methods, modeling


class StartError(ValueError):
    """A start point that cannot be used, said so a person can fix it."""

    phase = "load_model"
    kind = "config"


@dataclass(frozen=True)
class StartPoint:
    base_path: str | None          # the base model folder (or hub id) the start builds on
    adapter_dir: str | None = None  # an SFT LoRA adapter to merge into the base
    full_dir: str | None = None     # a full fine-tuned model (used instead of the base)
    run_id: int | None = None       # the SFT run it came from (lineage)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> StartPoint | None:
        return cls(**{k: d.get(k) for k in ("base_path", "adapter_dir", "full_dir", "run_id")}) if d else None

    @property
    def model_dir(self) -> str | None:
        """The folder whose weights the policy loads first (full model, else the base)."""
        return self.full_dir or self.base_path

    @property
    def tokenizer_dir(self) -> str | None:
        """The SFT output's tokenizer (it carries the chat template SFT trained with)."""
        for folder in (self.adapter_dir, self.full_dir):
            if folder and any((Path(folder) / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
                return folder
        return self.base_path

    def describe(self) -> str:
        if self.adapter_dir:
            origin = f"SFT run {self.run_id}" if self.run_id is not None else self.adapter_dir
            return f"{origin} (adapter merged into {self.base_path})"
        if self.full_dir:
            return f"SFT run {self.run_id} (full model {self.full_dir})" if self.run_id is not None \
                else f"full model {self.full_dir}"
        return f"base model {self.base_path}"


# ------------------------------------------------------------------ resolving (no torch)


def start_from_folder(folder: str | Path, base_path: str | None = None, run_id: int | None = None) -> StartPoint:
    """A StartPoint for a folder holding an adapter (needs its base) or a full model."""
    folder = Path(folder).expanduser()
    if (folder / "final").is_dir():
        folder = folder / "final"   # a run folder: its final model
    if (folder / "adapter_config.json").exists():
        refusal = methods.no_merge_reason(folder)
        if refusal:  # a prefix/prompt-tuning SFT run: nothing to merge into a start model
            raise StartError(f"start_from: {refusal}. Start from the base model (leave start_from "
                             "empty) or from an SFT run of another method (lora, dora, ia3, full)")
        if not base_path:
            try:
                meta = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                meta = {}
            base_path = meta.get("base_model_name_or_path") or None
        if not base_path:
            raise StartError(f"start_from: {folder} is a LoRA adapter but its base model is unknown; "
                             "set base_model to the folder it was trained on")
        return StartPoint(str(base_path), adapter_dir=str(folder), run_id=run_id)
    if (folder / "config.json").exists():
        return StartPoint(base_path or str(folder), full_dir=str(folder), run_id=run_id)
    raise StartError(f"start_from: {folder} holds neither a LoRA adapter (adapter_config.json) "
                     "nor a model (config.json)")


def resolve_start(config: Any, store: Any = None, base_path: str | None = None) -> StartPoint:
    """config.start_from (a run id, or a folder) → StartPoint. Empty start_from: the base model
    (``base_path``, the resolved base_model, or the config's base_model as written)."""
    spec = str(getattr(config, "start_from", "") or "").strip()
    if not spec:
        return StartPoint(base_path or modeling.resolve_model_path(config.base_model))
    if spec.isdigit():
        if store is None:
            raise StartError(f"start_from: run {spec} needs the store; run the job through "
                             "`tuneloop train` or give the run's final/ folder")
        try:
            run = store.get_run(int(spec))
        except LookupError:
            raise StartError(f"start_from: no run with id {spec} (see `tuneloop runs list`)") from None
        if run.status != "completed":
            raise StartError(f"start_from: run {spec} is {run.status}; start from a completed run")
        if not run.output_dir or not (Path(run.output_dir) / "final").is_dir():
            raise StartError(f"start_from: run {spec} has no final model in {run.output_dir}/final")
        run_base = None
        if run.base_model_id is not None:
            try:
                run_base = store.get_model(run.base_model_id).path
            except LookupError:
                run_base = None
        return start_from_folder(Path(run.output_dir) / "final", run_base or base_path, run_id=run.id)
    folder = Path(spec).expanduser()
    if folder.exists():
        return start_from_folder(folder, base_path or _maybe_base(config))
    raise StartError(f"start_from: {spec!r} is neither a run id nor a folder")


def _maybe_base(config: Any) -> str | None:
    try:
        return modeling.resolve_model_path(config.base_model)
    except modeling.ModelLoadError:
        return None


# ------------------------------------------------------------------ loading (child side)


def new_lora_config(config: Any, for_sequence_classification: bool = False):
    """The LoRA adapter an alignment job trains on top of its start model."""
    from peft import LoraConfig

    targets = config.target_modules
    target = "all-linear" if list(targets) == ["all-linear"] else list(targets)
    extra: dict[str, Any] = {}
    if for_sequence_classification:
        extra["modules_to_save"] = ["score"]  # the scalar head is new: train all of it
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=target, bias="none",
                      task_type="SEQ_CLS" if for_sequence_classification else "CAUSAL_LM", **extra)


def load_merged_causal_lm(start: StartPoint, tokenizer, device: str, dtype, trust_remote_code: bool = False):
    """The start model as one plain transformers model: base (resized to the tokenizer) with the
    SFT adapter merged in, or the full SFT model."""
    import torch
    from transformers import AutoModelForCausalLM

    path = start.model_dir
    if not path:
        raise StartError("no model to start from (base_model and start_from are both empty)")
    # Merging needs real weights in a float dtype; fp32 keeps the merge exact on CPU.
    load_dtype = torch.float32 if start.adapter_dir and device == "cpu" else dtype
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=load_dtype, trust_remote_code=trust_remote_code,
            attn_implementation=modeling.attention_implementation(device, path))
    except OSError as exc:
        raise StartError(f"cannot load the model {path}: {exc}") from exc
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    if start.adapter_dir:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, start.adapter_dir).merge_and_unload()
        except Exception as exc:  # noqa: BLE001 - a mismatched adapter: say which
            raise StartError(f"cannot apply the SFT adapter {start.adapter_dir} to {path}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    model.to(device=device, dtype=dtype)
    model.config.use_cache = False
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def as_sequence_classifier(causal, dtype):
    """A num_labels=1 classifier sharing the merged decoder's weights (its score head is new)."""
    from transformers import AutoModelForSequenceClassification

    cfg = causal.config
    cfg.num_labels = 1
    cfg.pad_token_id = causal.generation_config.pad_token_id
    seq = AutoModelForSequenceClassification.from_config(cfg, dtype=dtype)
    # Both classes keep the decoder under the same attribute (base_model_prefix, e.g. "model").
    missing = seq.base_model.load_state_dict(causal.base_model.state_dict(), strict=True)
    del missing
    return seq.to(next(causal.parameters()).device)


def load_start_model(config: Any, ctx: Any = None, *, start: StartPoint | None = None,
                     for_sequence_classification: bool = False, wrap_lora: bool = True):
    """(model, tokenizer, info) for an alignment job.

    method=lora: a PeftModel with a fresh trainable adapter on the merged start model (the
    reference is ``with model.disable_adapter():``); method=full: the merged model itself.
    ``for_sequence_classification``: a 1-label classifier on the start model's decoder (reward
    models), with the score head trained in full. ``wrap_lora=False`` returns the merged model
    without the new adapter (for trainers that take ``peft_config=new_lora_config(config)``
    and add it themselves). ``info`` is JSON-able: start description, device, dtype,
    parameter counts.
    """
    import transformers

    if start is None:
        start = getattr(ctx, "start", None) if ctx is not None else None
    if start is None:
        start = resolve_start(config, None, base_path=getattr(ctx, "base_model_path", None))
    device = modeling.pick_device(config.device)
    dtype = modeling.pick_dtype(config.dtype, device)
    if config.method in methods.WHOLE_MODEL_METHODS:
        import torch

        dtype = torch.float32  # fp32 master weights; mixed precision autocasts
    tokenizer = modeling.load_tokenizer(start.tokenizer_dir, config.chat_template, config.trust_remote_code)
    transformers.set_seed(config.seed)  # LoRA and score-head init are random: same seed, same start
    model = load_merged_causal_lm(start, tokenizer, device, dtype, config.trust_remote_code)
    if for_sequence_classification:
        model = as_sequence_classifier(model, dtype)
    if config.method == "bitfit":
        try:
            methods.train_biases_only(model, start.describe())
        except methods.MethodError as exc:
            raise StartError(str(exc)) from exc
    elif config.method == "lora" and wrap_lora:
        from peft import get_peft_model

        model = get_peft_model(model, new_lora_config(config, for_sequence_classification))
    elif methods.is_peft(config.method) and wrap_lora:
        try:
            model = methods.wrap(model, config, model_name=start.describe())
        except methods.MethodError as exc:
            raise StartError(str(exc)) from exc
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    info = {"start": start.describe(), "start_point": start.to_dict(), "device": device,
            "dtype": str(dtype).replace("torch.", ""), "method": config.method,
            "trainable_params": trainable, "total_params": total}
    return model, tokenizer, info
