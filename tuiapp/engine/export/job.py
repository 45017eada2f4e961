"""The whole export of a run or a model folder: resolve → merge → GGUF → quantize → parity → store.

``plan_export`` says what will be made, how big (``predict_size``) and by which writer
(``writers.choose_writer``: llama.cpp's converter where set up, else tuneloop's own), refusing an
architecture that writer cannot convert before anything is written; ``run_export`` makes it.
Every file is checked against the Hugging Face model it came from (``parity.check``) and gets
one export row with its sha256 (the parity record also names the writer). A file that fails the
check is kept for inspection but renamed ``<name>.failed.gguf`` (so nothing picks it up as a good
model by its name), stored with status ``failed`` and the reasons, and the export as a whole
reports ``ok: False``. Files that pass are also registered as ``gguf`` models so the compare
and generate screens can load them.

No Textual here; torch, transformers, peft and llama.cpp are imported by the steps that use them.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tuiapp.engine.export.gguf import GGUFExportError
from tuiapp.engine.export.steps import (
    QUANT_TYPES,
    ExportError,
    merge_adapter,
    predict_size,
    quantize,
)
from tuiapp.engine.export.writers import Writer, check_architecture, choose_writer, write_float
from tuiapp.engine.infer.gguf_file import GGUFFileError

FLOAT_TYPES = ("f32", "f16", "bf16")
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ExportSource:
    """What REF points at, in paths and store ids."""

    kind: str                   # "run" | "model"
    stem: str                   # file-name stem: "run-7" or the model folder's name
    run_id: int | None
    model_id: int | None        # the store row of the model being exported (adapter or full)
    model_dir: Path | None      # a full HF folder to export as is (None when merging)
    adapter_dir: Path | None
    base_dir: Path | None
    merge_dirs: tuple[Path, ...] = ()   # an aligned run's start adapters, merged before adapter_dir

    @property
    def shape_dir(self) -> Path:
        """A folder with the exported model's shapes: merging never changes them."""
        return self.model_dir or self.base_dir  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            return [str(x) for x in v] if isinstance(v, tuple) else (str(v) if isinstance(v, Path) else v)

        return {k: plain(v) for k, v in self.__dict__.items()}


def _aligned(adapter_dir: Path, run_dir: Path | None) -> tuple[Path | None, tuple[Path, ...]]:
    """(start model folder, adapters to merge first) for an alignment run's adapter; the plain
    (None, ()) for an SFT adapter. Refuses a reward model: it has no language-model head."""
    from tuiapp.engine.infer.model_refs import RefError, is_reward_adapter, start_chain

    if is_reward_adapter(adapter_dir):
        raise ExportError(f"{adapter_dir} is a reward model (a scoring head, not a language model); "
                          "there is nothing to export to GGUF. Export the policy run instead.")
    try:
        return start_chain(adapter_dir, run_dir)
    except RefError as exc:
        raise ExportError(str(exc)) from None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"


def parse_quants(quants: str | Iterable[str]) -> list[str]:
    """'f16,q8_0' or a list -> validated, lower-case, de-duplicated names (order kept)."""
    items = quants.split(",") if isinstance(quants, str) else list(quants)
    names = list(dict.fromkeys(q.strip().lower() for q in items if q and q.strip()))
    if not names:
        raise ExportError("no output type given; ask for at least one, e.g. f16 or q8_0.")
    unknown = [q for q in names if q not in QUANT_TYPES]
    if unknown:
        raise ExportError(f"unknown output type {', '.join(map(repr, unknown))}; choose from "
                          f"{', '.join(QUANT_TYPES)}.")
    return names


# ------------------------------------------------------------------ resolve


def _base_of_adapter(adapter_dir: Path, store: Any, model_id: int | None) -> Path:
    import json

    if model_id is not None:
        row = store.get_model(model_id)
        if row.base_model_id is not None:
            base = Path(store.get_model(row.base_model_id).path)
            if (base / "config.json").exists():
                return base
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    named = cfg.get("base_model_name_or_path") or ""
    if named and (Path(named) / "config.json").exists():
        return Path(named)
    raise ExportError(f"{adapter_dir}: cannot find the adapter's base model on this machine "
                      f"(adapter_config.json names {named or 'none'!r}); merging needs the base "
                      "model folder.")


