"""Pre-flight: what a job will cost and whether it can work, before anything is queued.

It resolves the model and dataset, counts total and trainable parameters on the meta device (no
weights loaded), estimates peak memory, measures the data with the real tokenizer, and refuses
with a reason a person can act on: a missing model folder, the wrong kind of dataset, examples
that would train on nothing, more memory than is free. Heavy imports stay inside functions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuiapp.engine.jobs.preflight_shape import (  # noqa: F401 - callers read them from here
    count_parameters,
    estimate_memory,
    free_memory,
    load_job_tokenizer,
    load_model_config,
    memory_knob,
    pick_device,
    template_token_count,
    token_row_count,
)
from tuiapp.engine.jobs.resolve import (
    ALIGNMENT_KINDS,
    EXPECTED_KINDS,
    ResolveError,
    resolve_base_model,
    resolve_dataset,
    resolve_start,
)

GiB = 2**30


@dataclass
class PreflightReport:
    kind: str
    base_model: str | None = None          # resolved folder / hub id (None: scratch)
    base_model_id: int | None = None
    base_gguf: dict | None = None          # the GGUF a base folder was dequantised from
    dataset_version_id: int | None = None
    dataset_path: str | None = None
    dataset_hash: str | None = None
    dataset_rows: int | None = None
    device: str = "cpu"
    dtype: str = ""                        # "auto → bf16: this CPU has AMX", or "fp32 (set in the config)"
    params: dict[str, Any] = field(default_factory=dict)   # total, trainable, share
    memory: dict[str, Any] = field(default_factory=dict)   # parts and estimate in bytes, free
    tokens: dict[str, Any] = field(default_factory=dict)   # from data.compute_stats
    steps: int | None = None
    refusals: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    start: dict[str, Any] | None = None    # alignment jobs: policy.StartPoint as a dict
    parent_run_id: int | None = None       # the run an alignment job starts from
    distributed: dict[str, Any] = field(default_factory=dict)  # world size, global batch, sharding

    @property
    def ok(self) -> bool:
        return not self.refusals

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def render(self):
        """A Rich renderable: one table of facts, then refusals and warnings."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column()
        table.add_row("job", self.kind)
        table.add_row("base model", self.base_model or "scratch (fresh weights)")
        if self.dtype:
            table.add_row("dtype", self.dtype)
        if self.base_gguf:
            table.add_row("from GGUF", f"{self.base_gguf.get('gguf_path')} "
                                       f"(sha256 {str(self.base_gguf.get('gguf_sha256'))[:16]})")
        if self.start and (self.start.get("adapter_dir") or self.start.get("full_dir")):
            origin = f"run {self.parent_run_id}: " if self.parent_run_id is not None else ""
            merged = self.start.get("adapter_dir") or self.start.get("full_dir")
            table.add_row("starts from", f"{origin}{merged}")
        if self.dataset_path:
            table.add_row("dataset", f"version {self.dataset_version_id}: {self.dataset_path} "
                                     f"({self.dataset_rows} rows)")
        if self.params:
            p = self.params
            table.add_row("parameters", f"{_count(p['trainable'])} trainable of {_count(p['total'])} "
                                        f"({p['share'] * 100:.2f}%)")
        if self.memory:
            m = self.memory
            free = f", {m['free_bytes'] / GiB:.1f} GiB free" if m.get("free_bytes") else ""
            each = " per device" if m.get("per_device") else ""
            table.add_row("peak memory", f"≈ {m['estimate_bytes'] / GiB:.2f} GiB{each} on "
                                         f"{self.device}{free}")
        tok = self.tokens.get("tokens") or {}
        if tok:
            table.add_row("tokens/example", f"mean {tok['mean']:.0f}, p90 {tok['p90']:.0f}, "
                                            f"max {tok['max']:.0f}")
        trunc = self.tokens.get("truncated")
        if trunc:
            table.add_row("truncated", f"{trunc['count']} ({trunc['share'] * 100:.1f}%) at "
                                       f"max_length {self.tokens.get('max_length')}")
        d = self.distributed
        if d:
            table.add_row("global batch", f"{d['global_batch']} = {d['per_device_batch']} per device "
                                          f"x {d['num_processes']} process(es) x {d['grad_accum']} "
                                          "accumulation")
            if d["num_processes"] > 1:
                table.add_row("processes", f"{d['num_processes']} on {self.device} "
                                           f"({d['strategy']}, {d['backend']})")
        if self.steps:
            table.add_row("steps", f"about {self.steps}")
        parts: list[Any] = [table]
        for r in self.refusals:
            parts.append(Text(f"✗ {r}", style="red"))
        for w in self.warnings:
            parts.append(Text(f"! {w}", style="yellow"))
        return Group(*parts)


