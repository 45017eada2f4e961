"""PPO, written out (TRL 1.x no longer ships a PPO trainer). Read top to bottom:
the math (pure functions) → prompts → start model + value head → rollout → PPO update → loop
with metrics, checkpoints, cancel and resume.

One rollout step:
  1. sample ``rollout_batch_size`` prompts; the policy (start model + a new LoRA adapter)
     samples an answer to each (temperature, stop at the end-of-turn token);
  2. the reward source scores each answer (a scalar per answer);
  3. one no-grad pass gives the policy's log-probs and values per answer token, one more with
     the adapter disabled gives the reference's log-probs (same weights: no second copy);
  4. per-token rewards r_t = −β·(logπ − logπ_ref), plus the score on the last token;
  5. GAE(γ, λ) over the values gives advantages (whitened) and returns;
  6. ``ppo_epochs`` passes over shuffled minibatches minimise the clipped surrogate plus
     vf_coef × the clipped value loss;
  7. β is fixed, or moved by a proportional controller towards ``target_kl``.
The value head is one Linear on the last hidden state, trained with the adapter and saved
beside it as ``value_head.safetensors``.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any

from tuiapp.engine.context import COMPLETE_MARKER, JobContext, mark_checkpoint_complete
from tuiapp.engine.train import reward_sources as rewards
from tuiapp.engine.train.config import (  # config registers the alignment configs (no cycle)
    PPOJobConfig,
)
from tuiapp.engine.train.reward_sources import load_prompts

# ------------------------------------------------------------------ the math (pure, tested)


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


def kl_penalized_rewards(score, logp, ref_logp, mask, beta: float):
    """Per-token rewards −β·(logπ − logπ_ref), plus each answer's score on its last real token.
    Returns (rewards, kl) with kl the per-token estimate logπ − logπ_ref (0 where masked)."""
    import torch

    kl = (logp - ref_logp) * mask
    out = -beta * kl
    last = (mask.sum(1).long() - 1).clamp(min=0)
    out[torch.arange(out.shape[0]), last] += score.to(out.dtype)
    return out * mask, kl


def gae(rewards, values, mask, gamma: float, lam: float):
    """Generalised advantage estimation; positions past an answer's end are zero.
    A_t = δ_t + γλ·A_{t+1},  δ_t = r_t + γ·V_{t+1} − V_t.  Returns (advantages, returns)."""
    import torch

    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    steps = rewards.shape[1]
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def whiten(x, mask, eps: float = 1e-8):
    """Zero mean, unit variance over the unmasked entries (population variance); masked → 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * (var + eps).rsqrt() * mask


def clipped_policy_loss(logp, old_logp, advantages, mask, clip: float):
    """PPO's pessimistic surrogate: mean over tokens of max(−A·ρ, −A·clip(ρ, 1±ε)).
    Returns (loss, clip fraction)."""
    import torch

    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, masked_mean((clipped > unclipped).float(), mask)


def clipped_value_loss(values, old_values, returns, mask, clip: float):
    """½·max((V − R)², (V_clipped − R)²) with V_clipped = V_old + clip(V − V_old, ±clip).
    Returns (loss, clip fraction)."""
    import torch

    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    unclipped_err = (values - returns) ** 2
    clipped_err = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_err, clipped_err), mask)
    return loss, masked_mean((clipped_err > unclipped_err).float(), mask)


class AdaptiveKL:
    """Proportional controller (Ziegler et al. 2019): β ← β·(1 + clip(KL/target − 1, ±0.2)·n/horizon).
    ``horizon`` is in answers: with the default 160, a rollout of 16 moves β by at most 2%."""

    def __init__(self, beta: float, target: float, horizon: int = 160) -> None:
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n_answers: int) -> float:
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + error * n_answers / self.horizon
        return self.beta


# ------------------------------------------------------------------ model pieces


class PPOError(ValueError):
    """A setting PPO cannot work with, said so a person can fix it."""

    phase = "load_model"
    kind = "config"