def resolve_source(ref: str | int, store: Any) -> ExportSource:
    """A run id (its final adapter or model) or a model / adapter folder."""
    text = str(ref).strip()
    if text.isdigit():
        run_id = int(text)
        try:
            run = store.get_run(run_id)
        except LookupError:
            raise ExportError(f"no run with id {run_id} in the store; see `tuneloop runs list`, "
                              "or give a model folder.") from None
        final = Path(run.output_dir or "") / "final"
        if not run.output_dir or not final.is_dir():
            raise ExportError(f"run {run_id} ({run.status}) has no final model in "
                              f"{final}; only a completed run can be exported.")
        model_id = run.adapter_model_id
        if model_id is None:
            found = store.find_model(str(final))
            model_id = found.id if found else None
        stem = f"run-{run_id}"
        if (final / "adapter_config.json").exists():
            start_base, merges = _aligned(final, Path(run.output_dir))
            base = start_base
            if base is None and run.base_model_id is not None:
                candidate = Path(store.get_model(run.base_model_id).path)
                base = candidate if (candidate / "config.json").exists() else None
            base = base or _base_of_adapter(final, store, model_id)
            return ExportSource("run", stem, run_id, model_id, None, final, base, merges)
        if not (final / "config.json").exists():
            raise ExportError(f"run {run_id}: {final} holds neither an adapter nor a model.")
        return ExportSource("run", stem, run_id, model_id, final, None, None)

    folder = Path(text).expanduser()
    if not folder.exists():
        raise ExportError(f"{text!r} is neither a run id nor an existing folder; give a run id "
                          "(`tuneloop runs list`) or a Hugging Face model or adapter folder.")
    folder = folder.resolve()
    if not folder.is_dir():
        raise ExportError(f"{folder} is a file; give a model or adapter folder (with config.json "
                          "or adapter_config.json).")
    row = store.find_model(str(folder))
    model_id = row.id if row else None
    if (folder / "adapter_config.json").exists():
        start_base, merges = _aligned(folder, folder.parent if folder.name == "final" else None)
        base = start_base or _base_of_adapter(folder, store, model_id)
        return ExportSource("model", _slug(folder.name), None, model_id, None, folder, base, merges)
    if not (folder / "config.json").exists():
        raise ExportError(f"{folder} is not a model folder: it has neither config.json nor "
                          "adapter_config.json.")
    return ExportSource("model", _slug(folder.name), None, model_id, folder, None, None)


# ------------------------------------------------------------------ plan


def _check_mergeable(source: ExportSource) -> None:
    """Prefix and prompt tuning add no weights (train/methods.py): refused before anything loads."""
    from tuiapp.engine.train.methods import no_merge_reason

    for folder in (*source.merge_dirs, source.adapter_dir):
        reason = no_merge_reason(folder) if folder is not None else None
        if reason:
            raise ExportError(f"{reason}. A GGUF file holds the weights of one model; export a run of "
                              "a method that merges (lora, qlora, dora, ia3, bitfit, full), or compare "
                              "this one with its base in Compare.")


def plan_export(ref: str | int, store: Any, quants: str | Iterable[str] = ("f16",)) -> dict:
    """What an export of ``ref`` will write and the predicted bytes of each file; writes nothing."""
    names = parse_quants(quants)
    source = resolve_source(ref, store)
    _check_mergeable(source)
    try:
        # the architecture first: refused here, before a merge loads anything
        writer = choose_writer()
        check_architecture(source.shape_dir, writer)
        predicted = {q: predict_size(source.shape_dir, q) for q in names}
    except GGUFExportError as exc:
        raise ExportError(str(exc)) from None
    return {"source": source, "quants": names, "predicted": predicted,
            "total_predicted": sum(predicted.values()), "writer": writer}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _key_figures(report: dict) -> dict:
    logits, greedy = report.get("logits", {}), report.get("greedy", {})
    return {"tokenization_identical": report.get("tokenization", {}).get("identical"),
            "max_abs_diff": logits.get("max_abs_diff"), "relative_diff": logits.get("relative_diff"),
            "top1_agreement": logits.get("top1_agreement"),
            "greedy_agreeing": greedy.get("agreeing"), "greedy_prompts": greedy.get("prompts")}


def _parity(hf_dir: Path, path: Path, max_new_tokens: int) -> dict:
    from tuiapp.engine.export.parity import check

    try:
        return check(hf_dir, path, max_new_tokens=max_new_tokens)
    except GGUFFileError as exc:  # llama.cpp refused the file: a failed check, not a crash
        return {"ok": False, "reasons": [str(exc)], "gguf": str(path), "hf": str(hf_dir)}


# ------------------------------------------------------------------ run