def _count(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def preflight(config: Any, store: Any, home: str | Path | None = None,
              free_bytes: int | None = None, emit: Any = None) -> PreflightReport:
    """Check a job config. ``free_bytes`` overrides the measured free memory (tests, planning);
    ``emit(event, **fields)`` hears the progress of dequantising a GGUF base (first use only)."""
    kind = config.kind
    report = PreflightReport(kind=kind, device=pick_device(config.device))
    from tuiapp.engine.train.modeling import describe_dtype

    report.dtype = describe_dtype(config.dtype, report.device)
    model_cfg = tokenizer = None
    start = None
    if kind in ALIGNMENT_KINDS and str(getattr(config, "start_from", "") or "").strip():
        model, start = _resolve_start_model(config, store, report)
    else:
        try:
            model = resolve_base_model(config.base_model, store, allow_scratch=(kind == "cpt"),
                                       home=home, emit=emit)
            report.base_model, report.base_model_id = model.path, model.model_id
            report.base_gguf = model.gguf
        except ResolveError as exc:
            report.refusals.append(str(exc))
            model = None
        if model is not None and kind in ALIGNMENT_KINDS:
            start = resolve_start(config, store, base_path=model.path)
    if start is not None:
        report.start, report.parent_run_id = start.to_dict(), start.run_id
    try:
        version = resolve_dataset(config.dataset, store, home, kind)
        report.dataset_version_id, report.dataset_path = version.id, version.path
        report.dataset_hash, report.dataset_rows = version.content_hash, version.rows
        wanted = EXPECTED_KINDS.get(kind, ())
        if wanted and version.kind not in wanted:
            report.refusals.append(
                f"dataset: {version.name} (version {version.id}) is {version.kind} data; a {kind} "
                f"job trains on {' or '.join(wanted)} data")
            version = None
    except ResolveError as exc:
        report.refusals.append(str(exc))
        version = None
    if model is not None:
        try:
            model_cfg = load_model_config(config, start.model_dir if start else model.path)
            tokenizer = load_job_tokenizer(config, start.tokenizer_dir if start else model.path)
        except Exception as exc:  # noqa: BLE001 - any loader failure becomes a refusal in words
            report.refusals.append(f"base_model: cannot read {model.path or 'the scratch config'}: "
                                   f"{_first_line(exc)}")
            model_cfg = None
    shared = None
    if model_cfg is not None:
        try:
            shared = _shared_estimate(config, model, tokenizer, report.device)
            if shared is not None:
                report.params, report.memory = shared
            else:
                report.params = count_parameters(model_cfg, config, tokenizer)
                report.memory = estimate_memory(model_cfg, config, report.params, report.device)
        except ValueError as exc:  # the method cannot go on this model (bitfit without biases, ...)
            report.refusals.append(f"method: {_first_line(exc)}")
            model_cfg = shared = None
    if version is not None:
        _check_data(report, config, version, tokenizer)
        if model_cfg is not None and shared is not None:
            _fit_memory_to_data(report, config, model, tokenizer)
    from tuiapp.engine.jobs.launch import check_processes, share_memory

    check_processes(report, config)  # world size, global batch, what several processes refuse
    if report.memory:
        share_memory(report, config)
        _check_memory(report, config, free_bytes)
    return report


def _fit_memory_to_data(report: PreflightReport, config: Any, model: Any, tokenizer: Any) -> None:
    """Re-estimate with the tokens the data can put in one step: batch_size x the longest example
    (capped at max_length), not batch_size x max_length. On an H100 a Qwen2-0.5B QLoRA job on
    conversations of at most 524 tokens (max_length 1024, batch 8) peaked at 7.5 GiB; the
    max_length bound said 24 GiB, this one 13 GiB (the estimate stays on the safe side)."""
    longest = ((report.tokens or {}).get("tokens") or {}).get("max")
    if not longest or longest >= config.max_length:
        return
    shared = _shared_estimate(config, model, tokenizer, report.device,
                              tokens_per_step=config.batch_size * int(longest))
    if shared is not None:
        report.params, report.memory = shared


def _check_memory(report: PreflightReport, config: Any, free_bytes: int | None) -> None:
    free = free_bytes if free_bytes is not None else free_memory(report.device)
    report.memory["free_bytes"] = free
    est = report.memory["estimate_bytes"]
    if free and est > free:
        report.refusals.append(
            f"memory: needs about {est / GiB:.2f} GiB but only {free / GiB:.2f} GiB is free on "
            f"{report.device}; first knob: {memory_knob(config)}")
    elif free and est > 0.8 * free:
        report.warnings.append(f"memory: about {est / GiB:.2f} GiB of {free / GiB:.2f} GiB "
                               f"free; a longer batch may not fit ({memory_knob(config)})")


def _resolve_start_model(config: Any, store: Any, report: PreflightReport):
    """start_from given: the base is the one the start was trained on (a run's base model, or
    the folder an adapter names), not necessarily config.base_model."""
    from tuiapp.engine.jobs.resolve import ResolvedModel

    try:
        start = resolve_start(config, store)
    except ResolveError as exc:
        report.refusals.append(str(exc))
        return None, None
    base_id = None
    if start.run_id is not None:
        base_id = store.get_run(start.run_id).base_model_id
    if base_id is None and start.base_path:
        try:
            base_id = resolve_base_model(start.base_path, store).model_id
        except ResolveError:
            base_id = None
    report.base_model, report.base_model_id = start.base_path, base_id
    return ResolvedModel(str(getattr(config, "start_from", "")), start.base_path, base_id, True), start


def _shared_estimate(config: Any, model: Any, tokenizer: Any, device: str,
                     tokens_per_step: int | None = None):
    """The SFT engine's own counts (``modeling.py``: PEFT on the meta device, so they match what
    the job will train) when it is there and the job starts from a model folder."""
    if config.kind != "sft" or not model.path:
        return None
    try:
        from tuiapp.engine.train import modeling
    except ImportError:
        return None
    est = modeling.estimate_memory(config, model.path, tokens_per_step=tokens_per_step, device=device,
                                   tokenizer=tokenizer)
    total, trainable = est["total_params"], est["trainable_params"]
    params = {"total": int(total), "trainable": int(trainable), "method": config.method,
              "share": round(trainable / total, 6) if total else 0.0}
    memory = {k: v for k, v in est.items() if k.endswith("_bytes") and k != "total_bytes"}
    memory.update(dtype=est.get("dtype"), estimate_bytes=int(est["total_bytes"]),
                  first_knob=est.get("first_knob"))
    return params, memory


def _check_data(report: PreflightReport, config: Any, version: Any, tokenizer: Any) -> None:
    from tuiapp.engine import data

    rep = data.validate(version.path, kind=version.kind)
    if not rep.ok:
        report.refusals.append(f"dataset: {version.path} no longer validates: {rep.errors[0]}")
        return
    if not rep.records:
        report.refusals.append(f"dataset: {version.path} has no usable rows")
        return
    if config.kind != "cpt" and tokenizer is not None and not _template_masks(report, config, rep, tokenizer):
        return
    stats = data.compute_stats(rep, tokenizer=tokenizer, max_length=config.max_length)
    report.tokens = {k: stats.get(k) for k in ("rows", "tokenizer", "template", "max_length",
                                               "tokens", "truncated", "train_on_nothing",
                                               "assistant_tokens")}
    from tuiapp.engine.jobs.preflight_drop import check_dropped_rows

    check_dropped_rows(report, config, rep, tokenizer)  # rows the trainer drops or empties
    nothing = stats.get("train_on_nothing") or {}
    if nothing.get("count") and getattr(config, "assistant_only_loss", False):
        lines = ", ".join(map(str, nothing["lines"][:10]))
        report.refusals.append(
            f"dataset: {nothing['count']} example(s) would train on nothing at max_length "
            f"{config.max_length}: truncation removes every assistant token (lines {lines}); "
            "raise max_length or shorten/drop those examples")
    trunc = stats.get("truncated") or {}
    if trunc.get("share", 0) > 0.05:
        report.warnings.append(f"dataset: {trunc['share'] * 100:.0f}% of the examples are longer "
                               f"than max_length {config.max_length} and will be cut")
    rows = len(rep.records)
    train_rows = max(1, rows - math.ceil(rows * config.eval_split)) if config.eval_split else rows
    per_step = config.batch_size * config.grad_accum
    if config.max_steps > 0:
        report.steps = config.max_steps
    else:
        report.steps = max(1, math.ceil(config.epochs * math.ceil(train_rows / per_step)))


def _template_masks(report: PreflightReport, config: Any, rep: Any, tokenizer: Any) -> bool:
    """A chat template without {% generation %} markers is split turn by turn at train time (SFT
    conversations: the assistant mask; preference/KTO/reward rows: prompt and answer; PPO/GRPO/RLOO
    prompts: where the sampled answer starts and ends). Check that it can be on this data, and
    refuse naming the first row when it cannot, before any weights load."""
    from tuiapp.engine.train import template_mask

    records = rep.records
    if config.kind == "sft":
        conversational = bool(records) and "messages" in records[0]
        if not template_mask.needs_derived_mask(tokenizer, conversational, config.assistant_only_loss):
            return True
        fix = "set chat_template=chatml, or assistant_only_loss=false to train on every token"
    else:
        if not getattr(tokenizer, "chat_template", None) or template_mask.has_generation_markers(tokenizer):
            return True
        if config.kind in ("ppo", "grpo", "rloo"):  # only the prompts are used: check those
            from tuiapp.engine.train.reward_sources import _prompt_messages

            records = [{"prompt": p} if (p := _prompt_messages(r)) else {} for r in records]
        fix = "set chat_template=chatml"
    bad = template_mask.first_unmaskable(tokenizer, records)
    if bad is None:
        return True
    report.refusals.append(f"chat_template: {config.chat_template} cannot be split on the data "
                           f"(row {bad[0]}: {bad[1]}); {fix}")
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
