"""Preference optimisation: DPO and its loss variants, and KTO on unpaired data, with TRL.
Read top to bottom: data → start model (policy.py) → trainer → train → save.

The policy starts from the base model or an SFT run (``start_from``): the SFT adapter is merged
in memory and TRL adds a fresh LoRA adapter from our ``peft_config``. The reference is then
the same model with that adapter disabled — no second copy of the weights. Full fine-tuning
keeps a frozen copy as the reference (or none at all with precomputed reference log-probs).

Loss variants: sigmoid (DPO), ipo, hinge, robust, bco_pair and apo_zero run in TRL's
DPOTrainer; simpo runs in TRL's experimental CPOTrainer (loss_type="simpo", cpo_alpha=0) and
orpo in its experimental ORPOTrainer — both reference-free.

``precompute_ref_log_probs`` (our default) computes the reference log-probs of every pair once
before training, in no-grad batches 4x the training batch: training steps then run the policy
alone, every later epoch and every evaluation reuse the numbers, and full fine-tuning needs no
frozen reference copy in memory. Gradient checkpointing is off unless asked (TRL's default is
on): on the small models this tool targets the ~30% recompute costs more than the memory saved.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tuiapp.engine import data
from tuiapp.engine.context import JobContext
from tuiapp.engine.train import methods, padding_free, policy, pretokenized
from tuiapp.engine.train.config import DPOJobConfig, KTOJobConfig
from tuiapp.engine.train.sft import dataset_file, parameter_counts, split_records

# The reference pass keeps no activations for a backward pass, so it can run on batches this
# many times larger than training's: fewer, fuller forward passes for the same numbers.
REF_BATCH_FACTOR = 4


class PreferenceError(ValueError):
    """A failure a person can act on; ``phase`` and ``kind`` go into the run's error event."""

    def __init__(self, message: str, phase: str = "load_data", kind: str = "config"):
        super().__init__(message)
        self.phase = phase
        self.kind = kind


class PreferenceDataError(PreferenceError):
    """The dataset cannot be trained on (the runner reports it as a data problem)."""

    def __init__(self, message: str):
        super().__init__(message, phase="load_data", kind="data")


# ------------------------------------------------------------------ entry points


def train(config: DPOJobConfig, ctx: JobContext) -> dict[str, Any]:
    """DPO (or a variant) on prompt/chosen/rejected pairs."""
    ctx.emit("phase", phase="load_data")
    records = load_records(config, ctx, "preference")
    train_rows, eval_rows = split_records(records, config.eval_split, config.seed)
    ctx.emit("log", level="info", message=f"{len(train_rows)} preference pairs, {len(eval_rows)} held out")

    ctx.emit("phase", phase="load_model")
    model, tokenizer, info = _load(config, ctx)
    trainer = build_dpo_trainer(config, ctx, model, tokenizer, train_rows, eval_rows, info["device"])
    return _train_and_save(config, ctx, trainer, tokenizer, info)


def train_kto(config: KTOJobConfig, ctx: JobContext) -> dict[str, Any]:
    """KTO on prompt/completion rows labelled desirable (true) or undesirable (false)."""
    ctx.emit("phase", phase="load_data")
    records = load_records(config, ctx, "kto")
    labels = {bool(r["label"]) for r in records}
    if labels != {True, False}:
        raise PreferenceDataError("KTO needs both desirable (label true) and undesirable (label false) "
                                  f"examples; this dataset only has label {labels.pop()}")
    train_rows, eval_rows = split_records(records, config.eval_split, config.seed)
    ctx.emit("log", level="info", message=f"{len(train_rows)} KTO examples, {len(eval_rows)} held out")

    ctx.emit("phase", phase="load_model")
    model, tokenizer, info = _load(config, ctx)
    trainer = build_kto_trainer(config, ctx, model, tokenizer, train_rows, eval_rows, info["device"])
    return _train_and_save(config, ctx, trainer, tokenizer, info)


# ------------------------------------------------------------------ data


