"""Padding-free preference batches for TRL's DPOTrainer and KTOTrainer.

TRL 1.16 pads every DPO batch (chosen and rejected answers of all pairs, right-padded to the
longest; KTO likewise); DPO's own ``padding_free`` option is switched off after a refactor. On short, uneven
pairs half of every batch can be padding (the demo's preference set: 48%), and the model
computes all of it. Here the forward call TRL makes is rewritten: the real tokens of all rows
are laid end to end in one row, ``position_ids`` restart at 0 for every sequence (transformers
then builds a block-diagonal causal mask, so no token sees another sequence), the next-token
labels are given explicitly (``shift_labels``, so no label crosses a sequence boundary), and
the per-token outputs are put back into TRL's padded ``[batch, length - 1]`` layout. TRL's loss
code runs unchanged on numbers equal to the padded forward's (checked once per trainer on the
first batch; a model whose attention ignores ``position_ids`` packing falls back to padding).
"""

from __future__ import annotations

import types
from typing import Any

# The per-token fields of TRL's FusedCausalLMOutput, shaped like the labels.
_PER_TOKEN = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1", "label_mask")
# Largest |log-prob| difference per token between the packed and the padded forward that still
# counts as the same numbers: fp32 differs by reduction order only (measured 1e-6); bf16/fp16
# by their 8-bit mantissa, relative to the log-probs' size (measured 4.9e-3 at |log p| ≈ 8).
CHECK_TOLERANCE = 1e-3
CHECK_TOLERANCE_HALF = 1e-2  # x max(1, largest |log p| of the batch)


def _fused_module(model):
    """The module whose ``forward`` TRL replaced with its fused log-prob forward."""
    for module in model.modules():
        forward = module.__dict__.get("forward")
        code = getattr(getattr(forward, "__func__", forward), "__code__", None)
        if code is not None and code.co_name == "_fused_forward":  # functools.wraps renamed it
            return module
    return None


def pack(input_ids, attention_mask, labels):
    """Right-padded rows → one row of real tokens, its position ids and next-token labels."""
    import torch

    valid = attention_mask.bool()
    positions = torch.arange(input_ids.size(1), device=input_ids.device).expand_as(input_ids)
    if not bool((valid == (positions < valid.sum(1, keepdim=True))).all()):
        return None  # not right-padded: leave the batch as it is
    following = torch.cat([labels[:, 1:], labels.new_full((labels.size(0), 1), -100)], dim=1)
    has_next = torch.cat([valid[:, 1:], valid.new_zeros((valid.size(0), 1))], dim=1)
    following = following.masked_fill(~has_next, -100)  # the last real token predicts nothing
    return (input_ids[valid].unsqueeze(0), positions[valid].unsqueeze(0),
            following[valid].unsqueeze(0), valid)


def unpack(packed, valid):
    """One packed row of per-token values → TRL's padded ``[batch, length - 1]`` layout."""
    full = packed.new_zeros(valid.shape)
    full[valid] = packed[0]
    return full[:, :-1]


def install(trainer) -> bool:
    """Route the trainer's fused forwards (the policy's, and a separate reference model's) through
    packing. False when there is no fused forward to wrap (nothing changes)."""
    state: dict[str, Any] = {"enabled": True, "gap": 0.0}
    wrapped = [_wrap(module, state) for module in
               (_fused_module(trainer.model),
                _fused_module(trainer.ref_model) if getattr(trainer, "ref_model", None) is not None else None)
               if module is not None]
    if not wrapped:
        return False
    trainer._tuneloop_padding_free = state
    return True


def _wrap(module, state: dict[str, Any]):
    import torch

    fused = module.forward
    checked = [False]

    def forward(self, *args, fused_lm_head=False, labels=None, **kwargs):
        mask = kwargs.get("attention_mask")
        usable = (state["enabled"] and fused_lm_head and not args and labels is not None
                  and mask is not None and "input_ids" in kwargs and "shift_labels" not in kwargs
                  and kwargs.get("inputs_embeds") is None and kwargs.get("position_ids") is None
                  and not bool(mask.bool().all()))
        packed = pack(kwargs["input_ids"], mask, labels) if usable else None
        if packed is None:
            return fused(*args, fused_lm_head=fused_lm_head, labels=labels, **kwargs)
        ids, positions, shift_labels, valid = packed
        rest = {k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask")}

        def run_packed():
            out = fused(input_ids=ids, position_ids=positions, shift_labels=shift_labels,
                        fused_lm_head=True, **rest)
            for name in _PER_TOKEN:
                value = getattr(out, name, None)
                if value is not None:
                    setattr(out, name, unpack(value, valid))
            return out

        if not checked[0]:  # once: the packed numbers must be the padded ones (no dropout)
            checked[0] = True
            training = self.training
            self.eval()
            try:
                with torch.no_grad():
                    padded = fused(fused_lm_head=True, labels=labels, **kwargs).log_probs
                    gap = (padded - run_packed().log_probs).abs().max().item()
            finally:
                self.train(training)
            state["gap"] = max(state["gap"], gap)
            state["checked"] = True
            if gap > _tolerance(self, padded):  # attention did not honour the packing: pad from now on
                state["enabled"] = False
                return fused(fused_lm_head=fused_lm_head, labels=labels, **kwargs)
        return run_packed()

    module.forward = types.MethodType(forward, module)
    return module


def _tolerance(module, log_probs) -> float:
    import torch

    dtype = module.get_input_embeddings().weight.dtype
    if dtype in (torch.float16, torch.bfloat16):
        return CHECK_TOLERANCE_HALF * max(1.0, log_probs.abs().max().item())
    return CHECK_TOLERANCE