def run_export(ref: str | int, store: Any, home: str | Path, quants: str | Iterable[str] = ("f16",),
               ollama: bool = False, card: bool = False, out: str | Path | None = None,
               progress: Progress | None = None, *, system: str | None = None,
               max_new_tokens: int = 12) -> dict:
    """Export ``ref`` (run id or folder) to GGUF files of each type in ``quants``.

    Returns a JSON-able dict: source, out_dir, merged_dir, predicted, files (quant, path,
    size_bytes, predicted_bytes, sha256, status, reasons, figures, parity, export_id, writer),
    modelfile, card, notes, writer, ok. Raises ExportError for bad input or a failed step; a
    failed parity check is not raised but recorded (``ok`` False).
    """
    plan = plan_export(ref, store, quants)
    source: ExportSource = plan["source"]
    writer: Writer = plan["writer"]
    if source.model_id is None:  # a folder seen for the first time: remember it, for lineage
        folder = source.model_dir or source.adapter_dir
        kind = "adapter" if source.adapter_dir else "hf"
        row = store.add_model(folder.name, kind, str(folder), meta={"source": "export"})
        source = replace(source, model_id=row.id)
    names: list[str] = plan["quants"]
    out_dir = Path(out) if out else (
        Path(home) / "exports" / f"{source.stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    out_dir.mkdir(parents=True, exist_ok=True)

    floats = [q for q in names if q in FLOAT_TYPES]
    quantized = [q for q in names if q not in FLOAT_TYPES]
    # quantize from the most precise float file asked for; f16 as a scratch source otherwise
    src_type = next((t for t in ("f32", "f16", "bf16") if t in floats), "f16")
    scratch = bool(quantized) and not floats
    steps = (["merge"] if source.adapter_dir else []) + [f"write {q}" for q in floats] \
        + (["write f16 source"] if scratch else []) + [f"quantize {q}" for q in quantized] \
        + [f"parity {q}" for q in names] + (["modelfile"] if ollama else []) + (["card"] if card else [])
    done = 0

    def step(label: str) -> None:
        nonlocal done
        if progress is not None:
            progress(label, done, len(steps))
        done += 1

    try:
        merged_dir = None
        if source.adapter_dir:
            step("merge")
            merged_dir = out_dir / "merged"
            merge_adapter(source.base_dir, source.adapter_dir, merged_dir,
                          start_adapters=source.merge_dirs)
        hf_dir = merged_dir or source.model_dir
        paths: dict[str, Path] = {}
        for q in floats:
            step(f"write {q}")
            paths[q] = out_dir / f"{source.stem}-{q}.gguf"
            write_float(hf_dir, paths[q], q, writer)
        src_path = paths.get(src_type)
        if scratch:
            step("write f16 source")
            src_path = out_dir / f".{source.stem}-f16-source.gguf"
            write_float(hf_dir, src_path, "f16", writer)
        fallbacks: dict[str, list[str]] = {}
        for q in quantized:
            step(f"quantize {q}")
            paths[q] = out_dir / f"{source.stem}-{q}.gguf"
            fallbacks[q] = quantize(src_path, paths[q], q)["fallbacks"]
        if scratch and src_path is not None:
            src_path.unlink(missing_ok=True)
    except GGUFExportError as exc:
        raise ExportError(str(exc)) from None

    files = []
    for q in names:
        step(f"parity {q}")
        report = _parity(hf_dir, paths[q], max_new_tokens)
        path = paths[q]
        if not report["ok"]:
            failed = path.with_name(path.stem + ".failed.gguf")
            path.replace(failed)
            path = failed
        size, digest = path.stat().st_size, sha256_file(path)
        report["fallbacks"] = fallbacks.get(q, [])
        report["writer"] = writer.name  # kept with the row: which program wrote the float file
        status = "ok" if report["ok"] else "failed"
        row = store.add_export(str(path), "gguf", quant=q, size_bytes=size, sha256=digest,
                               parity=report, run_id=source.run_id, model_id=source.model_id,
                               status=status)
        if status == "ok":
            store.add_model(path.stem, "gguf", str(path), base_model_id=source.model_id,
                            meta={"export_id": row.id, "quant": q, "sha256": digest,
                                  "run_id": source.run_id, "writer": writer.name})
        files.append({"quant": q, "path": str(path), "size_bytes": size,
                      "predicted_bytes": plan["predicted"][q], "sha256": digest, "status": status,
                      "reasons": report["reasons"], "figures": _key_figures(report),
                      "parity": report, "export_id": row.id, "writer": writer.name})

    notes: list[str] = []
    modelfile_path = None
    if ollama:
        step("modelfile")
        modelfile_path, more = _write_modelfile(out_dir, hf_dir, files, system)
        notes += more
    card_path = None
    if card:
        step("card")
        card_path = _write_card(out_dir, source, store, files)
    if progress is not None:
        progress("done", len(steps), len(steps))
    return {"ref": str(ref), "source": source.to_dict(), "out_dir": str(out_dir),
            "merged_dir": str(merged_dir) if merged_dir else None, "predicted": plan["predicted"],
            "files": files, "modelfile": modelfile_path, "card": card_path, "notes": notes,
            "writer": writer.name, "ok": all(f["status"] == "ok" for f in files)}


def _write_modelfile(out_dir: Path, hf_dir: Path, files: list[dict], system: str | None):
    """One Modelfile, for the smallest file that passed parity (what Ollama users usually run)."""
    from tuiapp.engine.export.modelfile import build

    passed = [f for f in files if f["status"] == "ok"]
    if not passed:
        return None, ["no Modelfile: no file passed the parity check."]
    chosen = min(passed, key=lambda f: f["size_bytes"])
    mf = build(Path(chosen["path"]).name, hf_dir, system=system)
    path = out_dir / "Modelfile"
    path.write_text(mf.text, encoding="utf-8")
    return str(path), [f"Modelfile uses {Path(chosen['path']).name}."] + mf.notes


def _write_card(out_dir: Path, source: ExportSource, store: Any, files: list[dict]) -> str:
    from tuiapp.engine.export.model_card import render

    subject = store.get_run(source.run_id) if source.run_id is not None else (
        store.get_model(source.model_id) if source.model_id is not None
        else (source.model_dir or source.adapter_dir))
    exports = [store.get_export(f["export_id"]) for f in files]
    path = out_dir / "README.md"
    path.write_text(render(subject, store, exports=exports), encoding="utf-8")
    return str(path)
