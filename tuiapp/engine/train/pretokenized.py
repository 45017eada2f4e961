"""Preference, KTO and reward rows tokenized with the model's own chat template.

TRL 1.16 tokenizes a conversational pair itself (prompt with the generation prompt, then
prompt + answer, cut where the two diverge). With a model's own template that has no
``{% generation %}`` markers that trains what follows the end-of-turn (ChatML's newline after
``<|im_end|>``), trains the user turns of a multi-message answer, and can cut the prompt short
when tokens merge across the boundary. Here each row is split by ``template_mask.completion_split``
instead: the prompt ids are exactly what generation feeds the model (its default system prompt
included), the answer ends on the template's end-of-turn, and a multi-message answer carries a
per-token mask (``*_mask`` columns) that the collators below apply.

TRL's RewardTrainer takes ``chosen_ids``/``rejected_ids`` as they are. DPOTrainer and KTOTrainer
always re-tokenize from text, so ``dpo_trainer_class``/``kto_trainer_class`` return subclasses
whose ``_prepare_dataset`` keeps pre-tokenized rows (doing only what TRL does after tokenizing:
drop rows whose prompt fills max_length; KTO's mismatched KL completions) and whose signature
columns keep the mask columns. The experimental CPO/ORPO trainers (simpo, orpo) tokenize each
row in ``tokenize_row``; ``paired_trainer_class`` builds the same fields from the split ids.
"""

from __future__ import annotations

from typing import Any

from tuiapp.engine.train import template_mask


class PretokenizeError(ValueError):
    """A row the chat template cannot split; the message names the row and why."""


def wanted(tokenizer) -> bool:
    """The model's own template without generation markers: split rows here, not in TRL."""
    return bool(getattr(tokenizer, "chat_template", None)) and not template_mask.has_generation_markers(tokenizer)


def _split(tokenizer, n: int, what: str, prompt, answer, end: str, tools=None) -> dict[str, list[int]]:
    try:
        return template_mask.completion_split(tokenizer, template_mask.as_messages(prompt, "user"),
                                              template_mask.as_messages(answer, "assistant"), end,
                                              tools=tools)
    except template_mask.TemplateMaskError as exc:
        raise PretokenizeError(f"row {n} ({what}): {exc}") from None


def preference_rows(tokenizer, records: list[dict[str, Any]]) -> list[dict[str, list[int]]]:
    """DPO rows: prompt_ids, chosen_ids, rejected_ids and their per-token masks."""
    end = template_mask.end_of_turn(tokenizer)
    rows = []
    for n, r in enumerate(records, 1):
        chosen = _split(tokenizer, n, "chosen", r["prompt"], r["chosen"], end, r.get("tools"))
        rejected = _split(tokenizer, n, "rejected", r["prompt"], r["rejected"], end, r.get("tools"))
        rows.append({"prompt_ids": chosen["prompt_ids"], "chosen_ids": chosen["completion_ids"],
                     "rejected_ids": rejected["completion_ids"], "chosen_mask": chosen["completion_mask"],
                     "rejected_mask": rejected["completion_mask"]})
    return rows


