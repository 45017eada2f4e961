"""Critique and revise: the supervised half of Constitutional AI. No Textual; generation goes
through the engine's Generator (any REF: base, a run, a folder, a .gguf).

For each prompt, as one conversation with the same model:
1. the model answers the request;
2. it is asked to critique that answer against ONE principle of the constitution (the
   principles rotate in a seeded order, so every principle is used about equally and the
   same seed picks the same principle for the same prompt);
3. it is asked to rewrite the answer so it follows that principle.

The revised answers become an SFT dataset version (messages format: the request and the
revised answer), and original-vs-revised a preference dataset version (chosen = revised). A
revision that is empty, or the same text as the original (whitespace aside), teaches nothing:
its row is left out of both and counted under lineage["left_out"]. A pair whose ORIGINAL was
empty is also kept out of the preference version (a preference row needs two answers) but its
revision stays in the SFT version.

Both versions carry the same lineage: the model REF, the constitution's path and sha256, the
prompt set and the sha256 of its file, the seed and sampling settings, and per row the
principle used (lineage["rows"], in row order) with the critique the model wrote.

What to expect from a small model: the mechanism needs one that follows instructions. On the
demo world a 100-step demo SFT LoRA (run:1) kept 11 of 20 rewrites (9 empty), and the kept ones
are corpus-style continuations ("Vidibe lives in which town?\nAnswer: ..."), not fixes; SFT on
them runs (10 steps, loss 3.72 → 1.73) but teaches nothing good. SmolLM2-135M-Instruct (GGUF)
writes fluent critiques yet did not turn a passphrase answer into a refusal in 6 prompts.
Read the rows (or judge the pairs) before training on them.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tuiapp.engine.label.judge import Constitution, load_constitution
from tuiapp.engine.label.tasks import LabelsError, load_prompts
from tuiapp.engine.label.to_dataset import _write_once


class ReviseError(LabelsError):
    """A revise setting or outcome a person can fix (bad principle numbers, no rows kept)."""


CRITIQUE_REQUEST = (
    "Critique request: say in one or two sentences how your answer above breaks or could "
    "better follow this principle: \"{principle}\". Start with \"Critique:\".")
REVISION_REQUEST = (
    "Revision request: rewrite your answer to the original request so that it follows the "
    "principle: \"{principle}\". Reply with the rewritten answer only.")

# What a model tends to put in front of the rewrite; it is no part of the answer itself.
_LABEL_RE = re.compile(r"^\s*(?:\*\*)?(?:revised answer|rewritten answer|revision|rewrite)"
                       r"\s*(?:\*\*)?\s*:\s*(?:\*\*)?\s*", re.I)


def clean_revision(text: str) -> str:
    return _LABEL_RE.sub("", text or "", count=1).strip()


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def principle_order(constitution: Constitution, seed: int,
                    only: Sequence[int] | None = None) -> list[int]:
    """The principle numbers (1-based) in the seeded order prompts rotate through."""
    n = len(constitution.principles)
    numbers = sorted(set(only)) if only else list(range(1, n + 1))
    bad = [k for k in numbers if not 1 <= k <= n]
    if bad:
        raise ReviseError(f"{constitution.path}: no principle {bad[0]} (it has {n}: 1-{n})")
    random.Random(seed).shuffle(numbers)
    return numbers


def conversation(prompt: str, system: str | None, answer: str | None = None,
                 critique: str | None = None, principle: str | None = None) -> list[dict]:
    """The messages for the next step: the request; + the answer and the critique request;
    + the critique and the revision request."""
    msgs = [{"role": "system", "content": system}] if system else []
    msgs.append({"role": "user", "content": prompt})
    if answer is not None:
        msgs += [{"role": "assistant", "content": answer},
                 {"role": "user", "content": CRITIQUE_REQUEST.format(principle=principle)}]
    if critique is not None:
        msgs += [{"role": "assistant", "content": critique},
                 {"role": "user", "content": REVISION_REQUEST.format(principle=principle)}]
    return msgs


def revise_one(generator: Any, model_ref: Any, prompt: str, system: str | None,
               principle: str, params: Any) -> dict[str, str]:
    """{"original", "critique", "revised"} for one request. The original answer is stored as a
    generation (as `labels new` does); the critique and the rewrite are kept in lineage."""
    first = generator.complete(model_ref, prompt, params, system=system)  # as `labels new`
    original = first.text if first is not None else ""
    crit = generator.complete(model_ref, conversation(prompt, system, original,
                                                      principle=principle),
                              params, store_result=False)
    critique = (crit.text if crit is not None else "").strip()
    rev = generator.complete(model_ref, conversation(prompt, system, original, critique,
                                                     principle), params, store_result=False)
    return {"original": original, "critique": critique,
            "revised": clean_revision(rev.text if rev is not None else "")}


def _prompts_source(spec: str | Path, store: Any) -> tuple[str, str | None]:
    """(where the prompts came from, sha256 of that file or folder)."""
    from tuiapp.engine import data
    from tuiapp.engine.infer.evaluate import EvalError, load_prompt_set

    try:
        found = load_prompt_set(spec, store)
    except EvalError as exc:
        raise ReviseError(str(exc)) from None
    path = Path(found.path) if found.path else None
    return (str(path) if path else str(spec),
            data.content_hash(path) if path is not None and path.exists() else None)


def _add_version(store: Any, home: Path, stem: str, name: str, kind: str, rows: list[dict],
                 lineage: dict) -> Any:
    """Content-addressed file home/datasets/<stem>-<hash16>.jsonl, validated, registered."""
    from tuiapp.engine import data

    blob = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                   for r in rows).encode("utf-8")
    digest = hashlib.sha256(blob).hexdigest()
    target = home / "datasets" / f"{stem}-{digest[:16]}.jsonl"
    _write_once(target, blob)
    report = data.validate(target, kind=kind)
    if not report.ok:  # rows are built here, so this is a bug: say what the validator saw
        raise ReviseError(f"the {kind} file {target} does not validate: {report.errors[0]}")
    return store.add_dataset_version(name, str(target), digest, report.format, kind, len(rows),
                                     stats={"rows": len(rows)}, source="revise",
                                     lineage=lineage)


def revise_prompts(store: Any, generator: Any, model: str, prompts: str | Path | list[dict], *,
                   home: str | Path, constitution: str | Path | Constitution | None = None,
                   limit: int | None = None, seed: int = 0,
                   principles: Sequence[int] | None = None, params: Any = None,
                   progress: Callable[[int, int, dict], None] | None = None) -> dict[str, Any]:
    """Answer, critique and revise each prompt (the first `limit`) with `model`; store the SFT
    version of the revisions and the original-vs-revised preference version. `principles`
    restricts the rotation to those numbers. `progress(done, total, row)` after each prompt,
    row = {"index", "principle", "status": "kept" | "empty" | "identical", ...}."""
    from tuiapp.engine.infer.params import GenerationParams

    if limit is not None and limit < 1:
        raise ReviseError("--limit must be at least 1")
    if not isinstance(constitution, Constitution):
        constitution = load_constitution(constitution)
    order = principle_order(constitution, seed, principles)
    model_ref = generator.resolve(model)  # a bad REF fails before any model loads
    if isinstance(prompts, list):
        source, source_sha = "(given)", None
        rows_in = prompts[:limit] if limit is not None else prompts
    else:
        source, source_sha = _prompts_source(prompts, store)
        rows_in = load_prompts(prompts, store, limit)
    if not rows_in:
        raise ReviseError("no prompts to revise")
    if params is None:
        params = GenerationParams(max_new_tokens=64, temperature=0.0, seed=seed)

    sft_rows: list[dict] = []
    pair_rows: list[dict] = []
    kept: list[dict] = []  # per SFT row: its prompt, principle and critique
    pair_meta: list[dict] = []  # the same, per preference row
    left_out: Counter = Counter()
    pairs_left_out: Counter = Counter()
    for i, p in enumerate(rows_in):
        number = order[i % len(order)]
        text = constitution.principles[number - 1]
        out = revise_one(generator, model_ref, p["prompt"], p.get("system"), text, params)
        status = "kept"
        if not out["revised"]:
            status = "empty"
        elif _same(out["revised"], out["original"]):
            status = "identical"
        if status != "kept":
            left_out[status] += 1
        else:
            turns = conversation(p["prompt"], p.get("system"))
            sft_rows.append({"messages": turns + [{"role": "assistant",
                                                   "content": out["revised"]}]})
            meta = {"prompt_index": i, "principle": str(number), "critique": out["critique"]}
            kept.append(meta)
            if out["original"].strip():
                pair_rows.append({
                    "prompt": turns,
                    "chosen": [{"role": "assistant", "content": out["revised"]}],
                    "rejected": [{"role": "assistant", "content": out["original"]}],
                    "chosen_model": f"{model_ref.ref} (revised)",
                    "rejected_model": model_ref.ref,
                })
                pair_meta.append(meta)
            else:
                pairs_left_out["original_empty"] += 1
        if progress:
            progress(i + 1, len(rows_in), {"index": i, "principle": str(number),
                                           "status": status, **out})

    lineage = {
        "source": "revise",
        "model": model_ref.ref,
        "constitution": constitution.path,
        "constitution_sha256": constitution.sha256,
        "prompts": source,
        "prompts_sha256": source_sha,
        "seed": seed,
        "params": params.to_dict(),
        "principle_order": [str(k) for k in order],
        "asked": len(rows_in),
        "left_out": dict(left_out),
    }
    result = {**{k: lineage[k] for k in ("model", "constitution", "constitution_sha256",
                                         "prompts", "prompts_sha256", "asked")},
              "kept": len(sft_rows), "left_out": dict(left_out),
              "by_principle": dict(Counter(m["principle"] for m in kept)),
              "sft_version": None, "pairs_version": None}
    if not sft_rows:
        raise ReviseError(
            f"no revision to keep from {len(rows_in)} prompts ("
            + ", ".join(f"{v} {k}" for k, v in sorted(left_out.items()))
            + "): the model repeated or dropped its answers; try another model or principle")
    home = Path(home)
    name = f"revise/{model_ref.ref}"
    sft = _add_version(store, home, "revise-sft", name, "sft", sft_rows,
                       {**lineage, "rows": kept})
    result["sft_version"] = sft.to_dict()
    if pair_rows:
        pairs = _add_version(store, home, "revise-pairs", f"{name}/pairs", "preference",
                             pair_rows, {**lineage, "rows": pair_meta,
                                         "left_out": {**left_out, **pairs_left_out},
                                         "sft_version_id": sft.id})
        result["pairs_version"] = pairs.to_dict()
    result["pairs_left_out"] = dict(pairs_left_out)
    return result