def load_records(config: Any, ctx: JobContext, kind: str) -> list[dict[str, Any]]:
    """Validated rows in TRL's conversational format; refuses the wrong kind of data before
    any model loads."""
    path = Path(ctx.dataset_path) if ctx.dataset_path else _dataset_path(config.dataset)
    report = data.validate(path)
    if report.kind != kind and report.ok:
        job = config.kind
        raise PreferenceDataError(f"{path} is {report.kind} data ({report.format}); a {job} job trains on "
                                  f"{kind} data ({_KIND_SHAPES[kind]})")
    if not report.ok:
        report = data.validate(path, kind=kind)
        shown = "\n".join(f"  {p}" for p in report.errors[:5])
        raise PreferenceDataError(f"{path} cannot be used for {config.kind} ({report.error_count or len(report.errors)} "
                                  f"error(s); see `tuneloop data validate {path}`):\n{shown}")
    if not report.records:
        raise PreferenceDataError(f"{path} has no usable rows")
    records = report.records
    if kind == "preference":
        records = without_both_bad(path, report)
        if len(records) < len(report.records):
            ctx.emit("log", level="info", message=f"{len(report.records) - len(records)} pair(s) "
                     "labelled both bad left out: neither answer is one to prefer")
        if not records:
            raise PreferenceDataError(f"{path}: every pair is labelled both bad; label pairs "
                                      "with a better answer (or rewrite one) to train on")
    return [as_conversation(r) for r in records]


def without_both_bad(path: Path, report: Any) -> list[dict[str, Any]]:
    """The validated records except those whose row says `both_bad: true` (labels export keeps
    such pairs, flagged, for other uses; the normalised records no longer carry the flag, so it
    is read from the raw rows by line)."""
    from tuiapp.engine.data.read import read_rows

    flagged = {row.line for row in read_rows(path).rows
               if isinstance(row.value, dict)
               and str(row.value.get("both_bad", "")).strip().lower() in ("true", "1")}
    if not flagged:
        return list(report.records)
    return [rec for rec, line in zip(report.records, report.line_numbers, strict=True)
            if line not in flagged]


_KIND_SHAPES = {"preference": "rows with prompt, chosen and rejected",
                "kto": "rows with prompt, completion and a true/false label"}


def _dataset_path(spec: str) -> Path:
    try:
        return dataset_file(spec)
    except ValueError as exc:
        raise PreferenceDataError(str(exc)) from None


def as_conversation(record: dict[str, Any]) -> dict[str, Any]:
    """String prompts and answers become one user turn and one assistant turn, so the model
    sees the chat template it was fine-tuned with."""
    out = dict(record)
    if isinstance(out.get("prompt"), str):
        out["prompt"] = [{"role": "user", "content": out["prompt"]}]
    for key in ("chosen", "rejected", "completion"):
        if isinstance(out.get(key), str):
            out[key] = [{"role": "assistant", "content": out[key]}]
    return out


# ------------------------------------------------------------------ model and trainers


def _load(config: Any, ctx: JobContext):
    """The merged start model (TRL adds the LoRA adapter from ``peft_config``)."""
    import torch

    try:
        model, tokenizer, info = policy.load_start_model(config, ctx, wrap_lora=False)
    except (policy.StartError, policy.modeling.ModelLoadError) as exc:
        raise PreferenceError(str(exc), phase="load_model") from exc
    if info["device"] == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    ctx.emit("log", level="info", message=f"start: {info['start']}; {config.method} on {info['device']} "
             f"({info['dtype']})")
    return model, tokenizer, info


def _peft_config(config: Any):
    """The new adapter TRL puts on the start model (LoRA, DoRA, IA3, prefix, prompt); its
    reference is the start model with that adapter disabled (PEFT's disable_adapter). Full and
    BitFit train the start model itself."""
    return methods.peft_config(config) if methods.is_peft(config.method) else None


def _frozen_copy(model):
    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def common_arguments(config: Any, ctx: JobContext, device: str, has_eval: bool) -> dict[str, Any]:
    """TrainingArguments shared by every preference trainer; our defaults where TRL's cost speed
    (no gradient checkpointing unless asked, fp32 on CPU)."""
    import torch

    dtype = policy.modeling.pick_dtype(config.dtype, device)
    steps = {"max_steps": config.max_steps} if config.max_steps > 0 else {"num_train_epochs": config.epochs}
    return dict(
        output_dir=str(ctx.output_dir),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm if config.max_grad_norm > 0 else None,
        **policy.modeling.checkpointing_arguments(config.gradient_checkpointing),  # TRL's own default is on
        bf16=config.method not in methods.WHOLE_MODEL_METHODS and dtype == torch.bfloat16,
        fp16=config.method not in methods.WHOLE_MODEL_METHODS and dtype == torch.float16,
        use_cpu=device == "cpu",
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=config.eval_steps,
        max_length=config.max_length,
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=device == "cuda",
        save_only_model=False,
        **steps,
    )


