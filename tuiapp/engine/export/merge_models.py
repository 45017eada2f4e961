"""``tuneloop merge``: combine LoRA adapters, or whole fine-tuned models against their base.

Two ways, chosen from the inputs and the method:

* **adapter merge** (every input a plain LoRA adapter on one base, a method PEFT has): PEFT's
  ``add_weighted_adapter`` builds a new adapter — linear, cat, svd, ties, dare_linear, dare_ties,
  magnitude_prune. The result is an adapter folder on the same base. Note PEFT's ``linear``
  mixes the A and B matrices (each scaled by sqrt(w * scaling)), so its delta is *not* the
  weighted sum of the inputs' deltas; ``cat`` stacks the ranks and is that sum exactly.
* **model merge** (full fine-tunes, aligned adapters, a method only whole models have, or
  ``full=True``): every input is loaded as a whole model (an adapter merged into its base first)
  and merged tensor by tensor against the base — task_arithmetic, ties, dare_linear, dare_ties,
  slerp (merge_math.py; why not mergekit is said there). The result is an HF model folder.

Either way the result is a model row in the store (kind ``adapter`` or ``hf``, base_model_id the
base's row) whose ``meta["merge"]`` records the method, density, seed and every input with its
REF, run/model id, path and weight — so ``model:<id>`` works wherever a REF does.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuiapp.engine.infer.model_refs import ModelRef, RefError, resolve_ref

FULL_METHODS = ("task_arithmetic", "ties", "dare_linear", "dare_ties", "slerp")   # merge_math.py
LORA_METHODS = ("linear", "cat", "svd", "ties", "dare_linear", "dare_ties", "magnitude_prune")
ALIASES = {"add": "task_arithmetic", "task-arithmetic": "task_arithmetic", "arithmetic": "task_arithmetic",
           "dare": "dare_ties", "dare-ties": "dare_ties", "dare-linear": "dare_linear",
           "magnitude-prune": "magnitude_prune"}
# PEFT combines these per LoRA matrix, so every input must have the same rank and modules
_EQUAL_RANK = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")
_NEEDS_DENSITY = ("ties", "dare_linear", "dare_ties", "magnitude_prune")
DEFAULT_DENSITY = 0.5


class MergeError(ValueError):
    """A merge that cannot be done, said so a person can fix it."""


@dataclass
class MergePlan:
    method: str
    mode: str                        # "adapter" (PEFT) | "model" (tensor by tensor)
    inputs: list[ModelRef]
    weights: list[float]
    density: float | None
    base_dir: Path
    base_ref: ModelRef | None = None
    notes: list[str] = field(default_factory=list)


def parse_refs(text: str) -> list[str]:
    refs = [r.strip() for r in str(text).split(",") if r.strip()]
    if not refs:
        raise MergeError("give the models to merge as REF,REF (e.g. run:3,run:5)")
    return refs


def parse_weights(text: str | None, n: int, method: str) -> list[float]:
    if not text:
        return [0.5, 0.5] if method == "slerp" else [1.0] * n
    try:
        weights = [float(w) for w in str(text).split(",") if w.strip()]
    except ValueError:
        raise MergeError(f"--weights {text!r}: give numbers separated by commas, e.g. 0.5,0.5") from None
    if len(weights) != n:
        raise MergeError(f"--weights has {len(weights)} value(s) for {n} input(s); give one weight per input")
    return weights


def _adapter_cfg(ref: ModelRef) -> dict:
    return json.loads((ref.adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))


def _targets(cfg: dict) -> Any:
    t = cfg.get("target_modules")
    return sorted(t) if isinstance(t, list) else t


def _canonical(method: str) -> str:
    m = (method or "").strip().lower()
    m = ALIASES.get(m, m)
    if m not in LORA_METHODS and m not in FULL_METHODS:
        raise MergeError(f"unknown merge method {method!r}; adapters: {', '.join(LORA_METHODS)}; "
                         f"whole models: {', '.join(FULL_METHODS)} (add = task_arithmetic, a negative "
                         "weight subtracts a task vector)")
    return m


def plan_merge(refs: list[str], method: str, weights: str | list[float] | None = None,
               density: float | None = None, store: Any = None, base: str | None = None,
               full: bool = False, home: str | Path | None = None) -> MergePlan:
    """Resolve the inputs and check the merge can be done; MergeError says why not."""
    m = _canonical(method)
    try:
        inputs = [resolve_ref(r, store, home=home) for r in refs]
    except RefError as exc:
        raise MergeError(str(exc)) from None
    for ref in inputs:
        if ref.kind == "gguf":
            raise MergeError(f"{ref.ref}: a GGUF file is llama.cpp's; merge its weights as "
                             f"hf:{ref.gguf_path} (dequantised), or the run or folder it came from")
    if m == "slerp" and len(inputs) != 2:
        raise MergeError(f"slerp interpolates between exactly two models; {len(inputs)} were given")
    w = weights if isinstance(weights, list) else parse_weights(weights, len(inputs), m)
    if len(w) != len(inputs):
        raise MergeError(f"{len(w)} weight(s) for {len(inputs)} input(s); give one weight per input")
    if density is not None and not 0.0 < float(density) <= 1.0:
        raise MergeError(f"--density {density}: give the share of each delta to keep, in (0, 1]")
    if m in _NEEDS_DENSITY and density is None:
        density = DEFAULT_DENSITY
    if m == "slerp" and (len(inputs) != 2 or w[0] < 0 or w[1] < 0 or w[0] + w[1] <= 0):
        raise MergeError("slerp interpolates between exactly two models: give two REFs and two "
                         "non-negative weights (t = w2 / (w1 + w2))")
    if len(inputs) < 2 and m not in ("task_arithmetic", "linear"):
        raise MergeError(f"{m} combines two or more inputs; to scale one task vector use "
                         "--method task_arithmetic with one weight")
    plain_adapters = all(r.kind == "adapter" and not r.merge_dirs for r in inputs)
    if m in LORA_METHODS and plain_adapters and not (full and m in FULL_METHODS):
        return _plan_adapters(m, inputs, w, density)
    if m not in FULL_METHODS:
        why = next((f"{r.ref} is a whole model" if r.kind == "hf" else
                    f"{r.ref} was trained on a start model with an adapter merged in, not on the base"
                    for r in inputs if not (r.kind == "adapter" and not r.merge_dirs)), "")
        raise MergeError(f"{m} merges LoRA adapters of one base, but {why}; use a whole-model method "
                         f"({', '.join(FULL_METHODS)})")
    return _plan_models(m, inputs, w, density, store, base, home)


def _plan_adapters(m: str, inputs: list[ModelRef], w: list[float], density: float | None) -> MergePlan:
    bases = {r.base_dir for r in inputs}
    if len(bases) > 1:
        on = "; ".join(f"{r.ref} on {r.base_dir}" for r in inputs)
        raise MergeError(f"the adapters were trained on different bases ({on}); LoRA adapters merge "
                         "only on the base they were trained on")
    cfgs = [_adapter_cfg(r) for r in inputs]
    kinds = {c.get("peft_type") for c in cfgs}
    if kinds != {"LORA"}:
        raise MergeError(f"adapter merging needs LoRA adapters; these are {', '.join(map(str, kinds))}")
    if m in _EQUAL_RANK:
        ranks = {r.ref: c.get("r") for r, c in zip(inputs, cfgs, strict=True)}
        if len(set(ranks.values())) > 1 or any(c.get("rank_pattern") for c in cfgs):
            raise MergeError(f"{m} combines the LoRA matrices element by element, so every adapter "
                             f"needs the same rank; these have {ranks}. Use cat or svd, which "
                             "handle different ranks")
        targets = {r.ref: _targets(c) for r, c in zip(inputs, cfgs, strict=True)}
        if len({json.dumps(t) for t in targets.values()}) > 1:
            raise MergeError(f"{m} needs every adapter on the same modules; these target {targets}. "
                             "Use cat or svd, or a whole-model method (--full)")
    return MergePlan(m, "adapter", inputs, w, density, next(iter(bases)))


def _plan_models(m: str, inputs: list[ModelRef], w: list[float], density: float | None,
                 store: Any, base: str | None, home: str | Path | None) -> MergePlan:
    base_ref = None
    if base:
        try:
            base_ref = resolve_ref(base, store, home=home)
        except RefError as exc:
            raise MergeError(f"--base: {exc}") from None
        if base_ref.kind != "hf":
            raise MergeError(f"--base {base}: the base must be a whole model folder, not {base_ref.kind}")
        base_dir = base_ref.base_dir
    else:
        # an adapter knows its base; a whole model may be a store row that records one
        found = {r.base_dir for r in inputs if r.kind == "adapter"}
        for r in inputs:
            if r.kind == "hf" and r.model_id is not None and store is not None:
                row = store.get_model(r.model_id)
                if row.base_model_id is not None:
                    found.add(Path(store.get_model(row.base_model_id).path).resolve())
        if len(found) > 1:
            raise MergeError(f"the inputs come from different bases ({', '.join(map(str, sorted(found)))}); "
                             "task vectors are only comparable against one base")
        if not found:
            if m != "slerp":
                raise MergeError(f"{m} subtracts the base from each model; give --base REF (the model "
                                 "they were fine-tuned from)")
            found = {inputs[0].base_dir}
        base_dir = next(iter(found))
    for r in inputs:
        if r.kind == "adapter" and r.base_dir != base_dir:
            raise MergeError(f"{r.ref} is an adapter on {r.base_dir}, not on the base {base_dir}")
    _check_shapes([base_dir, *[r.base_dir for r in inputs]])
    return MergePlan(m, "model", inputs, w, density, base_dir, base_ref)


def _check_shapes(folders: list[Path]) -> None:
    keys = ("architectures", "hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size")
    seen: dict[str, Path] = {}
    for folder in folders:
        cfg = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
        shape = json.dumps({k: cfg.get(k) for k in keys})
        seen.setdefault(shape, folder)
    if len(seen) > 1:
        raise MergeError("the models have different architectures or shapes ("
                         + "; ".join(f"{f}: {s}" for s, f in seen.items()) + "); only models of one "
                         "shape can be merged tensor by tensor")


# ---- running ------------------------------------------------------------------------------------

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "merge"


def _out_dir(models_dir: Path, name: str) -> Path:
    out = models_dir / _slug(name)
    n = 2
    while out.exists():
        out = models_dir / f"{_slug(name)}-{n}"
        n += 1
    return out


def _copy_tokenizer(src: Path, base_dir: Path, out: Path) -> None:
    from transformers import AutoTokenizer

    from tuiapp.engine.export.steps import _carry_vocab_files

    source = src if (src / "tokenizer.json").exists() or (src / "tokenizer_config.json").exists() else base_dir
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(out))
    jinja = source / "chat_template.jinja"
    if jinja.exists() and not (out / "chat_template.jinja").exists():
        shutil.copy(jinja, out / "chat_template.jinja")
    _carry_vocab_files(out, source, base_dir)


def _merge_adapters(plan: MergePlan, out: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(plan.base_dir), dtype=torch.float32)
    names = [f"in{i}" for i in range(len(plan.inputs))]
    peft_model = PeftModel.from_pretrained(model, str(plan.inputs[0].adapter_dir), adapter_name=names[0])
    for name, ref in zip(names[1:], plan.inputs[1:], strict=True):
        peft_model.load_adapter(str(ref.adapter_dir), adapter_name=name)
    try:
        peft_model.add_weighted_adapter(names, plan.weights, "merged", combination_type=plan.method,
                                        density=plan.density)
    except (ValueError, TypeError) as exc:
        raise MergeError(f"PEFT refused the {plan.method} merge: {exc}") from None
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        peft_model.save_pretrained(tmp, selected_adapters=["merged"])
        # PEFT writes an adapter not named "default" into a sub-folder of that name
        saved = Path(tmp) / "merged" if (Path(tmp) / "merged").is_dir() else Path(tmp)
        shutil.move(str(saved), str(out))
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = str(plan.base_dir)
    cfg_path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    _copy_tokenizer(plan.inputs[0].adapter_dir, plan.base_dir, out)


def load_full_state(ref: ModelRef) -> dict:
    """A REF as one whole model's float32 state dict (an adapter merged into its base)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(ref.base_dir), dtype=torch.float32)
    for folder in (*ref.merge_dirs, *((ref.adapter_dir,) if ref.adapter_dir else ())):
        model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _merge_models(plan: MergePlan, out: Path, seed: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from tuiapp.engine.export.merge_math import merge_tensor
    from tuiapp.engine.export.steps import _stored_dtype

    torch_base = AutoModelForCausalLM.from_pretrained(str(plan.base_dir), dtype=torch.float32)
    base_state = torch_base.state_dict()
    states = [load_full_state(r) for r in plan.inputs]
    gen = torch.Generator().manual_seed(seed)
    merged = {}
    for key, tensor in base_state.items():
        if not tensor.is_floating_point():
            continue
        for ref, state in zip(plan.inputs, states, strict=True):
            if key not in state or state[key].shape != tensor.shape:
                raise MergeError(f"{ref.ref}: tensor {key} is missing or shaped differently from the base")
        merged[key] = merge_tensor(plan.method, tensor, [s[key] for s in states], plan.weights,
                                   plan.density if plan.density is not None else 1.0, gen)
    torch_base.load_state_dict(merged, strict=False)
    dtype = _stored_dtype(plan.base_dir)
    torch_base.to(getattr(torch, dtype)).save_pretrained(str(out))
    first = plan.inputs[0]
    _copy_tokenizer(first.adapter_dir or first.base_dir, plan.base_dir, out)


def run_merge(plan: MergePlan, store: Any, models_dir: str | Path, name: str | None = None,
              seed: int = 0) -> dict:
    """Do the merge, write the result under ``models_dir`` and register it as a model row."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    label = name or f"merge-{plan.method}-" + "+".join(_slug(r.ref) for r in plan.inputs)
    out = _out_dir(models_dir, label)
    if plan.mode == "adapter":
        _merge_adapters(plan, out)
    else:
        out.mkdir(parents=True)
        try:
            _merge_models(plan, out, seed)
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)
            raise
    lineage = {
        "method": plan.method, "mode": plan.mode, "density": plan.density, "seed": seed,
        "library": "peft add_weighted_adapter" if plan.mode == "adapter" else "tuneloop merge_math",
        "base": str(plan.base_dir),
        "inputs": [{"ref": r.ref, "label": r.label, "weight": w, "run_id": r.run_id,
                    "model_id": r.model_id, "kind": r.kind,
                    "path": str(r.adapter_dir or r.base_dir)} for r, w in zip(plan.inputs, plan.weights, strict=True)],
    }
    (out / "tuneloop-merge.json").write_text(json.dumps(lineage, indent=2), encoding="utf-8")
    row_id = None
    if store is not None:
        base_row = store.find_model(str(plan.base_dir))
        if base_row is None:
            base_row = store.add_model(plan.base_dir.name, "hf", str(plan.base_dir))
        kind = "adapter" if plan.mode == "adapter" else "hf"
        row = store.add_model(label, kind, str(out), base_model_id=base_row.id, meta={"merge": lineage})
        row_id = row.id
    return {"model_id": row_id, "ref": f"model:{row_id}" if row_id else str(out), "path": str(out),
            "kind": "adapter" if plan.mode == "adapter" else "hf", **lineage}