def load_policy(config: PPOJobConfig, ctx: JobContext):
    """(model with a trainable LoRA adapter, tokenizer, value head, device)."""
    import torch
    from peft import PeftModel

    from tuiapp.engine.train.policy import load_start_model

    if config.method != "lora":
        raise PPOError("PPO trains a LoRA adapter (its reference is the same model with the adapter "
                       "disabled); set method=lora")
    model, tokenizer, info = load_start_model(config, ctx)
    if not isinstance(model, PeftModel):
        raise PPOError("the start model came back without a LoRA adapter")
    ctx.emit("log", level="info", message=f"start: {info['start']}; LoRA on {info['device']} ({info['dtype']}), "
             f"{info['trainable_params']:,} of {info['total_params']:,} parameters trainable")
    device = next(model.parameters()).device
    hidden = model.get_input_embeddings().embedding_dim
    value_head = torch.nn.Linear(hidden, 1).to(device=device, dtype=torch.float32)
    torch.nn.init.zeros_(value_head.weight)
    torch.nn.init.zeros_(value_head.bias)
    model.eval()  # no dropout: rollout and update log-probs must come from the same function
    return model, tokenizer, value_head, device


def stop_token_ids(tokenizer) -> list[int]:
    """eos and the template's own end-of-turn token (Gemma's <end_of_turn> is not its eos), plus
    the ChatML/Llama 3 ones when the vocabulary has them."""
    from tuiapp.engine.train.template_mask import end_of_turn_ids

    ids = {tokenizer.eos_token_id, *end_of_turn_ids(tokenizer)}
    for tok in ("<|im_end|>", "<|eot_id|>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


def forward_answers(model, value_head, batch, temperature: float, with_values: bool = True):
    """Log-probs (at the sampling temperature) of each answer token, entropies and values."""
    import torch

    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], output_hidden_states=with_values, use_cache=False)
    start = batch["prompt_len"] - 1  # logits at position t predict token t+1
    logits = out.logits[:, start:-1].float() / temperature
    logprobs = torch.log_softmax(logits, dim=-1)
    logp = logprobs.gather(-1, batch["answer_ids"].unsqueeze(-1)).squeeze(-1)
    entropy = -(logprobs.exp() * logprobs).sum(-1)
    values = None
    if with_values:
        hidden = out.hidden_states[-1][:, start:-1].float()
        values = value_head(hidden).squeeze(-1)
    return logp, entropy, values


def rollout(model, tokenizer, prompts: list[dict], config: PPOJobConfig, device, stops: list[int]):
    """Sample one answer per prompt; the padded batch every later pass reuses."""
    import torch

    texts = [tokenizer.apply_chat_template(p["prompt"], add_generation_prompt=True, tokenize=False)
             for p in prompts]
    keep = max(8, config.max_length - config.max_new_tokens)  # a long prompt keeps its end
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"][-keep:] for t in texts]
    width = max(len(e) for e in encoded)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=device)  # left pad
    prompt_mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=device)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=prompt_mask, do_sample=True,
                             temperature=config.temperature, top_k=0, top_p=1.0,
                             max_new_tokens=config.max_new_tokens, eos_token_id=stops,
                             pad_token_id=pad, use_cache=True)
    answer_ids = out[:, width:]
    is_stop = torch.isin(answer_ids, torch.tensor(stops, device=device))
    # keep every token up to and including the first stop token
    answer_mask = (torch.cumsum(is_stop.long(), 1) - is_stop.long() == 0).long()
    attention = torch.cat([prompt_mask, answer_mask], 1)
    responses = [tokenizer.decode(a[m.bool()], skip_special_tokens=True).strip()
                 for a, m in zip(answer_ids, answer_mask, strict=True)]
    return {
        "input_ids": torch.cat([ids, answer_ids], 1), "attention_mask": attention,
        "position_ids": (attention.cumsum(1) - 1).clamp(min=0), "prompt_len": width,
        "answer_ids": answer_ids, "mask": answer_mask.float(),
    }, responses


def _rows(batch: dict, index) -> dict:
    return {k: (v[index] if hasattr(v, "shape") else v) for k, v in batch.items()}


