"""One plain PEFT adapter for an aligned run, loadable on the base model alone.

An aligned run (DPO, KTO, PPO, GRPO, RLOO) trains its LoRA on the base with the SFT adapter merged
in; tuneloop records that start (``tuneloop-start.json`` or the run's ``job.json``) and stacks the
two when it loads the run. A PEFT user without tuneloop has no such step, so beside the stacked
adapter the run also gets ``<run>/peft/``: one LoRA whose update is exactly the sum of every
adapter in the chain.

Why it is exact: a LoRA on a linear layer adds ``s * B @ A`` (``s = alpha / r``, or
``alpha / sqrt(r)`` with rsLoRA). Stacking the rows of the ``A`` matrices and the columns of the
scaled ``B`` matrices gives ``[s1*B1, s2*B2] @ [A1; A2] = s1*B1@A1 + s2*B2@A2``; the folded adapter
stores that with ``lora_alpha = r`` per module so PEFT's own scale is 1. A module only one adapter
touches keeps that adapter's rank (``rank_pattern`` / ``alpha_pattern`` say so per module).

Embedding rows trained beside the LoRA (PEFT's ``trainable_token_indices``, e.g. the template's
``<|im_end|>``) are not deltas: PEFT writes them over the base rows. Stacked, the last adapter
that holds a row wins, so the folded adapter keeps, per row, the value of the last adapter in the
chain that trained it.

What cannot be folded is said in words and nothing is written: DoRA (its magnitude vector depends
on the merged weight, not additive), trained ``modules_to_save`` (full copies, not deltas), LoRA
biases, embedding LoRAs and adapters of other PEFT types.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

FOLDER = "peft"
_WEIGHTS = "adapter_model.safetensors"
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>A|B)\.weight$")
_TOKENS = re.compile(r"^(?P<module>.+)\.token_adapter\.trainable_tokens_delta$")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "chat_template.jinja", "tokenizer.model", "vocab.json", "merges.txt")


class FoldError(ValueError):
    """The adapters cannot be written as one plain LoRA; the message says which and why."""


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    # PEFT matches a pattern key against the end of the module path, on a dot boundary
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _read_adapter(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors.torch import load_file

    cfg_path = folder / "adapter_config.json"
    if not cfg_path.is_file():
        raise FoldError(f"{folder}: no adapter_config.json")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if cfg.get("peft_type", "LORA") != "LORA":
        raise FoldError(f"{folder}: a {cfg.get('peft_type')} adapter; only LoRA adapters add up")
    if cfg.get("use_dora"):
        raise FoldError(f"{folder}: a DoRA adapter rescales the merged weight, so it is not a sum "
                        "of deltas and cannot be folded into one LoRA")
    if cfg.get("modules_to_save"):
        raise FoldError(f"{folder}: trains full copies of {cfg['modules_to_save']} (modules_to_save), "
                        "which are not deltas on the base")
    if cfg.get("bias", "none") != "none" or cfg.get("lora_bias"):
        raise FoldError(f"{folder}: trains biases, which one LoRA cannot carry")
    weights_path = folder / _WEIGHTS
    if not weights_path.is_file():
        raise FoldError(f"{folder}: no {_WEIGHTS} (only safetensors adapters are read)")
    return cfg, load_file(str(weights_path))


def _token_rows(folder: Path, cfg: dict[str, Any], module: str, rows: Any) -> dict[int, Any]:
    """{token id: embedding row} of one adapter's trainable tokens on ``module``."""
    spec = cfg.get("trainable_token_indices")
    if isinstance(spec, dict):
        leaf = module.rsplit(".", 1)[-1]
        spec = next((v for k, v in spec.items() if re.match(rf"(.*\.)?({k})$", module) or k == leaf), None)
    if not isinstance(spec, list) or len(spec) != rows.shape[0]:
        raise FoldError(f"{folder}: {module} holds {rows.shape[0]} trained token rows but the config "
                        f"lists {spec!r}")
    return {int(i): rows[n] for n, i in enumerate(spec)}


def _scaled_pairs(folder: Path) -> tuple[dict[str, tuple[Any, Any]], dict[str, Any]]:
    """{module path: (A, s*B)} of one adapter, and its config (``_tokens``: trained rows)."""
    cfg, tensors = _read_adapter(folder)
    parts: dict[str, dict[str, Any]] = {}
    tokens: dict[str, dict[int, Any]] = {}
    for key, tensor in tensors.items():
        tok = _TOKENS.match(key)
        if tok is not None:
            module = tok["module"].removeprefix("base_model.model.")
            tokens[module] = _token_rows(folder, cfg, module, tensor)
            continue
        match = _KEY.match(key)
        if match is None:
            raise FoldError(f"{folder}: tensor {key!r} is not a LoRA A/B weight "
                            "(embedding LoRAs and extra tensors cannot be folded)")
        module = match["module"].removeprefix("base_model.model.")
        parts.setdefault(module, {})[match["part"]] = tensor
    pairs: dict[str, tuple[Any, Any]] = {}
    for module, ab in parts.items():
        if set(ab) != {"A", "B"}:
            raise FoldError(f"{folder}: {module} has lora_{next(iter(ab))} without its partner")
        a, b = ab["A"].float(), ab["B"].float()
        rank = a.shape[0]
        alpha = float(_pattern_value(cfg.get("alpha_pattern"), module, cfg.get("lora_alpha", rank)))
        scale = alpha / (rank ** 0.5) if cfg.get("use_rslora") else alpha / rank
        pairs[module] = (a, b * scale)
    return pairs, {**cfg, "_tokens": tokens}


