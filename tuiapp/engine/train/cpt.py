"""Continued pre-training: a causal LM trained on raw text, from an existing model or from scratch.

Read top to bottom: load text → tokenizer → pack into fixed blocks → model (fresh Llama or a
folder, optionally under LoRA) → HF Trainer with the shared EventCallback → train (resumable) →
save ``final/`` (safetensors + tokenizer). Imported only inside a job: it needs torch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tuiapp import paths
from tuiapp.engine.context import JobContext
from tuiapp.engine.train.config import ConfigError, CPTJobConfig

# The document separator when the tokenizer has one; else its EOS is used.
DOC_SEPARATOR = "<|endoftext|>"


class CPTDataError(ValueError):
    """The text dataset cannot be trained on; the message says which file and what to do."""


def train(config: CPTJobConfig, ctx: JobContext, *, callbacks: list | None = None) -> dict[str, Any]:
    """Train; ``callbacks`` are extra TrainerCallbacks (e.g. build-base's wall-clock schedule)."""
    import torch
    import transformers
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from tuiapp.engine.train.callbacks import EventCallback
    from tuiapp.engine.train.modeling import checkpointing_arguments

    t0 = time.perf_counter()
    transformers.utils.logging.disable_progress_bar()  # no tqdm bars in a job's output
    ctx.output_dir.mkdir(parents=True, exist_ok=True)

    # -- data --------------------------------------------------------------------------------
    ctx.emit("phase", phase="load_data")
    data_path = resolve_dataset(config, ctx)
    texts = load_texts(data_path)

    # -- tokenizer and blocks ------------------------------------------------------------------
    base = ctx.base_model_path or config.base_model
    if base == "demo":  # without a runner to resolve it, 'demo' is the committed demo base model
        base = str(paths.DEMO_BASE_MODEL)
    scratch = base == "scratch"
    tokenizer = load_cpt_tokenizer(config, None if scratch else base)
    blocks = pack_blocks(texts, tokenizer, config.max_length)
    if len(blocks) < 2:
        raise CPTDataError(
            f"{data_path}: only {len(blocks)} block(s) of {config.max_length} tokens; add text or "
            "lower max_length"
        )
    train_blocks, eval_blocks = split_blocks(blocks, config.eval_split, config.seed)
    ctx.emit("log", level="info", message=(
        f"{len(texts)} documents, {len(blocks) * config.max_length:,} tokens in {len(blocks)} blocks "
        f"of {config.max_length} ({len(train_blocks)} train, {len(eval_blocks)} eval)"))

    # -- model ---------------------------------------------------------------------------------
    ctx.emit("phase", phase="load_model")
    transformers.set_seed(config.seed)  # seeds the fresh model's initialisation too
    use_cpu = config.device == "cpu" or not torch.cuda.is_available()
    model = build_model(config, tokenizer) if scratch else load_model(config, base)
    if config.method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, target_modules="all-linear",
            task_type="CAUSAL_LM",
        ))
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ctx.emit("log", level="info", message=f"{n_trainable:,} trainable of {n_params:,} parameters")

    # -- trainer -------------------------------------------------------------------------------
    bf16, fp16 = _precision(config.dtype, use_cpu)
    args = TrainingArguments(
        output_dir=str(ctx.output_dir),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        **checkpointing_arguments(config.gradient_checkpointing),
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float < 1 is a share of the steps in transformers 5
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm if config.max_grad_norm > 0 else None,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        eval_strategy="steps" if eval_blocks else "no",
        eval_steps=config.eval_steps,
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=use_cpu,
        bf16=bf16,
        fp16=fp16,
        include_num_input_tokens_seen=True,
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    callback = EventCallback(
        ctx, config.sample_prompts, config.sample_max_new_tokens, chat=False, tokenizer=tokenizer
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=BlockDataset(train_blocks),
        eval_dataset=BlockDataset(eval_blocks) if eval_blocks else None,
        processing_class=tokenizer,
        callbacks=[callback, *(callbacks or [])],
    )
    trainer.remove_callback(PrinterCallback)  # metrics go to the sink, not to stdout

    # -- train ---------------------------------------------------------------------------------
    resume = str(ctx.resume_from) if ctx.resume_from else None
    if resume:
        ctx.emit("log", level="info", message=f"resuming from {resume}")
    output = trainer.train(resume_from_checkpoint=resume)
    state = trainer.state
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    eval_losses = [h["eval_loss"] for h in state.log_history if "eval_loss" in h]

    # -- save ----------------------------------------------------------------------------------
    status = "cancelled" if callback.cancelled else "completed"
    final_dir = None
    if status == "completed":
        ctx.emit("phase", phase="save")
        final_dir = ctx.output_dir / "final"
        trainer.model.save_pretrained(str(final_dir), safe_serialization=True)
        tokenizer.save_pretrained(str(final_dir))
    result = {
        "status": status,
        "output_dir": str(ctx.output_dir),
        "final_dir": str(final_dir) if final_dir else None,
        "checkpoint": _last_checkpoint(ctx.output_dir),
        "global_step": state.global_step,
        "max_steps": state.max_steps,
        "train_loss": losses[-1] if losses else None,
        "train_loss_mean": output.training_loss,
        "eval_loss": eval_losses[-1] if eval_losses else None,
        "num_tokens": int(getattr(state, "num_input_tokens_seen", 0) or 0),
        "parameters": n_params,
        "trainable_parameters": n_trainable,
        "blocks": {"train": len(train_blocks), "eval": len(eval_blocks), "length": config.max_length},
        "wall_s": round(time.perf_counter() - t0, 2),
    }
    ctx.emit("done", **result)
    return result


# ---- the steps, small enough to test one by one --------------------------------------------


def resolve_dataset(config: CPTJobConfig, ctx: JobContext) -> Path:
    """The text file: the runner's resolved path, else ``config.dataset`` read as a path
    (relative to the working directory, then to the repository)."""
    if ctx.dataset_path:
        return Path(ctx.dataset_path)
    given = Path(config.dataset).expanduser()
    for candidate in (given, paths.REPO_ROOT / given):
        if candidate.exists():
            return candidate
    raise CPTDataError(
        f"dataset {config.dataset!r} is not a file; give a .txt or text .jsonl path (or import it "
        "first and pass the version id through the runner)"
    )


def load_texts(path: Path) -> list[str]:
    """Documents of a text dataset, validated by the dataset layer."""
    from tuiapp.engine.data import validate

    report = validate(path, kind="text")
    if not report.ok:
        first = "\n".join(f"  {p}" for p in report.errors[:5])
        raise CPTDataError(f"{path} is not usable raw text ({report.error_count} problem(s)):\n{first}")
    texts = [r["text"] for r in report.records if r.get("text", "").strip()]
    if not texts:
        raise CPTDataError(f"{path} has no text to train on")
    return texts


def load_cpt_tokenizer(config: CPTJobConfig, base: str | None):
    """config.tokenizer when set, else the base model's own, else (scratch) the demo tokenizer."""
    from tuiapp.engine.data import load_tokenizer

    if config.tokenizer:
        return load_tokenizer(config.tokenizer)
    if base is not None:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(base, trust_remote_code=config.trust_remote_code)
    return load_tokenizer(None)


def separator_id(tokenizer) -> int:
    sep = tokenizer.convert_tokens_to_ids(DOC_SEPARATOR)
    if isinstance(sep, int) and sep != tokenizer.unk_token_id and sep >= 0:
        return sep
    if tokenizer.eos_token_id is None:
        raise CPTDataError("the tokenizer has neither <|endoftext|> nor an EOS token to separate documents")
    return tokenizer.eos_token_id


def pack_blocks(texts: list[str], tokenizer, block_size: int) -> list[list[int]]:
    """Every document followed by the separator, concatenated, cut into full blocks (the tail
    shorter than a block is dropped: no padding ever enters pre-training)."""
    sep = separator_id(tokenizer)
    stream: list[int] = []
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    for ids in encoded:
        stream.extend(ids)
        stream.append(sep)
    n = len(stream) // block_size
    return [stream[i * block_size:(i + 1) * block_size] for i in range(n)]


def split_blocks(blocks: list[list[int]], share: float, seed: int) -> tuple[list, list]:
    import random

    if share <= 0:
        return blocks, []
    order = list(range(len(blocks)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(blocks) * share))
    held = set(order[:n_eval])
    return [b for i, b in enumerate(blocks) if i not in held], [blocks[i] for i in sorted(held)]


class BlockDataset:
    """Fixed-length blocks; labels are the inputs themselves (the model shifts them). Built here
    rather than by a collator because pad == <|endoftext|> in the demo tokenizer, and a
    padding-aware collator would mask every document separator out of the loss."""

    def __init__(self, blocks: list[list[int]]):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        ids = torch.tensor(self.blocks[i], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def build_model(config: CPTJobConfig, tokenizer):
    """A fresh Llama from the config's architecture fields (fp32, seeded by the caller)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    arch = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=max(config.max_length, 1024),
        tie_word_embeddings=config.tie_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(arch)


def load_model(config: CPTJobConfig, base: str):
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(
            base, use_safetensors=True, trust_remote_code=config.trust_remote_code, dtype="float32"
        )
    except OSError as exc:
        raise ConfigError("base_model", f"cannot load a model from {base!r}: {exc}") from exc


def _precision(dtype: str, use_cpu: bool) -> tuple[bool, bool]:
    """(bf16, fp16) Trainer flags: auto follows modeling.auto_dtype (bf16 on a capable GPU or on
    a CPU with AMX/AVX512-BF16); fp16 needs a GPU."""
    from tuiapp.engine.train import modeling

    if dtype == "auto":
        dtype = modeling.auto_dtype("cpu" if use_cpu else "cuda")[0]
    return dtype == "bf16", dtype == "fp16" and not use_cpu


def _last_checkpoint(output_dir: Path) -> str | None:
    from tuiapp.engine.context import latest_checkpoint

    found = latest_checkpoint(output_dir)
    return str(found) if found else None