def ppo_update(model, value_head, optimizer, scheduler, batch, old_logp, old_values, advantages,
               returns, config: PPOJobConfig, seed: int) -> dict[str, float]:
    """``ppo_epochs`` passes over shuffled minibatches; mean losses and fractions."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad] + list(value_head.parameters())
    n = old_logp.shape[0]
    order_rng = torch.Generator().manual_seed(seed)
    stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "clipfrac", "value_clipfrac", "approx_kl")}
    for _ in range(config.ppo_epochs):
        order = torch.randperm(n, generator=order_rng)
        for start in range(0, n, config.mini_batch_size):
            idx = order[start:start + config.mini_batch_size].to(old_logp.device)
            mb = _rows(batch, idx)
            mask = mb["mask"]
            logp, _entropy, values = forward_answers(model, value_head, mb, config.temperature)
            pg_loss, clipfrac = clipped_policy_loss(logp, old_logp[idx], advantages[idx], mask, config.cliprange)
            vf_loss, vf_clipfrac = clipped_value_loss(values, old_values[idx], returns[idx], mask,
                                                      config.cliprange_value)
            loss = pg_loss + config.vf_coef * vf_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                approx_kl = masked_mean(0.5 * (logp - old_logp[idx]) ** 2, mask)
            for key, value in (("policy_loss", pg_loss), ("value_loss", vf_loss), ("clipfrac", clipfrac),
                               ("value_clipfrac", vf_clipfrac), ("approx_kl", approx_kl)):
                stats[key].append(float(value.detach()))
    return {k: sum(v) / len(v) for k, v in stats.items()}


# ------------------------------------------------------------------ the loop


def train(config: PPOJobConfig, ctx: JobContext) -> dict[str, Any]:
    import torch
    import transformers

    ctx.emit("phase", phase="load_data")
    prompts = load_prompts(config, ctx)
    reward_fn = rewards.load_reward(config.reward, home=rewards.home_of(ctx.output_dir))
    per_epoch = math.ceil(len(prompts) / config.rollout_batch_size)
    total = config.max_steps if config.max_steps > 0 else max(1, math.ceil(config.epochs * per_epoch))
    ctx.emit("log", level="info", message=f"{len(prompts)} prompts, {total} rollouts of "
             f"{config.rollout_batch_size}, reward {config.reward}")

    ctx.emit("phase", phase="load_model")
    transformers.set_seed(config.seed)
    model, tokenizer, value_head, device = load_policy(config, ctx)
    stops = stop_token_ids(tokenizer)
    params = [p for p in model.parameters() if p.requires_grad] + list(value_head.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    updates_per_rollout = config.ppo_epochs * math.ceil(config.rollout_batch_size / config.mini_batch_size)
    scheduler = transformers.get_scheduler(
        config.lr_scheduler, optimizer, num_warmup_steps=int(config.warmup_ratio * total * updates_per_rollout),
        num_training_steps=total * updates_per_rollout)
    kl_ctl = AdaptiveKL(config.kl_coef, config.target_kl)
    step = 0
    if ctx.resume_from:
        step = load_checkpoint(Path(ctx.resume_from), model, value_head, optimizer, scheduler, kl_ctl)
        ctx.emit("log", level="info", message=f"resumed from {ctx.resume_from} at rollout {step}")

    ctx.emit("phase", phase="train")
    ctx.emit("progress", step=step, total_steps=total, eta_s=None)
    t0, first, cancelled, history = time.perf_counter(), step, False, []
    while step < total:
        if ctx.stop_requested():
            cancelled = True
            ctx.emit("log", level="info", message=f"stop requested: saving at rollout {step}")
            break
        pick = random.Random(f"{config.seed}:{step}").sample(prompts, min(config.rollout_batch_size, len(prompts)))
        batch, responses = rollout(model, tokenizer, pick, config, device, stops)
        scored = reward_fn([p["text"] for p in pick], responses, pick)
        if len(scored) != len(pick):
            raise PPOError(f"the reward {config.reward} gave {len(scored)} scores for {len(pick)} answers")
        scores = torch.tensor(scored, dtype=torch.float32, device=device)
        with torch.no_grad():
            old_logp, entropy, old_values = forward_answers(model, value_head, batch, config.temperature)
            with model.disable_adapter():
                ref_logp, _, _ = forward_answers(model, value_head, batch, config.temperature, with_values=False)
        mask = batch["mask"]
        token_rewards, kl = kl_penalized_rewards(scores, old_logp, ref_logp, mask, kl_ctl.beta)
        advantages, returns = gae(token_rewards, old_values, mask, config.gamma, config.lam)
        if config.whiten_advantages:
            advantages = whiten(advantages, mask)
        stats = ppo_update(model, value_head, optimizer, scheduler, batch, old_logp, old_values,
                           advantages, returns, config, seed=config.seed * 100003 + step)
        step += 1
        seq_kl = float(kl.sum(1).mean())
        values = {
            "reward": float(scores.mean()), "reward_std": float(scores.std()) if len(pick) > 1 else 0.0,
            "kl": seq_kl, "entropy": float(masked_mean(entropy, mask)), "kl_coef": kl_ctl.beta,
            "response_length": float(mask.sum(1).mean()), "loss": stats["policy_loss"] + config.vf_coef * stats["value_loss"],
            "learning_rate": scheduler.get_last_lr()[0], **stats,
        }
        if config.adaptive_kl:
            kl_ctl.update(seq_kl, len(pick))
        history.append(values)
        if step % config.logging_steps == 0 or step == total:
            ctx.emit("metrics", step=step, values=values)
        elapsed = time.perf_counter() - t0
        ctx.emit("progress", step=step, total_steps=total, eta_s=elapsed / (step - first) * (total - step))
        if step % config.save_steps == 0 and step < total:
            save_checkpoint(ctx, config, model, tokenizer, value_head, optimizer, scheduler, kl_ctl, step)

    result: dict[str, Any] = {
        "status": "cancelled" if cancelled else "completed", "output_dir": str(ctx.output_dir),
        "final_dir": None, "adapter": True, "steps": step,
        "reward_first": history[0]["reward"] if history else None,
        "reward_last": history[-1]["reward"] if history else None,
        "kl_last": history[-1]["kl"] if history else None,
    }
    if cancelled:
        if step > first and not (Path(ctx.output_dir) / f"checkpoint-{step}" / COMPLETE_MARKER).exists():
            save_checkpoint(ctx, config, model, tokenizer, value_head, optimizer, scheduler, kl_ctl, step)
        return result
    ctx.emit("phase", phase="save")
    final = Path(ctx.output_dir) / "final"
    save_weights(final, model, tokenizer, value_head)
    result["final_dir"] = str(final)
    return result


# ------------------------------------------------------------------ checkpoints


def save_weights(folder: Path, model, tokenizer, value_head) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    save_file({k: v.detach().cpu().contiguous() for k, v in value_head.state_dict().items()},
              str(folder / "value_head.safetensors"))


def save_checkpoint(ctx, config, model, tokenizer, value_head, optimizer, scheduler, kl_ctl, step) -> Path:
    """Adapter + value head + optimiser/scheduler + RNG + step; marked complete last."""
    import torch

    from tuiapp.engine.train.callbacks import generate_samples

    folder = Path(ctx.output_dir) / f"checkpoint-{step}"
    save_weights(folder, model, tokenizer, value_head)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(), "python_rng": random.getstate()},
               folder / "trainer_state.pt")
    (folder / "ppo_state.json").write_text(json.dumps({"step": step, "kl_coef": kl_ctl.beta}), encoding="utf-8")
    mark_checkpoint_complete(folder, step)
    ctx.emit("checkpoint", step=step, path=str(folder))
    if config.sample_prompts:
        for prompt, output in generate_samples(model, tokenizer, config.sample_prompts,
                                               config.sample_max_new_tokens):
            ctx.emit("sample", step=step, prompt=prompt, output=output)
    return folder


def load_checkpoint(folder: Path, model, value_head, optimizer, scheduler, kl_ctl) -> int:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
    value_head.load_state_dict(load_file(str(folder / "value_head.safetensors")))
    state = torch.load(folder / "trainer_state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    info = json.loads((folder / "ppo_state.json").read_text(encoding="utf-8"))
    kl_ctl.beta = float(info["kl_coef"])
    return int(info["step"])