def kto_rows(tokenizer, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """KTO rows: prompt_ids, completion_ids, answer_mask (per-token) and the label."""
    end = template_mask.end_of_turn(tokenizer)
    rows = []
    for n, r in enumerate(records, 1):
        split = _split(tokenizer, n, "completion", r["prompt"], r["completion"], end, r.get("tools"))
        rows.append({"prompt_ids": split["prompt_ids"], "completion_ids": split["completion_ids"],
                     "answer_mask": split["completion_mask"], "label": bool(r["label"])})
    return rows


def reward_rows(tokenizer, records: list[dict[str, Any]]) -> list[dict[str, list[int]]]:
    """Reward rows: whole sequences (the scalar head reads the last token: the end-of-turn)."""
    end = template_mask.end_of_turn(tokenizer)
    rows = []
    for n, r in enumerate(records, 1):
        chosen = _split(tokenizer, n, "chosen", r["prompt"], r["chosen"], end, r.get("tools"))
        rejected = _split(tokenizer, n, "rejected", r["prompt"], r["rejected"], end, r.get("tools"))
        rows.append({"chosen_ids": chosen["prompt_ids"] + chosen["completion_ids"],
                     "rejected_ids": rejected["prompt_ids"] + rejected["completion_ids"]})
    return rows


def conversation_ids(tokenizer, conversation: list[dict[str, Any]], end: str | None = None) -> list[int]:
    """A scored conversation's ids as reward training saw them: the trailing assistant
    message(s) are the answer, everything before them the prompt."""
    k = len(conversation)
    while k > 0 and conversation[k - 1].get("role") == "assistant":
        k -= 1
    split = template_mask.completion_split(tokenizer, conversation[:k], conversation[k:], end)
    return split["prompt_ids"] + split["completion_ids"]


# ------------------------------------------------------------------ masks in the batch


def _mask_tensor(rows: list[list[int]], width: int, cut: slice):
    """Right-padded [len(rows), width] long tensor of the (cut) rows."""
    import torch

    out = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        row = row[cut][:width]
        out[i, :len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def _cut(max_length: int | None, mode: str = "keep_start") -> slice:
    if max_length is None:
        return slice(None)
    return slice(-max_length, None) if mode == "keep_end" else slice(None, max_length)


def preference_collator(tokenizer, args):
    """TRL's DataCollatorForPreference, with the per-token answer masks applied."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    class MaskedPreferenceCollator(DataCollatorForPreference):
        def torch_call(self, examples):
            out = super().torch_call(examples)
            if "chosen_mask" in examples[0]:
                rows = ([[0] * len(e["prompt_ids"]) + e["chosen_mask"] for e in examples]
                        + [[0] * len(e["prompt_ids"]) + e["rejected_mask"] for e in examples])
                out["completion_mask"] = _mask_tensor(rows, out["input_ids"].shape[1],
                                                      _cut(self.max_length, self.truncation_mode))
            return out

    return MaskedPreferenceCollator(pad_token_id=tokenizer.pad_token_id, max_length=args.max_length,
                                    truncation_mode=args.truncation_mode,
                                    pad_to_multiple_of=args.pad_to_multiple_of)


def kto_collator(tokenizer, args):
    """TRL's DataCollatorForUnpairedPreference, with the per-token answer masks applied."""
    from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference

    class MaskedUnpairedCollator(DataCollatorForUnpairedPreference):
        def torch_call(self, examples):
            out = super().torch_call(examples)
            for prefix in ("", "KL_"):
                key = f"{prefix}answer_mask"
                if key in examples[0] and f"{prefix}input_ids" in out:
                    rows = [[0] * len(e["prompt_ids"]) + e[key] for e in examples]
                    out[f"{prefix}completion_mask"] = _mask_tensor(
                        rows, out[f"{prefix}input_ids"].shape[1], _cut(self.max_length))
            return out

    return MaskedUnpairedCollator(pad_token_id=tokenizer.pad_token_id, max_length=args.max_length,
                                  pad_to_multiple_of=args.pad_to_multiple_of)


# ------------------------------------------------------------------ trainers that keep the rows


def _drop_full_prompts(dataset, args):
    """TRL's own step after tokenizing: a prompt that fills max_length leaves no answer token."""
    if args.max_length is None or getattr(args, "truncation_mode", "keep_start") != "keep_start":
        return dataset
    return dataset.filter(lambda example: len(example["prompt_ids"]) < args.max_length)


def dpo_trainer_class():
    from trl import DPOTrainer

    class PretokenizedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" not in dataset.column_names:
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            return _drop_full_prompts(dataset, args)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            self._signature_columns = [*self._signature_columns, "chosen_mask", "rejected_mask"]

    return PretokenizedDPOTrainer


def kto_trainer_class():
    from trl import KTOTrainer

    class PretokenizedKTOTrainer(KTOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" not in dataset.column_names:
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            dataset = _drop_full_prompts(dataset, args)
            if self.calculate_KL:
                # TRL's KL estimate: completions rotated by one inside each batch, masks with them
                def rotate(batch):
                    for key in ("completion_ids", "answer_mask"):
                        batch[f"KL_{key}"] = [batch[key][-1]] + batch[key][:-1]
                    return batch

                dataset = dataset.map(rotate, batched=True, batch_size=args.per_device_train_batch_size)
            return dataset

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            self._signature_columns = [*self._signature_columns, "answer_mask", "KL_answer_mask"]

    return PretokenizedKTOTrainer


def cpo_fields(feature: dict[str, Any], max_length: int) -> dict[str, list[int]]:
    """CPO/ORPO's tokenized row (prompt_*, chosen_*, rejected_* ids, attention and labels) from
    a pre-split pair; like TRL, an answer that does not fit is cut, the prompt is kept whole."""
    prompt = list(feature["prompt_ids"])
    out = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
    for side in ("chosen", "rejected"):
        answer = list(feature[f"{side}_ids"])[: max(0, max_length - len(prompt))]
        mask = feature[f"{side}_mask"][: len(answer)]
        out[f"{side}_input_ids"] = prompt + answer
        out[f"{side}_attention_mask"] = [1] * (len(prompt) + len(answer))
        out[f"{side}_labels"] = [-100] * len(prompt) + [t if m else -100 for t, m in zip(answer, mask, strict=True)]
    return out


def paired_trainer_class(base):
    """``base`` (trl.experimental's CPOTrainer or ORPOTrainer) reading the pre-split ids."""

    class PretokenizedPairs(base):
        def tokenize_row(self, feature, model=None):
            if "prompt_ids" not in feature:
                return super().tokenize_row(feature, model)
            return cpo_fields(feature, self.max_length)

    return PretokenizedPairs
