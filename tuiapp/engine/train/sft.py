"""Supervised fine-tuning with TRL's SFTTrainer: full, LoRA, QLoRA, DoRA, IA3, prefix and prompt
tuning, BitFit (methods.py says what each trains and saves). Read top to bottom:
data → tokenizer and chat template → model (+ PEFT / bitsandbytes) → trainer → train → save.

Loss is on the assistant's tokens only (TRL's ``assistant_only_loss`` reads the template's
``{% generation %}`` markers; a template without them gets a mask derived turn by turn in
``template_mask.py``; prompt/completion strings use the completion mask instead).

Padding-free batching (``packing = true``, the default): each batch's examples are concatenated
into one row with no pad token and ``position_ids`` restarting at 0 per example (TRL's
``DataCollatorForLanguageModeling(padding_free=True)``). On flash-attention the varlen kernel
uses those boundaries; on sdpa/eager (CPU, GPUs without flash-attn) transformers turns the
position_ids into a block-diagonal causal mask, so examples never attend to each other. We do
NOT use TRL's ``packing=True`` (BFD bins of max_length tokens): that changes what one step
sees (batch_size would count max_length bins, not examples), so the loss trajectory would no
longer match a plain padded run with the same settings, and on sdpa the whole batch of bins is
flattened into one row whose dense mask grows with (batch_size × max_length)². Padding-free
batching keeps the same examples per step as plain batching — same loss, fewer FLOPs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tuiapp import paths
from tuiapp.engine import data
from tuiapp.engine.context import JobContext
from tuiapp.engine.train import methods, modeling, template_mask
from tuiapp.engine.train.config import SFTJobConfig


class SFTError(ValueError):
    """A failure a person can act on; ``phase`` and ``kind`` go into the run's error event."""

    def __init__(self, message: str, phase: str = "load_data", kind: str = "data"):
        super().__init__(message)
        self.phase = phase
        self.kind = kind


class SFTDataError(SFTError):
    """The dataset cannot be trained on (the runner reports it as a data problem)."""


def train(config: SFTJobConfig, ctx: JobContext) -> dict[str, Any]:
    import torch
    import transformers

    # --- data ---------------------------------------------------------------------------------
    ctx.emit("phase", phase="load_data")
    records, conversational = load_records(config, ctx)
    train_rows, eval_rows = split_records(records, config.eval_split, config.seed)
    ctx.emit("log", level="info",
             message=f"{len(train_rows)} training examples, {len(eval_rows)} held out for eval loss")

    # --- tokenizer and model ------------------------------------------------------------------
    ctx.emit("phase", phase="load_model")
    try:
        model_path = modeling.resolve_model_path(config.base_model, ctx.base_model_path)
        device = modeling.pick_device(config.device)
        dtype = modeling.pick_dtype(config.dtype, device)
        tokenizer = modeling.load_tokenizer(model_path, config.chat_template, config.trust_remote_code)
        transformers.set_seed(config.seed)  # LoRA init is random: same seed, same adapter
        model = modeling.load_model(config, model_path, tokenizer, device, dtype,
                                    gradient_checkpointing=config.gradient_checkpointing)
    except modeling.ModelLoadError as exc:
        raise SFTError(str(exc), phase="load_model", kind="config") from exc
    if device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    trainable, total = parameter_counts(model)
    ctx.emit("log", level="info", message=f"{config.method}: {trainable:,} of {total:,} parameters trainable "
             f"on {device} ({str(dtype).replace('torch.', '')})")

    # --- trainer ------------------------------------------------------------------------------
    trainer = build_trainer(config, ctx, model, tokenizer, train_rows, eval_rows, conversational,
                            device, dtype)
    if len(trainer.train_dataset) == 0:
        raise SFTDataError("every training example lost its assistant tokens (truncated away or never "
                       f"marked); raise max_length above {config.max_length} or check the chat template")
    callback = next(c for c in trainer.callback_handler.callbacks if type(c).__name__ == "EventCallback")

    # --- train --------------------------------------------------------------------------------
    resume = str(ctx.resume_from) if ctx.resume_from else None
    if resume:
        ctx.emit("log", level="info", message=f"resuming from {resume}")
    out = trainer.train(resume_from_checkpoint=resume)

    # --- save -------------------------------------------------------------------------------
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result: dict[str, Any] = {
        "status": "cancelled" if callback.cancelled else "completed",
        "output_dir": str(ctx.output_dir),
        "final_dir": None,
        "adapter": methods.is_peft(config.method),
        "steps": trainer.state.global_step,
        "final_loss": losses[-1] if losses else float(out.training_loss),
        "trainable_params": trainable,
        "total_params": total,
        "tokens_seen": int(trainer.state.num_input_tokens_seen or 0),
    }
    if not callback.cancelled:
        ctx.emit("phase", phase="save")
        final = Path(ctx.output_dir) / "final"
        trainer.save_model(str(final))  # adapter_model.safetensors or model.safetensors
        tokenizer.save_pretrained(str(final))
        (final / "training_args.bin").unlink(missing_ok=True)  # a pickle; the run row has the config
        result["final_dir"] = str(final)
    return result