def build_dpo_trainer(config: DPOJobConfig, ctx: JobContext, model, tokenizer, train_rows, eval_rows,
                      device: str, extra_callbacks=()):
    from datasets import Dataset

    from tuiapp.engine.train.callbacks import EventCallback

    args = common_arguments(config, ctx, device, bool(eval_rows))
    callback = EventCallback(ctx, config.sample_prompts, config.sample_max_new_tokens, chat=True,
                             tokenizer=tokenizer)
    kwargs = dict(model=model, train_dataset=Dataset.from_list(train_rows),
                  eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                  processing_class=tokenizer, callbacks=[callback, *extra_callbacks],
                  peft_config=_peft_config(config))
    if config.loss_type in ("simpo", "orpo"):
        if config.loss_type == "simpo":
            from trl.experimental.cpo import CPOConfig, CPOTrainer

            trainer_class, paired_args = CPOTrainer, CPOConfig(
                **args, loss_type="simpo", cpo_alpha=0.0, beta=config.beta, simpo_gamma=config.simpo_gamma,
                label_smoothing=config.label_smoothing)
        else:
            from trl.experimental.orpo import ORPOConfig, ORPOTrainer

            trainer_class, paired_args = ORPOTrainer, ORPOConfig(**args, beta=config.beta)
        if pretokenized.wanted(tokenizer):  # the model's own template: the split ids ride along
            split = pretokenized_datasets(ctx, pretokenized.preference_rows, tokenizer, train_rows, eval_rows)
            kwargs.update(train_dataset=_beside(train_rows, split["train_dataset"]),
                          eval_dataset=_beside(eval_rows, split["eval_dataset"]))
            trainer_class = pretokenized.paired_trainer_class(trainer_class)
        return trainer_class(args=paired_args, **kwargs)
    from trl import DPOConfig, DPOTrainer

    ref_model = None
    if config.method in methods.WHOLE_MODEL_METHODS and not config.precompute_ref_log_probs:
        # TRL would reload the reference from the base folder, which lacks a merged SFT adapter.
        ref_model = _frozen_copy(model)
    losses, weights = [config.loss_type], None
    if config.sft_weight > 0:  # RPO: the preference loss plus NLL on the chosen answers
        losses, weights = [config.loss_type, "sft"], [1.0, config.sft_weight]
    dpo_args = DPOConfig(**args, loss_type=losses, loss_weights=weights, beta=config.beta,
                         label_smoothing=config.label_smoothing,
                         precompute_ref_log_probs=config.precompute_ref_log_probs,
                         precompute_ref_batch_size=config.batch_size * REF_BATCH_FACTOR,
                         include_num_input_tokens_seen="non_padding")
    trainer_class = DPOTrainer
    if pretokenized.wanted(tokenizer):  # the model's own template: split the pairs ourselves
        kwargs.update(pretokenized_datasets(ctx, pretokenized.preference_rows, tokenizer, train_rows, eval_rows),
                      data_collator=pretokenized.preference_collator(tokenizer, dpo_args))
        trainer_class = pretokenized.dpo_trainer_class()
    return _padding_free(config, ctx, trainer_class(ref_model=ref_model, args=dpo_args, **kwargs))


def _beside(rows, split):
    """The conversational rows (CPO/ORPO still render them) with the split ids as extra columns."""
    from datasets import Dataset

    if split is None:
        return None
    return Dataset.from_list([{**row, **ids} for row, ids in zip(rows, split.to_list(), strict=True)])


def pretokenized_datasets(ctx: JobContext, split, tokenizer, train_rows, eval_rows) -> dict[str, Any]:
    """train/eval datasets of rows split by the model's own chat template (pretokenized.py)."""
    from datasets import Dataset

    try:
        train = split(tokenizer, train_rows)
        held = split(tokenizer, eval_rows) if eval_rows else []
    except pretokenized.PretokenizeError as exc:
        raise PreferenceError(f"chat template: {exc}", phase="load_data") from exc
    ctx.emit("log", level="info", message="prompts and answers split by the model's own chat template "
             f"(answers end on {pretokenized.template_mask.end_of_turn(tokenizer)!r})")
    return {"train_dataset": Dataset.from_list(train),
            "eval_dataset": Dataset.from_list(held) if held else None}


def _padding_free(config: Any, ctx: JobContext, trainer):
    if config.padding_free and config.method in methods.PROMPT_METHODS:
        # virtual tokens / prefixes belong in front of each sequence, not of a packed row
        ctx.emit("log", level="info", message=f"method={config.method}: padded batches (no padding-free)")
        return trainer
    if config.padding_free and padding_free.install(trainer):
        ctx.emit("log", level="info", message="padding-free batches: real tokens laid end to end")
    return trainer


