"""A model card (markdown) for a run or a model, written from what the store remembers.

Every fact comes from a store row — the run's resolved config, its base model, the dataset
versions and their content hashes along the run's lineage, evaluations, export files with
sha256 and parity figures — so the card can be regenerated at any time and never claims what
was not measured. Where the store knows nothing, the card says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# config keys that describe the method rather than the optimisation
_METHOD_KEYS = ("method", "lora_r", "lora_alpha", "lora_dropout", "target_modules",
                "bnb_quant_type", "bnb_double_quant")
METHOD_WORDS = {"full": "full fine-tuning (every weight trained)",
                "lora": "LoRA (low-rank adapters on a frozen base, merged for export)",
                "qlora": "QLoRA (LoRA on a 4-bit quantised base, merged into the dequantised base)"}
KIND_WORDS = {"sft": "supervised fine-tuning (SFT)", "cpt": "continued pre-training",
              "dpo": "direct preference optimisation (DPO)", "reward": "reward-model training",
              "ppo": "PPO from a reward model", "kto": "KTO", "rl": "reinforcement learning"}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _chain(lineage: dict) -> list[dict]:
    """The run and its parents, oldest last (a DPO run, the SFT run it started from, ...)."""
    out, node = [], lineage
    while node is not None:
        out.append(node)
        node = node.get("parent")
    return out


def _data_section(chain: list[dict]) -> list[str]:
    rows = []
    for node in chain:
        ds = node.get("dataset_version")
        run = node["run"]
        if ds:
            rows.append((f"run {run['id']} ({run['kind']})", ds["name"], ds["id"], ds["kind"],
                         ds["rows"], ds["content_hash"]))
    if not rows:
        return ["No dataset version is recorded for this model.", ""]
    return _table(("used by", "dataset", "version", "kind", "rows", "content hash (sha256)"), rows)


def _evaluations(store: Any, run_ids: list[int]) -> list[str]:
    rows, seen = [], set()
    for run_id in run_ids:
        for ev in store.list_evaluations(run_id=run_id):
            if ev.id in seen or (ev.details or {}).get("kind") == "redteam":
                continue  # red-team rows have their own section (per category, not one cell)
            seen.add(ev.id)
            for name, value in sorted(ev.metrics.items()):
                rows.append((ev.name, ", ".join(ev.model_refs), name, value, ev.created_at[:10]))
    if not rows:
        return ["No evaluation of this model is recorded in the store yet "
                "(`tuneloop eval` or the Compare screen add them).", ""]
    return _table(("evaluation", "models", "metric", "value", "date"), rows)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{value:.0%}"


def _redteam(store: Any, run_ids: list[int]) -> list[str]:
    """Harmful-compliance and over-refusal rates per category, where a red-team suite was run."""
    from tuiapp.engine.infer.redteam import redteam_rows

    rows = redteam_rows(store, run_ids)
    if not rows:
        return []
    lines = ["## Red-team", "", "Harmful compliance: share of prompts the model should refuse that "
             "it answered. Leaked: share of them whose answer holds the secret asked for. "
             "Over-refusal: share of benign prompts it refused (`tuneloop redteam`).", ""]
    return lines + _table(("evaluation", "model", "category", "prompts", "harmful compliance",
                           "leaked", "over-refusal"),
                          [(ev, model, cat, n, _pct(h), _pct(leak), _pct(o))
                           for ev, model, cat, n, h, leak, o in rows])


def _files(exports: list) -> list[str]:
    if not exports:
        return ["No export files recorded.", ""]
    rows = []
    for e in exports:
        p = e.parity or {}
        logits, greedy = p.get("logits", {}), p.get("greedy", {})
        figures = []
        if logits.get("top1_agreement") is not None:
            figures.append(f"top-1 {logits['top1_agreement']:.0%}")
        if logits.get("max_abs_diff") is not None:
            figures.append(f"max |Δlogit| {logits['max_abs_diff']:.3g}")
        if greedy.get("prompts"):
            figures.append(f"greedy {greedy['agreeing']}/{greedy['prompts']}")
        status = e.status if e.status == "ok" else f"{e.status}: {'; '.join(p.get('reasons', []))}"
        rows.append((Path(e.path).name, e.quant or "", _size(e.size_bytes), f"`{e.sha256}`",
                     status, ", ".join(figures)))
    lines = _table(("file", "type", "size", "sha256", "parity", "figures"), rows)
    # which program wrote the float GGUF (llama.cpp's converter or tuneloop's own writer)
    writers = [w for w in dict.fromkeys((e.parity or {}).get("writer") for e in exports) if w]
    if writers:
        lines += [f"GGUF written by {' and '.join(writers)}.", ""]
    return lines


def _hyper_parameters(config: dict) -> list[str]:
    rows = [(k, v) for k, v in sorted(config.items())
            if k not in _METHOD_KEYS and v not in (None, "", [], {})]
    return _table(("setting", "value"), rows) if rows else ["No configuration recorded.", ""]


def _gguf_origin(run: Any, store: Any, base: dict | None) -> str | None:
    """The GGUF file a base was dequantised from (run environment, else the base's model row)."""
    source = (run.environment or {}).get("base_gguf")
    if not source and base and base.get("id") is not None:
        try:
            source = store.get_model(base["id"]).meta or {}
        except Exception:  # noqa: BLE001 - a card without this row is still a card
            source = None
    if not source or not source.get("gguf_sha256"):
        return None
    kind = f", {source['file_type']}" if source.get("file_type") else ""
    return f"`{source.get('gguf_path')}` (sha256 `{source['gguf_sha256']}`{kind})"


def _run_card(run: Any, store: Any, exports: list | None) -> str:
    lineage = store.lineage(run.id)
    chain = _chain(lineage)
    cfg = run.config or {}
    base = lineage.get("base_model")
    method = cfg.get("method", "full")
    title = run.name or f"run {run.id}"
    lines = [f"# {title}", "",
             f"A {KIND_WORDS.get(run.kind, run.kind)} of **{base['name'] if base else 'an unrecorded base'}**, "
             f"made with tuneloop (run {run.id}, {run.status}).", "", "## Model", ""]
    summary = [("base model", f"{base['name']} ({base['path']})" if base else "not recorded"),
               ("training", KIND_WORDS.get(run.kind, run.kind)),
               ("method", METHOD_WORDS.get(method, method))]
    grown = _gguf_origin(run, store, base)
    if grown:
        summary.insert(1, ("grown from GGUF", grown))
    if method in ("lora", "qlora"):
        summary += [("LoRA rank / alpha", f"{cfg.get('lora_r')} / {cfg.get('lora_alpha')}"),
                    ("LoRA dropout", cfg.get("lora_dropout")),
                    ("adapted modules", ", ".join(cfg.get("target_modules") or []) or "?")]
    if method == "qlora":
        summary.append(("4-bit type", cfg.get("bnb_quant_type")))
    summary += [("seed", run.seed), ("run id", run.id), ("started", run.started_at or "?"),
                ("finished", run.finished_at or "?")]
    if len(chain) > 1:
        summary.append(("started from", ", ".join(f"run {n['run']['id']} ({n['run']['kind']})"
                                                   for n in chain[1:])))
    lines += _table(("", ""), summary)
    lines += ["## Training data", ""] + _data_section(chain)
    lines += ["## Hyper-parameters", "", "The run's resolved configuration, as stored:", ""]
    lines += _hyper_parameters(cfg)
    env = run.environment or {}
    if env:
        lines += ["Environment:", ""] + _table(("", ""), sorted((k, v) for k, v in env.items()))
    summary_metrics = store.metric_summary(run.id)
    if summary_metrics:
        lines += ["Training curves (last / min over logged steps):", ""]
        lines += _table(("metric", "last", "min", "steps"),
                        [(k, v["last"], v["min"], v["count"]) for k, v in sorted(summary_metrics.items())])
    lines += ["## Evaluation", ""] + _evaluations(store, [n["run"]["id"] for n in chain])
    lines += _redteam(store, [n["run"]["id"] for n in chain])
    files = exports if exports is not None else store.list_exports(run_id=run.id)
    lines += ["## Files", ""] + _files(files)
    datasets = [n["dataset_version"]["name"] for n in chain if n.get("dataset_version")]
    lines += _use_and_limits(method, datasets, files)
    return "\n".join(lines)


def _model_card(model: Any, store: Any, exports: list | None) -> str:
    base = None
    if getattr(model, "base_model_id", None) is not None:
        base = store.get_model(model.base_model_id)
    if isinstance(model, (str, Path)):
        name, path = Path(model).name, str(model)
    else:
        name, path = model.name, model.path
    lines = [f"# {name}", "", f"An export of the model folder `{path}` made with tuneloop. No "
             "training run is recorded for it, so its training data and settings are unknown "
             "to this card.", "", "## Model", ""]
    lines += _table(("", ""), [("model", name), ("folder", path),
                               ("base model", f"{base.name} ({base.path})" if base else "not recorded")])
    files = exports
    if files is None:
        model_id = getattr(model, "id", None)
        files = [e for e in store.list_exports() if model_id is not None and e.model_id == model_id]
    lines += ["## Evaluation", "", "Not recorded for a model without a run.", ""]
    lines += ["## Files", ""] + _files(files)
    lines += _use_and_limits(None, [], files)
    return "\n".join(lines)


def _use_and_limits(method: str | None, datasets: list[str], files: list) -> list[str]:
    data = ", ".join(dict.fromkeys(datasets)) or "data this card cannot name"
    lines = ["## Intended use", "",
             f"Local experiments and evaluation of the behaviour taught by {data}. Check the "
             "evaluation section before relying on it for anything else; a use the training "
             "data did not cover is untested.", "",
             "## Limitations", "",
             "- It keeps the knowledge, biases and failure modes of its base model; fine-tuning "
             "changes behaviour on the training distribution, not what the base never learnt.",
             f"- It saw only {data}; outside that distribution expect base-model behaviour or worse.",
             "- No safety tuning is implied unless a preference run (DPO/PPO) with such data is "
             "listed above."]
    if method in ("lora", "qlora"):
        lines.append("- Trained as a low-rank adapter: the merged weights equal base + adapter, "
                     "so capacity for new behaviour was limited by the rank.")
    if any((e.quant or "") not in ("f32", "f16", "bf16") for e in files):
        lines.append("- Quantized files trade accuracy for size; their parity figures above show "
                     "how far their answers follow the full-precision model on fixed prompts.")
    lines += ["", "## How to run", "", "```sh", "llama-cli -m <file>.gguf -cnv   # llama.cpp",
              "ollama create my-model -f Modelfile   # when a Modelfile was written", "```", ""]
    return lines


def render(run_or_model: Any, store: Any, exports: list | None = None) -> str:
    """Markdown model card for a Run row, a run id, a ModelRow or a model folder path.

    ``exports`` lists the files to describe (default: every export the store has for it).
    """
    if isinstance(run_or_model, int):
        run_or_model = store.get_run(run_or_model)
    if hasattr(run_or_model, "kind") and hasattr(run_or_model, "config"):
        return _run_card(run_or_model, store, exports)
    return _model_card(run_or_model, store, exports)
