"""Sweeps: one normal run per point of a grid over config fields, remembered together.

    axes = parse_grid("sft", ["method=lora,dora", "lora_r=4,8,16"])
    plan = plan_sweep(base_config, axes)             # validated configs, one per grid point
    sweep, runs = queue_sweep(store, runner, plan, ...)   # pre-flight all, then queue all
    rows = sweep_table(store, sweep.id)              # method, rank, params, memory, loss, score
    evaluate_sweep(store, sweep.id, generator)       # held-out score of every completed run

A grid point is an ordinary run (the Runs screen, resume and export treat it as any other); the
sweep row only ties them together and keeps what the comparison needs that a run does not
record itself (the pre-flight estimate, the evaluation that scored them). Values are parsed by
the field's type and each point is validated by the config class, so a grid over ``method``
takes exactly the methods the config accepts. No Textual, no torch here.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuiapp.engine.events import read_jsonl_events
from tuiapp.engine.train.config import ConfigError, coerce, config_class

# The score a sweep table shows for a run: the first of these the prompt set was scored with
# (demo_exact: the extracted answer is the held-out reference, the demo's quality number).
HEADLINE_SCORERS = ("demo_exact", "exact", "contains", "demo_verify", "regex", "demo_format")
MiB = 2**20


class SweepError(ValueError):
    """A grid or sweep a person must fix; says which key or point and what is allowed."""


@dataclass
class PlannedRun:
    point: dict[str, Any]      # the grid values of this run, e.g. {"method": "lora", "lora_r": 8}
    config: Any                # the validated job config
    report: Any = None         # its pre-flight report, once checked


@dataclass
class SweepPlan:
    kind: str
    base: Any
    axes: list[tuple[str, list[Any]]]
    runs: list[PlannedRun] = field(default_factory=list)


# ------------------------------------------------------------------ grid → configs


def split_values(text: str) -> list[str]:
    """``v1,v2`` — or ``v1;v2`` when any ``;`` is present, so a list value (target_modules)
    can hold commas: ``target_modules=q_proj,v_proj;all-linear``."""
    sep = ";" if ";" in text else ","
    return [part.strip() for part in text.split(sep) if part.strip()]


def parse_grid(kind: str, specs: Sequence[str]) -> list[tuple[str, list[Any]]]:
    """``key=v1,v2`` strings → [(key, [typed values])]; an unknown key is refused naming the
    valid ones, a value of the wrong type naming the key and the type."""
    cls = config_class(kind)
    names = [f.name for f in dataclasses.fields(cls)]
    axes: list[tuple[str, list[Any]]] = []
    for spec in specs:
        key, sep, text = spec.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SweepError(f"--grid {spec!r}: expected key=v1,v2 (e.g. lora_r=4,8,16)")
        if key not in names:
            raise SweepError(f"--grid {key}: not a {kind} setting; the keys a {kind} sweep can "
                             f"vary are: {', '.join(names)}")
        if any(key == k for k, _ in axes):
            raise SweepError(f"--grid {key}: given twice; put every value in one --grid")
        values = []
        for part in split_values(text):
            try:
                value = coerce(cls, key, part)
            except ConfigError as exc:
                raise SweepError(f"--grid {exc}") from None
            if value not in values:
                values.append(value)
        if not values:
            raise SweepError(f"--grid {key}: no values after '='")
        axes.append((key, values))
    if not axes:
        raise SweepError("a sweep needs at least one --grid key=v1,v2")
    return axes


def grid_points(axes: Sequence[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """The cartesian product, first key slowest (the order the runs are queued in)."""
    keys = [k for k, _ in axes]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(v for _, v in axes))]


def point_label(point: dict[str, Any]) -> str:
    return " ".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in point.items())


def plan_sweep(base: Any, axes: list[tuple[str, list[Any]]],
               extra_points: Sequence[dict[str, Any]] = ()) -> SweepPlan:
    """Every grid point (then every extra point) as a validated config; a point the config
    refuses (an unknown method, a rank below 1 …) stops the whole plan, naming the point."""
    plan = SweepPlan(kind=base.kind, base=base, axes=list(axes))
    seen: list[dict[str, Any]] = []
    stem = base.name or base.run_name
    known = {f.name for f in dataclasses.fields(base)}
    for point in [*grid_points(axes), *extra_points]:
        unknown = sorted(set(point) - known)
        if unknown:
            raise SweepError(f"point {point_label(point)}: {', '.join(unknown)} not a {base.kind} "
                             f"setting; valid keys: {', '.join(sorted(known))}")
        named = {"name": f"{stem} [{point_label(point)}]"} if "name" not in point else {}
        try:
            cfg = dataclasses.replace(base, **point, **named)
        except ConfigError as exc:
            raise SweepError(f"point {point_label(point)}: {exc}") from None
        resolved = {k: v for k, v in cfg.to_dict().items() if k != "name"}
        if resolved in seen:
            continue  # an extra point that repeats a grid point trains nothing new
        seen.append(resolved)
        plan.runs.append(PlannedRun(point=dict(point), config=cfg))
    return plan


# ------------------------------------------------------------------ queueing


def check_plan(plan: SweepPlan, preflight: Callable[[Any], Any],
               on_point: Callable[[int, int, PlannedRun], None] | None = None) -> list[str]:
    """Pre-flight every point before any is queued; returns refusals as 'point: reason'."""
    refusals = []
    for i, planned in enumerate(plan.runs):
        if on_point:
            on_point(i, len(plan.runs), planned)
        planned.report = preflight(planned.config)
        refusals += [f"{point_label(planned.point)}: {r}" for r in planned.report.refusals]
    return refusals


def queue_sweep(store: Any, runner: Any, plan: SweepPlan, *, config_path: str | Path | None = None,
                prompts: str | None = None, name: str | None = None) -> tuple[Any, list[Any]]:
    """A sweep row, then one queued run per planned point (each pre-flighted already: see
    check_plan), in grid order; the pre-flight estimates go into the sweep's details."""
    if any(p.report is None or not p.report.ok for p in plan.runs):
        raise SweepError("every point needs a passing pre-flight before the sweep is queued")
    base = plan.base
    sweep = store.create_sweep(name or f"{base.name or base.run_name} sweep", plan.kind,
                               [(k, v) for k, v in plan.axes], config=base.to_dict(),
                               config_path=config_path, prompts=prompts)
    runs, estimates = [], {}
    for planned in plan.runs:
        run = runner.submit(planned.config, report=planned.report)
        store.add_run_to_sweep(sweep.id, run.id)
        runs.append(store.get_run(run.id))
        rep = planned.report
        estimates[str(run.id)] = {
            "point": planned.point,
            "trainable_params": (rep.params or {}).get("trainable"),
            "total_params": (rep.params or {}).get("total"),
            "memory_bytes": (rep.memory or {}).get("estimate_bytes"),
            "device": rep.device, "steps": rep.steps}
    sweep = store.update_sweep_details(sweep.id, preflight=estimates)
    return sweep, runs


