"""The one TrainerCallback every Trainer-based algorithm uses: Trainer state → engine events.

It turns logs into ``metrics`` events (with tokens/s and memory), reports progress and ETA,
marks checkpoints complete once written, answers the sample prompts at each checkpoint, and
implements cooperative cancel: when ``ctx.stop_requested()`` it asks the Trainer to save and stop.
Imported only inside a job (it needs transformers).
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from tuiapp.engine.context import JobContext, mark_checkpoint_complete

# Trainer log keys → our metric names (others pass through unchanged).
_RENAMES = {"train_loss": "train_loss_mean"}
_SKIP = {"total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second"}


def peak_memory_mb(device: str | None = None) -> float:
    """Peak accelerator memory when on CUDA, else this process's peak RSS."""
    try:
        import torch

        if device != "cpu" and torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2**20
    except Exception:  # noqa: BLE001 - memory is informative only
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


class EventCallback(TrainerCallback):
    def __init__(
        self,
        ctx: JobContext,
        sample_prompts: list[str] | None = None,
        sample_max_new_tokens: int = 48,
        chat: bool = True,
        tokenizer: Any = None,
    ) -> None:
        self.ctx = ctx
        self.sample_prompts = list(sample_prompts or [])
        self.sample_max_new_tokens = sample_max_new_tokens
        self.chat = chat
        self.tokenizer = tokenizer
        self.cancelled = False
        self._t0 = 0.0
        self._last_t = 0.0
        self._last_tokens = 0
        self._first_step = 0

    # -- progress and metrics --------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = self._last_t = time.perf_counter()
        self._last_tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        self._first_step = state.global_step
        self.ctx.emit("phase", phase="train")
        self.ctx.emit("progress", step=state.global_step, total_steps=state.max_steps, eta_s=None)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        now = time.perf_counter()
        values: dict[str, float] = {}
        for key, value in logs.items():
            if key in _SKIP or not isinstance(value, (int, float)):
                continue
            values[_RENAMES.get(key, key)] = float(value)
        tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        if tokens and now > self._last_t and "loss" in values:
            values["tokens_per_s"] = (tokens - self._last_tokens) / (now - self._last_t)
            self._last_tokens, self._last_t = tokens, now
        if "loss" in values or "eval_loss" in values:
            values["memory_mb"] = peak_memory_mb(str(args.device))
        if values:
            self.ctx.emit("metrics", step=state.global_step, values=values)
        done = state.global_step - self._first_step
        left = max(state.max_steps - state.global_step, 0)
        eta = (now - self._t0) / done * left if done > 0 else None
        self.ctx.emit("progress", step=state.global_step, total_steps=state.max_steps, eta_s=eta)

    # -- cooperative cancel ------------------------------------------------------------------
    def on_step_end(self, args, state, control, **kwargs):
        if self.ctx.stop_requested() and not self.cancelled:
            self.cancelled = True
            self.ctx.emit("log", level="info", message=f"stop requested: saving at step {state.global_step}")
            control.should_save = True
            control.should_training_stop = True
        return control

    # -- checkpoints and samples -----------------------------------------------------------
    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return  # several processes: rank 0 marks the checkpoint and answers the prompts
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            mark_checkpoint_complete(folder, state.global_step)
            self.ctx.emit("checkpoint", step=state.global_step, path=str(folder))
        model = kwargs.get("model")
        tok = self.tokenizer or kwargs.get("processing_class")
        if model is not None and tok is not None and self.sample_prompts and not _sharded(args):
            for prompt, output in generate_samples(
                model, tok, self.sample_prompts, self.sample_max_new_tokens, self.chat
            ):
                self.ctx.emit("sample", step=state.global_step, prompt=prompt, output=output)


def _sharded(args) -> bool:
    """Weights split across ranks (FSDP, ZeRO-3): rank 0 alone cannot generate."""
    import os

    if getattr(args, "world_size", 1) <= 1:
        return False
    return (os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
            or os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3")


def generate_samples(model, tokenizer, prompts, max_new_tokens: int = 48, chat: bool = True):
    """Greedy answers to the sample prompts (no RNG used, so resumed runs stay identical)."""
    import torch

    from tuiapp.engine.train.template_mask import end_of_turn_ids

    was_training = model.training
    model.eval()
    out = []
    # a chat answer ends at the template's end-of-turn (Gemma's <end_of_turn> is not its eos)
    stops = end_of_turn_ids(tokenizer) if chat and getattr(tokenizer, "chat_template", None) else None
    try:
        device = next(model.parameters()).device
        for prompt in prompts:
            if chat and getattr(tokenizer, "chat_template", None):
                ids = tokenizer.apply_chat_template(
                    [{"role": "user", "content": prompt}], add_generation_prompt=True,
                    return_tensors="pt", return_dict=True,
                )["input_ids"]
            else:
                ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
            ids = ids.to(device)
            with torch.no_grad():
                gen = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    **({"eos_token_id": stops} if stops else {}),
                    pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
                )
            text = tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)
            out.append((prompt, text.strip()))
    finally:
        if was_training:
            model.train()
    return out