def fold(adapters: list[Path]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, config fields) of one LoRA equal to the sum of ``adapters`` (applied in order;
    the order does not matter for a sum but is kept for the record)."""
    import torch

    if not adapters:
        raise FoldError("no adapters to fold")
    stacks: dict[str, list[tuple[Any, Any]]] = {}
    token_rows: dict[str, dict[int, Any]] = {}
    fan_in_fan_out = None
    for folder in adapters:
        pairs, cfg = _scaled_pairs(folder)
        for module, rows in cfg["_tokens"].items():
            token_rows.setdefault(module, {}).update(rows)  # a later adapter's row wins
        fifo = bool(cfg.get("fan_in_fan_out", False))
        if fan_in_fan_out is not None and fifo != fan_in_fan_out:
            raise FoldError(f"{folder}: fan_in_fan_out differs from the adapter before it")
        fan_in_fan_out = fifo
        for module, pair in pairs.items():
            stacks.setdefault(module, []).append(pair)
    tensors: dict[str, Any] = {}
    ranks: dict[str, int] = {}
    for module, pairs in sorted(stacks.items()):
        a = torch.cat([p[0] for p in pairs], dim=0).contiguous()
        b = torch.cat([p[1] for p in pairs], dim=1).contiguous()
        tensors[f"base_model.model.{module}.lora_A.weight"] = a
        tensors[f"base_model.model.{module}.lora_B.weight"] = b
        ranks[module] = a.shape[0]
    indices: dict[str, list[int]] = {}
    for module, rows in sorted(token_rows.items()):
        order = sorted(rows)
        tensors[f"base_model.model.{module}.token_adapter.trainable_tokens_delta"] = \
            torch.stack([rows[i].float() for i in order]).contiguous()
        indices[module.rsplit(".", 1)[-1]] = order
    if not ranks:
        raise FoldError("the adapters hold no LoRA weights to fold")
    common = max(set(ranks.values()), key=lambda r: sum(1 for v in ranks.values() if v == r))
    pattern = {re.escape(m): r for m, r in ranks.items() if r != common}
    fields = {
        "r": common, "lora_alpha": common, "rank_pattern": pattern, "alpha_pattern": dict(pattern),
        "target_modules": sorted({m.rsplit(".", 1)[-1] for m in ranks}),
        "fan_in_fan_out": bool(fan_in_fan_out), "use_rslora": False, "use_dora": False,
        "trainable_token_indices": indices or None,
    }
    return tensors, fields


def _config(fields: dict[str, Any], base: Path, template: dict[str, Any]) -> dict[str, Any]:
    # keep what PEFT needs from the run's own config (task type, version), replace the LoRA shape
    keep = {k: template[k] for k in ("task_type", "peft_version", "inference_mode") if k in template}
    return {"peft_type": "LORA", "base_model_name_or_path": str(base), "bias": "none",
            "lora_dropout": 0.0, "modules_to_save": None, "layers_to_transform": None,
            "init_lora_weights": True, **keep, **fields, "inference_mode": True}


def write_plain_adapter(final_dir: str | Path, run_dir: str | Path | None = None,
                        out: str | Path | None = None) -> Path | None:
    """Write ``<run>/peft/`` for the aligned adapter in ``final_dir``; None when there is nothing
    to fold (an adapter trained on the base itself, a full model, a reward model). Raises
    FoldError when the chain cannot be one LoRA."""
    from safetensors.torch import save_file

    from tuiapp.engine.infer.model_refs import is_reward_adapter, start_chain

    final_dir = Path(final_dir)
    if not (final_dir / "adapter_config.json").is_file() or is_reward_adapter(final_dir):
        return None
    run_dir = Path(run_dir) if run_dir else (final_dir.parent if final_dir.name == "final" else None)
    base, merged = start_chain(final_dir, run_dir)
    if base is None or not merged:
        return None  # trained on the base itself (or a full model): the run's adapter is already plain
    chain = [*merged, final_dir.resolve()]
    tensors, fields = fold(chain)
    template = json.loads((final_dir / "adapter_config.json").read_text(encoding="utf-8"))
    target = Path(out) if out else (run_dir or final_dir.parent) / FOLDER
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file(tensors, str(staging / _WEIGHTS), metadata={"format": "pt"})
    config = _config(fields, base, template)
    (staging / "adapter_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    for name in _TOKENIZER_FILES:  # the template the run trained with travels with the adapter
        if (final_dir / name).is_file():
            shutil.copy2(final_dir / name, staging / name)
    (staging / "tuneloop-folded.json").write_text(json.dumps(
        {"base": str(base), "adapters": [str(p) for p in chain],
         "note": "one LoRA equal to the sum of these adapters; load it on the base alone"},
        indent=2), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target