# ------------------------------------------------------------------ reading a sweep


def run_result(run: Any) -> dict[str, Any]:
    """The ``done`` event the job wrote (trainable/total parameters, final loss, tokens seen)."""
    if not run.output_dir:
        return {}
    events, _ = read_jsonl_events(Path(run.output_dir) / "events.jsonl", 0)
    done = [e for e in events if e.get("event") == "done"]
    return done[-1] if done else {}


def headline_scorer(scorers: Sequence[str]) -> str | None:
    for name in HEADLINE_SCORERS:
        if name in scorers:
            return name
    return scorers[0] if scorers else None


def sweep_table(store: Any, sweep_id: int) -> list[dict[str, Any]]:
    """One row per run, in grid order: what it varied and what it cost and scored. Measured
    numbers come from what the run recorded (its done event and metrics); until it has run,
    trainable parameters and memory are the pre-flight's (``*_source`` says which)."""
    sweep = store.get_sweep(sweep_id)
    pre = (sweep.details or {}).get("preflight") or {}
    scores, scorer = _scores(store, sweep)
    rows = []
    for run in store.sweep_runs(sweep_id):
        est = pre.get(str(run.id)) or {}
        cfg = run.config
        method = cfg.get("method")
        done = run_result(run)
        summary = store.metric_summary(run.id)
        rates = [m.value for m in store.metrics(run.id, "tokens_per_s") if m.value is not None]
        trainable = done.get("trainable_params")
        memory = (summary.get("memory_mb") or {}).get("max")
        est_mem = est.get("memory_bytes")
        loss = (summary.get("loss") or {}).get("last")
        rows.append({
            "run_id": run.id, "status": run.status, "device": est.get("device"),
            "point": est.get("point") or {k: cfg.get(k) for k, _ in sweep.grid},
            "method": method,
            "lora_r": cfg.get("lora_r") if method not in (None, "full") else None,
            "trainable_params": trainable if trainable is not None else est.get("trainable_params"),
            "trainable_source": "run" if trainable is not None else ("pre-flight" if est else None),
            "total_params": done.get("total_params") or est.get("total_params"),
            "peak_memory_mb": memory if memory is not None else
            (est_mem / MiB if est_mem else None),
            "memory_source": "run" if memory is not None else ("pre-flight" if est_mem else None),
            "estimate_memory_mb": est_mem / MiB if est_mem else None,
            "tokens_per_s": sum(rates) / len(rates) if rates else None,
            "final_loss": loss if loss is not None else done.get("final_loss"),
            "score": (scores.get(run.id) or {}).get(scorer) if scorer else None,
            "scores": scores.get(run.id) or {},
        })
    return rows


