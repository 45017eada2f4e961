"""GRPO and RLOO through TRL, with the reward sources PPO uses (rewards.py). Read top to bottom:
prompts → reward → start model (policy.py) → trainer → train → save.

Both sample ``num_generations`` answers per prompt and need no value model: GRPO normalises each
answer's reward within its group, RLOO baselines it on the mean of the others. The policy is a
fresh LoRA adapter on the start model (TRL adds it from our ``peft_config``); the KL reference is
the same model with the adapter disabled.

The verifier needs each prompt's reference or category: the dataset rows carry them in a
``record`` column (JSON), which TRL hands to the reward function as a keyword argument.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tuiapp.engine.context import JobContext
from tuiapp.engine.train import policy
from tuiapp.engine.train import reward_sources as rewards
from tuiapp.engine.train.config import GRPOJobConfig, RLOOJobConfig
from tuiapp.engine.train.ppo import PPOError, stop_token_ids
from tuiapp.engine.train.reward_sources import load_prompts


def train_grpo(config: GRPOJobConfig, ctx: JobContext) -> dict[str, Any]:
    return _train(config, ctx)


def train_rloo(config: RLOOJobConfig, ctx: JobContext) -> dict[str, Any]:
    return _train(config, ctx)


def _train(config: GRPOJobConfig, ctx: JobContext) -> dict[str, Any]:
    # --- prompts and reward (refused before any model loads) ----------------------------------
    ctx.emit("phase", phase="load_data")
    prompts = load_prompts(config, ctx)
    rows = [{"prompt": p["prompt"], "record": json.dumps({k: v for k, v in p.items() if k != "prompt"})}
            for p in prompts]
    reward_fn = rewards.load_reward(config.reward, home=rewards.home_of(ctx.output_dir))
    ctx.emit("log", level="info", message=f"{len(rows)} prompts, {config.num_generations} answers each, "
             f"reward {config.reward}")

    # --- start model --------------------------------------------------------------------------
    ctx.emit("phase", phase="load_model")
    try:
        model, tokenizer, info = policy.load_start_model(config, ctx, wrap_lora=False)
    except (policy.StartError, policy.modeling.ModelLoadError) as exc:
        raise PPOError(str(exc)) from exc
    ctx.emit("log", level="info", message=f"start: {info['start']}; {config.method} on {info['device']}")

    # --- trainer, train, save -----------------------------------------------------------------
    trainer = build_trainer(config, ctx, model, tokenizer, rows, trl_reward(reward_fn, config.reward),
                            info["device"])
    callback = next(c for c in trainer.callback_handler.callbacks if type(c).__name__ == "EventCallback")
    trainer.train(resume_from_checkpoint=str(ctx.resume_from) if ctx.resume_from else None)
    rewards_logged = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    result: dict[str, Any] = {
        "status": "cancelled" if callback.cancelled else "completed", "output_dir": str(ctx.output_dir),
        "final_dir": None, "adapter": config.method != "full", "steps": trainer.state.global_step,
        "reward_first": rewards_logged[0] if rewards_logged else None,
        "reward_last": rewards_logged[-1] if rewards_logged else None,
    }
    if not callback.cancelled:
        ctx.emit("phase", phase="save")
        final = Path(ctx.output_dir) / "final"
        trainer.save_model(str(final))
        tokenizer.save_pretrained(str(final))
        (final / "training_args.bin").unlink(missing_ok=True)  # a pickle; the run row has the config
        result["final_dir"] = str(final)
    return result


def trl_reward(reward_fn: rewards.RewardFn, spec: str):
    """Our reward(prompts, responses, records) as TRL's f(prompts, completions, **columns)."""

    def reward(prompts, completions, record=None, **_: Any) -> list[float]:
        texts = [_last_content(p) for p in prompts]
        answers = [_last_content(c) for c in completions]
        records = [json.loads(r) for r in record] if record else [{} for _ in prompts]
        return reward_fn(texts, answers, records)

    reward.__name__ = spec.split(":")[0]  # TRL logs rewards/<name>/mean
    return reward


def _last_content(x: Any) -> str:
    """A message list's last content (conversational rows), or the string itself."""
    if isinstance(x, list):
        return str(x[-1]["content"]).strip() if x else ""
    return str(x).strip()


def build_trainer(config: GRPOJobConfig, ctx: JobContext, model, tokenizer, rows, reward, device: str,
                  extra_callbacks=()):
    from datasets import Dataset

    from tuiapp.engine.train.callbacks import EventCallback
    from tuiapp.engine.train.dpo import common_arguments

    args = common_arguments(config, ctx, device, has_eval=False)
    args.pop("max_length")  # answers are bounded by max_completion_length instead
    # TRL counts answers per step; a step must hold whole groups of num_generations
    groups = max(1, math.ceil(config.batch_size / config.num_generations))
    args.update(per_device_train_batch_size=groups * config.num_generations,
                per_device_eval_batch_size=groups * config.num_generations,
                num_generations=config.num_generations, max_completion_length=config.max_completion_length,
                beta=config.beta, temperature=config.temperature, top_k=0, top_p=1.0,
                log_completions=False)
    if config.kind == "rloo":
        from trl import RLOOConfig as TrlConfig
        from trl import RLOOTrainer as Trainer
    else:
        from trl import GRPOConfig as TrlConfig
        from trl import GRPOTrainer as Trainer
    callback = EventCallback(ctx, config.sample_prompts, config.sample_max_new_tokens, chat=True,
                             tokenizer=tokenizer)
    # TRL stops sampling, and ends each completion's mask, at the model's generation eos ids:
    # make them the template's end-of-turn too (Gemma ends a turn on <end_of_turn>, not <eos>).
    model.generation_config.eos_token_id = stop_token_ids(tokenizer)
    return Trainer(model=model, reward_funcs=[reward], args=TrlConfig(**args),
                   train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                   callbacks=[callback, *extra_callbacks],
                   peft_config=policy.new_lora_config(config) if config.method == "lora" else None)
