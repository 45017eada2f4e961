"""Live labels → a new immutable preference dataset version: the rows (TRL conversational
preference format, rewrites as the chosen answer), their lineage (tasks, label events, models,
the judge and constitution where labels came from one) and the content-addressed file."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from tuiapp.engine.label.tasks import EXPORT_CHOICES, LabelsError, _labelled, is_repeat


def _turns(system: str | None, prompt: str) -> list[dict]:
    turns = [{"role": "system", "content": system}] if system else []
    return turns + [{"role": "user", "content": prompt}]


def export_rows(store: Any, task_set: str | None = None,
                source: str = "human") -> tuple[list[dict], dict]:
    """The preference rows (TRL conversational format) and their lineage."""
    tasks, live = _labelled(store, task_set, source)
    rows, events, models, sets = [], [], set(), set()
    left_out: Counter = Counter()
    from_source: Counter = Counter()
    for task_id in sorted(live):
        task, event = tasks[task_id], live[task_id]
        if is_repeat(task) or len(task.candidates) < 2:
            continue
        a, b = task.candidates[0], task.candidates[1]
        if event.edited:
            base = b if event.choice == "b" else a  # the answer the edit was written from
            chosen, rejected = {"model_ref": "edited", "output": event.edited}, base
        elif event.choice in EXPORT_CHOICES:
            chosen, rejected = (b, a) if event.choice == "b" else (a, b)
        else:
            left_out[event.choice] += 1
            continue
        if chosen["output"].strip() == rejected["output"].strip():
            left_out["identical"] += 1  # two models gave the same answer: nothing to prefer
            continue
        if not chosen["output"].strip() or not rejected["output"].strip():
            left_out["empty"] += 1  # an empty reply (a model that stopped at once) is no row
            continue  # a preference file may hold: the export would fail to validate
        rows.append({
            "prompt": _turns(task.system, task.prompt),
            "chosen": [{"role": "assistant", "content": chosen["output"]}],
            "rejected": [{"role": "assistant", "content": rejected["output"]}],
            "both_bad": event.choice == "both_bad" and not event.edited,
            "edited": bool(event.edited),
            "chosen_model": chosen["model_ref"],
            "rejected_model": rejected["model_ref"],
            "task_id": task.id,
            "label_event_id": event.id,
        })
        if source != "human":  # a person's exports keep the bytes they always had
            rows[-1]["label_source"] = event.source
        from_source[event.source] += 1
        events.append(event.id)
        models.update(c["model_ref"] for c in (a, b))
        sets.add(task.task_set)
    lineage = {
        "source": "labels",
        "task_set": task_set,
        "task_sets": sorted(s for s in sets if s is not None),
        "task_ids": [r["task_id"] for r in rows],
        "label_event_ids": events,
        "models": sorted(models),
        "left_out": dict(left_out),
        "label_source": source,
        "rows_by_source": dict(from_source),
    }
    judged = [live[r["task_id"]] for r in rows if live[r["task_id"]].source == "judge"]
    if judged:
        lineage["judges"] = sorted({e.detail.get("judge") for e in judged if e.detail.get("judge")})
        lineage["constitutions"] = sorted({e.detail.get("constitution_sha256") for e in judged
                                           if e.detail.get("constitution_sha256")})
    return rows, lineage


def export(store: Any, task_set: str | None = None, out: str | Path | None = None, *,
           home: str | Path | None = None, name: str | None = None,
           source: str = "human") -> Any:
    """Live labels of `source` (EXPORT_SOURCES) → a new immutable preference dataset version
    (`labels/<task set>`, `labels/<task set>/judge` or `/both`), written to
    home/datasets/labels-<hash16>.jsonl (and copied to `out` if given). The same labels give
    the same bytes, so exporting again returns the existing version."""
    from tuiapp.engine import data

    rows, lineage = export_rows(store, task_set, source)
    if not rows:
        where = f"task set {task_set!r}" if task_set else "the store"
        whose = {"human": "", "judge": " from the judge", "both": ""}[source]
        raise LabelsError(f"{where} has no labels{whose} to export yet (ties and skips are left "
                          "out); label some pairs first")
    payload = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    blob = payload.encode("utf-8")
    digest = hashlib.sha256(blob).hexdigest()
    if home is None and out is None:
        raise LabelsError("export needs a workspace home or an --out file to write to")
    target = Path(home) / "datasets" / f"labels-{digest[:16]}.jsonl" if home else Path(out)
    _write_once(target, blob)
    if out is not None and Path(out) != target:
        _write_once(Path(out), blob, replace=True)
    report = data.validate(target, kind="preference")
    if not report.ok:  # a bug here, not the user's: say what the validator saw
        raise LabelsError(f"the exported file does not validate: {report.errors[0]}")
    if data.content_hash(target) != digest:
        raise LabelsError(f"{target} changed while it was written; export again")
    stats_ = {"rows": len(rows), "both_bad": sum(r["both_bad"] for r in rows),
              "edited": sum(r["edited"] for r in rows)}
    return store.add_dataset_version(
        name or f"labels/{task_set or 'all'}" + ("" if source == "human" else f"/{source}"),
        str(target), digest, report.format or
        "preference_messages", "preference", len(rows), stats=stats_, source="labels",
        lineage=lineage)


def _write_once(path: Path, blob: bytes, replace: bool = False) -> None:
    """Content-addressed files are never rewritten; the write is atomic (tmp + rename)."""
    if path.exists() and not replace and path.read_bytes() == blob:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(blob)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