def _scores(store: Any, sweep: Any) -> tuple[dict[int, dict[str, float | None]], str | None]:
    """{run_id: {scorer: mean}} from the sweep's evaluation, and the headline scorer."""
    eval_id = (sweep.details or {}).get("evaluation_id")
    if eval_id is None:
        return {}, None
    try:
        ev = store.get_evaluation(int(eval_id))
    except LookupError:
        return {}, None
    out: dict[int, dict[str, float | None]] = {}
    for ref, metrics in (ev.metrics or {}).items():
        if str(ref).startswith("run:") and str(ref)[4:].isdigit():
            out[int(str(ref)[4:])] = dict(metrics.get("scores") or {})
    return out, (sweep.details or {}).get("scorer") or headline_scorer(
        (ev.details or {}).get("scorers") or [])


# ------------------------------------------------------------------ scoring a sweep


def evaluate_sweep(store: Any, sweep_id: int, generator: Any, prompts: str | None = None, *,
                   limit: int | None = None, params: Any = None,
                   progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Answer the sweep's prompt set (or ``prompts``) with every completed run and score it with
    the project's evaluation (one stored evaluation linked to all of them)."""
    from tuiapp.engine.infer.evaluate import load_prompt_set, run_eval

    sweep = store.get_sweep(sweep_id)
    spec = prompts or sweep.prompts
    if not spec:
        raise SweepError(f"sweep {sweep_id} has no prompt set; give one (--eval PROMPTS)")
    done = [r for r in store.sweep_runs(sweep_id) if r.status == "completed" and r.adapter_model_id]
    if not done:
        raise SweepError(f"sweep {sweep_id} has no completed run to score yet")
    pset = load_prompt_set(spec, store)
    result = run_eval(generator, [f"run:{r.id}" for r in done], pset, params=params, limit=limit,
                      progress=progress, store=store, name=f"sweep {sweep_id}: {pset.name}")
    store.update_sweep_details(sweep_id, evaluation_id=result["evaluation_id"],
                               scorer=headline_scorer(result["scorers"]), prompts=spec)
    return result
