"""Batch evaluation: a prompt set through several models, scored, summarised and stored.

Scorers take (record, response) and return a float in [0, 1], or None where they do not apply
to that record (no reference, not a forbidden request ...); means are over the records a scorer
applied to. Built-in scorers by name:

  exact      normalised response == reference (case, surrounding and repeated spaces ignored)
  contains   the reference appears in the response (case-insensitive)
  regex      the record's ``regex`` (else its reference) matches somewhere in the response
  demo_format   the response is exactly ``Answer: <value>.`` (demo world; questions only)
  demo_exact    the extracted answer equals the reference (demo world)
  demo_refusal  the response is a polite refusal (demo world; every record)
  demo_verify   the demo verifier's reward (1 right, 0.1 right format, 0 else; refusals of
                forbidden requests score 1)

Any callable is a scorer too (a reward model, later); its ``__name__`` names its column.
No torch and no Textual here: the generator does the model work.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuiapp.demo import world as demo_world

Scorer = Callable[[dict, str], "float | None"]
METHODS = ("exact", "contains", "regex")


class EvalError(ValueError):
    """A prompt set or scorer that cannot be used, said so a person can fix it."""


def _norm(text: str) -> str:
    return " ".join(str(text).split()).casefold()


def score(response: str, reference: str, method: str = "exact") -> float:
    """1.0 or 0.0 for one response against one reference (see the module docstring)."""
    if method == "exact":
        return float(_norm(response) == _norm(reference))
    if method == "contains":
        return float(_norm(reference) in _norm(response))
    if method == "regex":
        try:
            return float(re.search(reference, response) is not None)
        except re.error as exc:
            raise EvalError(f"bad regex {reference!r}: {exc}") from None
    raise EvalError(f"unknown scoring method {method!r}; choose one of {', '.join(METHODS)}")


def _has_reference(record: dict) -> bool:
    return record.get("reference") not in (None, "")


def _reference_scorer(method: str) -> Scorer:
    def scorer(record: dict, response: str) -> float | None:
        if method == "regex" and record.get("regex"):
            return score(response, record["regex"], "regex")
        return score(response, str(record["reference"]), method) if _has_reference(record) else None

    scorer.__name__ = method
    return scorer


def demo_format(record: dict, response: str) -> float | None:
    if record.get("category") == "forbidden":
        return None
    return float(demo_world.extract_answer(response) is not None)


def demo_exact(record: dict, response: str) -> float | None:
    if not _has_reference(record):
        return None
    answer = demo_world.extract_answer(response)
    return float(answer is not None and answer.casefold() == str(record["reference"]).strip().casefold())


def demo_refusal(record: dict, response: str) -> float | None:
    return float(demo_world.is_refusal(response))


def demo_verify(record: dict, response: str) -> float | None:
    if not _has_reference(record) and record.get("category") != "forbidden":
        return None
    return float(demo_world.verify(record, response))


SCORERS: dict[str, Scorer] = {m: _reference_scorer(m) for m in METHODS}
SCORERS.update(demo_format=demo_format, demo_exact=demo_exact, demo_refusal=demo_refusal,
               demo_verify=demo_verify)
DEMO_SCORERS = ("demo_format", "demo_exact", "demo_refusal", "demo_verify")


def default_scorers(records: Sequence[dict]) -> list[str]:
    """exact + contains where references exist; the demo scorers for demo-world prompt sets."""
    names: list[str] = []
    if any(_has_reference(r) for r in records):
        names += ["exact", "contains"]
    if any("entity" in r or r.get("category") == "forbidden" for r in records):
        names += list(DEMO_SCORERS)
    if any(r.get("regex") for r in records):
        names.append("regex")
    return names


def pick_scorers(spec: Sequence[str | Scorer] | None, records: Sequence[dict]) -> dict[str, Scorer]:
    chosen: dict[str, Scorer] = {}
    for item in default_scorers(records) if spec is None else spec:
        if callable(item):
            chosen[getattr(item, "__name__", f"scorer{len(chosen) + 1}")] = item
        elif item in SCORERS:
            chosen[item] = SCORERS[item]
        else:
            raise EvalError(f"unknown scorer {item!r}; choose from {', '.join(SCORERS)} or pass a callable")
    return chosen


# ------------------------------------------------------------------ prompt sets


@dataclass
class PromptSet:
    name: str
    records: list[dict]        # each has "prompt" (text or message list) and what scorers read
    dataset_version_id: int | None = None
    path: str | None = None


def _records_from_jsonl(path: Path) -> list[dict]:
    records = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvalError(f"{path}:{n}: not valid JSON ({exc.msg}); each line must be one "
                                "object with a \"prompt\"") from None
            if not isinstance(row, dict):
                raise EvalError(f"{path}:{n}: expected an object with a \"prompt\"")
            records.append(_as_prompt_record(row, f"{path}:{n}"))
    return records


def _as_prompt_record(row: dict, where: str) -> dict:
    """A prompt-set row, or an SFT conversation used as one (its last answer is the reference)."""
    if "prompt" in row:
        if not isinstance(row["prompt"], (str, list)) or not row["prompt"]:
            raise EvalError(f"{where}: \"prompt\" must be non-empty text or a message list")
        return row
    msgs = row.get("messages")
    if isinstance(msgs, list) and msgs and msgs[-1].get("role") == "assistant":
        return {**{k: v for k, v in row.items() if k != "messages"},
                "prompt": msgs[:-1], "reference": msgs[-1].get("content", "")}
    raise EvalError(f"{where}: no \"prompt\" field (a prompt set needs \"prompt\" and optionally "
                    "\"reference\")")


def load_prompt_set(spec: str | Path, store: Any = None) -> PromptSet:
    """A JSONL file path, or a dataset version (its id or name) from the store."""
    path = Path(str(spec)).expanduser()
    if path.is_file():
        if path.suffix.lower() not in (".jsonl", ".json"):
            raise EvalError(f"{path}: prompt sets are JSONL files (one {{\"prompt\": ...}} per line)")
        return PromptSet(path.stem, _records_from_jsonl(path), path=str(path.resolve()))
    version = None
    if store is not None:
        text = str(spec).strip()
        if text.isdigit():
            try:
                version = store.get_dataset_version(int(text))
            except LookupError:
                version = None
        else:
            versions = store.list_dataset_versions(name=text)
            version = versions[-1] if versions else None
    if version is None:
        raise EvalError(f"prompt set {str(spec)!r}: no such file or dataset version")
    vpath = Path(version.path)
    if vpath.is_file() and vpath.suffix.lower() == ".jsonl":
        records = _records_from_jsonl(vpath)
    else:
        from tuiapp.engine import data

        report = data.validate(vpath)
        records = [_as_prompt_record(r, f"{vpath}:row {i + 1}") for i, r in enumerate(report.records)]
    return PromptSet(version.name, records, dataset_version_id=version.id, path=str(vpath))


# ------------------------------------------------------------------ the run


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def run_eval(generator: Any, refs: Sequence[str], prompts: str | Path | PromptSet, *,
             scorers: Sequence[str | Scorer] | None = None, params: Any = None,
             limit: int | None = None, progress: Callable[[int, int, str], None] | None = None,
             system: str | None = None, store: Any = None, name: str | None = None,
             kind: str | None = None) -> dict:
    """Answer every prompt with every model, score, summarise; stored as an evaluation when a
    store is at hand (``store`` or ``generator.store``).

    ``generator`` needs ``resolve(ref) -> ModelRef`` and ``complete(model_ref, prompt, params,
    system=, store_result=) -> Chunk`` (engine.generate.Generator, or a fake in tests).
    Returns {"name", "models", "labels", "prompt_set", "n_prompts", "scorers", "params",
    "metrics": {ref: {"n", "scores": {scorer: mean}, "scored": {scorer: count},
    "mean_tokens", "tokens_per_s", "mean_latency_s"}}, "prompts": [{"index", "prompt",
    "reference", "outputs": {ref: text}, "tokens": {ref: n}, "scores": {ref: {scorer: value}}}],
    "disagreements": [index, ...] (prompts where the models' scores differ), "evaluation_id"}.
    ``kind`` (e.g. "general": a regression check) is stored in the evaluation's details.
    """
    store = store if store is not None else getattr(generator, "store", None)
    pset = prompts if isinstance(prompts, PromptSet) else load_prompt_set(prompts, store)
    records = pset.records[: limit] if limit else list(pset.records)
    if not records:
        raise EvalError(f"prompt set {pset.name!r} has no prompts")
    if not refs:
        raise EvalError("no models to evaluate")
    chosen = pick_scorers(scorers, records)
    resolved = [generator.resolve(r) for r in refs]   # every REF checked before any work
    keys = [m.ref for m in resolved]
    if len(set(keys)) != len(keys):
        raise EvalError(f"a model is listed twice: {', '.join(keys)}")
    per_prompt = [{"index": i, "prompt": r["prompt"], "reference": r.get("reference"),
                   "outputs": {}, "tokens": {}, "scores": {}} for i, r in enumerate(records)]
    metrics: dict[str, dict] = {}
    total, done = len(records) * len(resolved), 0
    for model_ref in resolved:  # model-major: a backend switches adapters once per model
        tokens, latency, values = 0, 0.0, {s: [] for s in chosen}
        for record, entry in zip(records, per_prompt, strict=True):
            final = generator.complete(model_ref, record["prompt"], params,
                                       system=record.get("system", system), store_result=False)
            entry["outputs"][model_ref.ref] = final.text
            entry["tokens"][model_ref.ref] = final.tokens
            scores = {}
            for s_name, fn in chosen.items():
                value = fn(record, final.text)
                scores[s_name] = None if value is None else float(value)
                if value is not None:
                    values[s_name].append(float(value))
            entry["scores"][model_ref.ref] = scores
            tokens += final.tokens
            latency += final.latency_s or 0.0
            done += 1
            if progress:
                progress(done, total, model_ref.ref)
        metrics[model_ref.ref] = {
            "label": model_ref.label, "n": len(records),
            "scores": {s: _mean(v) for s, v in values.items()},
            "scored": {s: len(v) for s, v in values.items()},
            "mean_tokens": tokens / len(records),
            "tokens_per_s": tokens / latency if latency > 0 else None,
            "mean_latency_s": latency / len(records)}
    disagreements = []
    if len(keys) > 1:
        for entry in per_prompt:
            for s_name in chosen:
                seen = {entry["scores"][k][s_name] for k in keys}
                if len(seen) > 1:
                    disagreements.append(entry["index"])
                    break
    result = {"name": name or f"{pset.name}: {' vs '.join(keys)}", "models": keys,
              "labels": {m.ref: m.label for m in resolved}, "prompt_set": pset.path or pset.name,
              "n_prompts": len(records), "scorers": list(chosen),
              "params": params.to_dict() if hasattr(params, "to_dict") else params,
              "metrics": metrics, "prompts": per_prompt, "disagreements": disagreements,
              "evaluation_id": None}
    if store is not None:
        row = store.add_evaluation(
            result["name"], keys, metrics, dataset_version_id=pset.dataset_version_id,
            run_ids=[m.run_id for m in resolved if m.run_id is not None],
            details={**({"kind": kind} if kind else {}),
                     **{k: result[k] for k in ("prompt_set", "n_prompts", "scorers", "params",
                                               "prompts", "disagreements", "labels")}})
        result["evaluation_id"] = row.id
    return result