def build_kto_trainer(config: KTOJobConfig, ctx: JobContext, model, tokenizer, train_rows, eval_rows,
                      device: str, extra_callbacks=()):
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    from tuiapp.engine.train.callbacks import EventCallback

    if config.batch_size < 2:
        raise PreferenceError("KTO estimates its KL term from mismatched pairs inside a batch; set "
                              "batch_size to at least 2", phase="load_model")
    args = common_arguments(config, ctx, device, bool(eval_rows))
    ref_model = None
    if config.method in methods.WHOLE_MODEL_METHODS and not config.precompute_ref_log_probs:
        ref_model = _frozen_copy(model)
    kto_args = KTOConfig(**args, beta=config.beta, desirable_weight=config.desirable_weight,
                         undesirable_weight=config.undesirable_weight,
                         precompute_ref_log_probs=config.precompute_ref_log_probs,
                         precompute_ref_batch_size=config.batch_size * REF_BATCH_FACTOR)
    callback = EventCallback(ctx, config.sample_prompts, config.sample_max_new_tokens, chat=True,
                             tokenizer=tokenizer)
    data = {"train_dataset": Dataset.from_list(train_rows),
            "eval_dataset": Dataset.from_list(eval_rows) if eval_rows else None}
    trainer_class = KTOTrainer
    if pretokenized.wanted(tokenizer):  # the model's own template: split the rows ourselves
        data = {**pretokenized_datasets(ctx, pretokenized.kto_rows, tokenizer, train_rows, eval_rows),
                "data_collator": pretokenized.kto_collator(tokenizer, kto_args)}
        trainer_class = pretokenized.kto_trainer_class()
    trainer = trainer_class(model=model, ref_model=ref_model, args=kto_args, **data,
                            processing_class=tokenizer, callbacks=[callback, *extra_callbacks],
                            peft_config=_peft_config(config))
    return _padding_free(config, ctx, trainer)


# ------------------------------------------------------------------ train and save


def _train_and_save(config: Any, ctx: JobContext, trainer, tokenizer, info: dict[str, Any]) -> dict[str, Any]:
    callback = next(c for c in trainer.callback_handler.callbacks if type(c).__name__ == "EventCallback")
    trainable, total = parameter_counts(trainer.model)
    ctx.emit("log", level="info", message=f"{config.method}: {trainable:,} of {total:,} parameters trainable")
    resume = str(ctx.resume_from) if ctx.resume_from else None
    if resume:
        ctx.emit("log", level="info", message=f"resuming from {resume}")
    out = trainer.train(resume_from_checkpoint=resume)
    packing = getattr(trainer, "_tuneloop_padding_free", None)
    if packing and not packing["enabled"]:
        ctx.emit("log", level="warning", message="padding-free batches fell back to padding: this model's "
                 f"attention ignores packed position ids (log-probs differed by {packing['gap']:.2e})")

    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    last = {k: v for h in history for k, v in h.items() if k.startswith(("rewards/", "kl", "logps/"))}
    result: dict[str, Any] = {
        "status": "cancelled" if callback.cancelled else "completed",
        "output_dir": str(ctx.output_dir),
        "final_dir": None,
        "adapter": methods.is_peft(config.method),
        "start": info["start_point"],
        "steps": trainer.state.global_step,
        "final_loss": losses[-1] if losses else float(out.training_loss),
        "trainable_params": trainable,
        "total_params": total,
        **{k.replace("/", "_"): float(v) for k, v in last.items() if isinstance(v, (int, float))},
    }
    if not callback.cancelled:
        ctx.emit("phase", phase="save")
        final = Path(ctx.output_dir) / "final"
        trainer.save_model(str(final))  # adapter_model.safetensors or model.safetensors
        tokenizer.save_pretrained(str(final))
        (final / "training_args.bin").unlink(missing_ok=True)  # a pickle; the run row has the config
        _record_start(final, info["start_point"])
        result["final_dir"] = str(final)
    return result


def _record_start(final: Path, start: dict[str, Any]) -> None:
    """The adapter was trained on the MERGED start model: anyone loading it must merge the SFT
    adapter first. ``tuneloop-start.json`` says what to merge."""
    import json

    (final / "tuneloop-start.json").write_text(json.dumps(start, indent=2), encoding="utf-8")
