"""Reward model: a Bradley-Terry scorer trained on preference pairs with TRL's RewardTrainer,
and the scoring API the rest of tuneloop uses (compare, evaluation, PPO).

Read top to bottom: data (pairs) → start model as a 1-label sequence classifier (policy.py:
the SFT adapter merged in memory, a new LoRA adapter, the score head trained in full) →
RewardTrainer → train → held-out pairwise accuracy → save.

    rm = RewardModel.load(run.output_dir)          # a run folder or its final/
    rm.score("What is Kudrade's craft?", "Answer: tailor.")      # a float, higher is better
    rm.score_batch([(prompt, response), ...])

The adapter in final/ was trained on the merged start model, so loading it needs that start:
``final/tuneloop-start.json`` says which base and which SFT adapter to merge first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuiapp.engine.context import JobContext
from tuiapp.engine.train import policy, pretokenized
from tuiapp.engine.train.config import RewardJobConfig
from tuiapp.engine.train.dpo import (
    PreferenceError,
    common_arguments,
    load_records,
    pretokenized_datasets,
)
from tuiapp.engine.train.sft import parameter_counts, split_records

START_FILE = "tuneloop-start.json"


def train(config: RewardJobConfig, ctx: JobContext) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from tuiapp.engine.train.callbacks import EventCallback

    # --- data ---------------------------------------------------------------------------------
    ctx.emit("phase", phase="load_data")
    records = load_records(config, ctx, "preference")
    train_rows, eval_rows = split_records(records, config.eval_split, config.seed)
    ctx.emit("log", level="info", message=f"{len(train_rows)} preference pairs, {len(eval_rows)} held out "
             "for pairwise accuracy")

    # --- model: the start model's decoder under a scalar head ------------------------------------
    ctx.emit("phase", phase="load_model")
    try:
        model, tokenizer, info = policy.load_start_model(config, ctx, for_sequence_classification=True,
                                                         wrap_lora=False)
    except (policy.StartError, policy.modeling.ModelLoadError) as exc:
        raise PreferenceError(str(exc), phase="load_model") from exc
    if info["device"] == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    peft_config = policy.new_lora_config(config, for_sequence_classification=True) \
        if config.method == "lora" else None
    ctx.emit("log", level="info", message=f"start: {info['start']}; reward head on {info['device']}")

    # --- trainer --------------------------------------------------------------------------------
    args = RewardConfig(**common_arguments(config, ctx, info["device"], bool(eval_rows)),
                        center_rewards_coefficient=config.center_rewards_coefficient or None)
    callback = EventCallback(ctx, [], 0, chat=True, tokenizer=tokenizer)  # no text to sample
    data = {"train_dataset": Dataset.from_list(train_rows),
            "eval_dataset": Dataset.from_list(eval_rows) if eval_rows else None}
    if pretokenized.wanted(tokenizer):  # the model's own template: whole sequences split by us
        data = pretokenized_datasets(ctx, pretokenized.reward_rows, tokenizer, train_rows, eval_rows)
    trainer = RewardTrainer(model=model, args=args, **data, processing_class=tokenizer,
                            callbacks=[callback], peft_config=peft_config)
    if len(trainer.train_dataset) == 0:
        raise PreferenceError(f"every pair is longer than max_length {config.max_length}; raise it",
                              phase="load_data")
    trainable, total = parameter_counts(trainer.model)

    # --- train ----------------------------------------------------------------------------------
    resume = str(ctx.resume_from) if ctx.resume_from else None
    out = trainer.train(resume_from_checkpoint=resume)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result: dict[str, Any] = {
        "status": "cancelled" if callback.cancelled else "completed",
        "output_dir": str(ctx.output_dir), "final_dir": None, "adapter": config.method != "full",
        "start": info["start_point"], "steps": trainer.state.global_step,
        "final_loss": losses[-1] if losses else float(out.training_loss),
        "trainable_params": trainable, "total_params": total,
    }
    if callback.cancelled:
        return result

    # --- held-out pairwise accuracy (exact: every pair counted once) -------------------------------
    held = eval_rows or train_rows
    scorer = RewardModel(trainer.model, tokenizer, config.max_length)
    accuracy = pairwise_accuracy(scorer, held)
    key = "eval_accuracy" if eval_rows else "train_accuracy"
    result[key] = accuracy
    result["accuracy_pairs"] = len(held)
    ctx.emit("metrics", step=trainer.state.global_step, values={key: accuracy})
    if not eval_rows:
        ctx.emit("log", level="warning", message="no held-out pairs (eval_split=0): the accuracy is on "
                 "the training pairs")

    # --- save ---------------------------------------------------------------------------------
    ctx.emit("phase", phase="save")
    final = Path(ctx.output_dir) / "final"
    trainer.save_model(str(final))
    tokenizer.save_pretrained(str(final))
    (final / "training_args.bin").unlink(missing_ok=True)
    meta = {**info["start_point"], "max_length": config.max_length, key: accuracy}
    (final / START_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    result["final_dir"] = str(final)
    return result


def pairwise_accuracy(scorer: RewardModel, rows: list[dict[str, Any]]) -> float:
    """Share of pairs whose chosen answer scores above the rejected one (ties count as wrong)."""
    if not rows:
        return float("nan")
    chosen = scorer.score_messages([r["prompt"] + r["chosen"] for r in rows])
    rejected = scorer.score_messages([r["prompt"] + r["rejected"] for r in rows])
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(rows)


# ------------------------------------------------------------------ scoring API


class RewardModel:
    """A trained reward model in memory. ``score`` renders (prompt, response) through the chat
    template exactly as training did and returns the scalar head's output."""

    def __init__(self, model, tokenizer, max_length: int = 512, batch_size: int = 16) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto", dtype: str = "auto") -> RewardModel:
        """A reward run's folder (or its final/): the start model (base + merged SFT adapter)
        as a classifier, with the reward adapter merged in."""
        from transformers import AutoModelForSequenceClassification

        final = Path(folder).expanduser()
        if (final / "final").is_dir():
            final = final / "final"
        meta_path = final / START_FILE
        dev = policy.modeling.pick_device(device)
        torch_dtype = policy.modeling.pick_dtype(dtype, dev)
        if (final / "adapter_config.json").exists():
            if not meta_path.exists():
                raise policy.StartError(f"{final} is a reward adapter without {START_FILE}; it was not "
                                        "trained by tuneloop and its start model is unknown")
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            start = policy.StartPoint.from_dict(meta)
            tokenizer = policy.modeling.load_tokenizer(str(final))
            causal = policy.load_merged_causal_lm(start, tokenizer, dev, torch_dtype)
            base = policy.as_sequence_classifier(causal, torch_dtype)
            del causal
            from peft import PeftModel

            model = PeftModel.from_pretrained(base, str(final)).merge_and_unload()
        elif (final / "config.json").exists():
            meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
            tokenizer = policy.modeling.load_tokenizer(str(final))
            model = AutoModelForSequenceClassification.from_pretrained(str(final), dtype=torch_dtype).to(dev)
        else:
            raise policy.StartError(f"{final} holds no reward model (no adapter_config.json or config.json)")
        if getattr(model.config, "num_labels", 1) != 1:
            raise policy.StartError(f"{final} is a {model.config.num_labels}-label classifier, not a reward model")
        model.config.pad_token_id = tokenizer.pad_token_id
        model.eval()
        return cls(model, tokenizer, int(meta.get("max_length", 512)))

    def score(self, prompt: str | list[dict[str, str]], response: str) -> float:
        return self.score_batch([(prompt, response)])[0]

    def score_batch(self, pairs: list[tuple[str | list[dict[str, str]], str]]) -> list[float]:
        """Scores of (prompt, response) pairs; a prompt may be a string or a message list."""
        conversations = []
        for prompt, response in pairs:
            turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            conversations.append(turns + [{"role": "assistant", "content": response}])
        return self.score_messages(conversations)

    def _ids(self, conversations: list[list[dict[str, str]]]) -> list[list[int]]:
        """Token ids exactly as training built them: split by the model's own template when it
        has no generation markers (pretokenized.py), TRL's whole-conversation render otherwise."""
        if pretokenized.wanted(self.tokenizer):
            end = pretokenized.template_mask.end_of_turn(self.tokenizer)
            return [pretokenized.conversation_ids(self.tokenizer, c, end) for c in conversations]
        return [self.tokenizer.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"]
                for c in conversations]

    def score_messages(self, conversations: list[list[dict[str, str]]]) -> list[float]:
        import torch

        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        scores: list[float] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for i in range(0, len(conversations), self.batch_size):
                chunk = conversations[i:i + self.batch_size]
                ids = [x[: self.max_length] for x in self._ids(chunk)]
                width = max(len(x) for x in ids)
                # right padding: the classifier reads the last non-pad token of each row
                input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=device)
                mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=device)
                with torch.no_grad():
                    logits = self.model(input_ids=input_ids, attention_mask=mask).logits
                scores.extend(float(v) for v in logits[:, 0].float().cpu())
        finally:
            if was_training:
                self.model.train()
        return scores