# ---------------------------------------------------------------------------------- pieces


def load_records(config: SFTJobConfig, ctx: JobContext) -> tuple[list[dict[str, Any]], bool]:
    """Validated rows in TRL's formats; refuses bad or non-SFT data before any model loads."""
    path = Path(ctx.dataset_path) if ctx.dataset_path else dataset_file(config.dataset)
    report = data.validate(path, kind="sft")
    if not report.ok:
        shown = "\n".join(f"  {p}" for p in report.errors[:5])
        more = report.error_count - min(5, len(report.errors))
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise SFTDataError(f"{path} cannot be used for SFT ({report.error_count or len(report.errors)} "
                       f"error(s); see `tuneloop data validate {path}`):\n{shown}{tail}")
    if not report.records:
        raise SFTDataError(f"{path} has no usable rows")
    first = report.records[0]
    conversational = "messages" in first or not isinstance(first.get("prompt"), str)
    return report.records, conversational


def dataset_file(spec: str) -> Path:
    """Standalone use (no runner): a file path, or demo/<name> for the shipped demo data."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if spec.startswith("demo/"):
        for suffix in (".jsonl", ".txt"):
            candidate = paths.DEMO_DIR / (spec.removeprefix("demo/") + suffix)
            if candidate.exists():
                return candidate
    raise SFTDataError(f"dataset {spec!r} is not a file; run through `tuneloop train` (which resolves "
                   "dataset versions) or give a path")


def split_records(records: list[dict], eval_split: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded hold-out: the same rows every time for the same data and seed."""
    import random

    if eval_split <= 0 or len(records) < 4:
        return list(records), []
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, math.floor(len(records) * eval_split))
    held = set(order[:n_eval])
    return ([r for i, r in enumerate(records) if i not in held],
            [r for i, r in enumerate(records) if i in held])


def parameter_counts(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = 0
    for p in model.parameters():
        # bitsandbytes packs two 4-bit values per byte; count the logical weights
        total += p.numel() * 2 if type(p).__name__ == "Params4bit" else p.numel()
    return trainable, total


def sft_arguments(config: SFTJobConfig, output_dir: str, device: str, dtype, has_eval: bool,
                  conversational: bool, **overrides: Any):
    """TRL SFTConfig from our config. Our defaults differ from TRL's where TRL's cost speed:
    no gradient checkpointing unless asked, fp32 on CPU, padding-free collation (see top)."""
    import torch
    from trl import SFTConfig

    steps = {"max_steps": config.max_steps} if config.max_steps > 0 else {"num_train_epochs": config.epochs}
    args = dict(
        output_dir=output_dir,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float < 1 is a share of the total steps
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm if config.max_grad_norm > 0 else None,
        **modeling.checkpointing_arguments(config.gradient_checkpointing),  # TRL's own default is on
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=device == "cpu",
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=config.eval_steps,
        max_length=config.max_length,
        packing=False,        # padding-free batching instead, via the collator (see top)
        padding_free=False,
        assistant_only_loss=config.assistant_only_loss and conversational,
        completion_only_loss=config.assistant_only_loss if not conversational else None,
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=device == "cuda",
        save_only_model=False,
        **steps,
    )
    args.update(overrides)
    return SFTConfig(**args)


def build_trainer(config: SFTJobConfig, ctx: JobContext, model, tokenizer, train_rows, eval_rows,
                  conversational: bool, device: str, dtype, extra_callbacks=()):
    from datasets import Dataset
    from trl import SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from tuiapp.engine.train.callbacks import EventCallback

    overrides: dict[str, Any] = {}
    if template_mask.needs_derived_mask(tokenizer, conversational, config.assistant_only_loss):
        # The model's own template has no {% generation %} markers: derive the assistant mask by
        # rendering prefix by prefix and hand TRL tokenized rows (it builds labels from the mask).
        try:
            train_rows = template_mask.tokenize_records(tokenizer, train_rows, config.max_length)
            eval_rows = template_mask.tokenize_records(tokenizer, eval_rows, config.max_length)
        except template_mask.TemplateMaskError as exc:
            raise SFTError(f"chat template: {exc}", phase="load_data", kind="config") from exc
        train_rows = [r for r in train_rows if 1 in r["assistant_masks"]]
        overrides["assistant_only_loss"] = False  # the mask is already in the rows
        ctx.emit("log", level="info", message="assistant tokens derived from the model's own chat template")
    args = sft_arguments(config, str(ctx.output_dir), device, dtype, bool(eval_rows), conversational,
                         **overrides)
    collator = None
    if config.packing and config.method in methods.PROMPT_METHODS:
        # Virtual tokens / prefixes go in front of each row: a packed row of several examples
        # would give them to its first example only.
        ctx.emit("log", level="info", message=f"method={config.method}: padded batches (a packed row "
                 "would put the virtual tokens before its first example only)")
    elif config.packing:
        collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)
    callback = EventCallback(ctx, config.sample_prompts, config.sample_max_new_tokens,
                             chat=True, tokenizer=tokenizer)
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        data_collator=collator,
        callbacks=[callback, *extra_callbacks],
    )
