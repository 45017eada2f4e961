"""The child process of a job: ``python -m tuiapp.engine.jobs.child RUN_DIR``.

It reads ``RUN_DIR/job.json`` (written by the Runner), imports the algorithm, trains with a
JSON-lines sink (``RUN_DIR/events.jsonl``) and turns any exception into an ``error`` event a
person can act on; the full traceback goes to ``RUN_DIR/error.log``, never to the UI.
Exit codes: 0 completed, 1 failed, 3 cancelled (0 for a cancelled rank of a process group:
torchrun treats any other code as a failure). It never touches the store: the parent replays
the events, so a crash here cannot corrupt it. Under ``accelerate launch`` (num_processes > 1)
every rank runs this module; what differs per rank is in ``launch.py``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from tuiapp.engine.context import JobContext, request_stop
from tuiapp.engine.events import JsonlSink, make_event

EXIT_OK, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 3
CHILD_MARKER = "tuiapp.engine.jobs.child"   # in the child's command line: recover() checks it

_PHASE_WORDS = {
    "load_data": "loading the data",
    "load_model": "loading the model",
    "train": "training",
    "save": "saving",
    "start": "starting",
}


class _WatchingSink:
    """Passes events on and remembers the phase and whether the algorithm reported done."""

    def __init__(self, inner: JsonlSink) -> None:
        self.inner = inner
        self.phase = "start"
        self.done: dict[str, Any] | None = None

    def emit(self, event: dict[str, Any]) -> None:
        if event.get("event") == "phase":
            self.phase = str(event.get("phase", self.phase))
        elif event.get("event") == "done":
            self.done = event
        self.inner.emit(event)

    def close(self) -> None:
        self.inner.close()


def load_algorithm(spec: str):
    """'package.module:function' or '/path/to/file.py:function'."""
    target, _, func = spec.rpartition(":")
    if not target or not func:
        raise ValueError(f"algorithm {spec!r} is not 'module:function'")
    if target.endswith(".py"):
        loaded = importlib.util.spec_from_file_location(Path(target).stem, target)
        if loaded is None or loaded.loader is None:
            raise ImportError(f"cannot load {target}")
        module = importlib.util.module_from_spec(loaded)
        loaded.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    return getattr(module, func)


def describe_error(exc: BaseException, phase: str, config: Any, run_dir: Path,
                   error_log: Path | None = None) -> dict[str, Any]:
    """An ``error`` event: what went wrong, where, and the first thing to try."""
    from tuiapp.engine.jobs.preflight import memory_knob
    from tuiapp.engine.train.config import ConfigError

    where = _PHASE_WORDS.get(phase, phase)
    text = str(exc).strip()
    first = text.splitlines()[0][:300] if text else type(exc).__name__
    if _is_oom(exc):
        asked = re.search(r"[Tt]ried to allocate ([\d.]+ [KMGT]i?B)", text)
        free = re.search(r"([\d.]+ [KMGT]i?B) (?:is )?free", text)
        memo = ""
        if asked:
            memo = f" It asked for {asked.group(1)}"
            memo += f" with {free.group(1)} free." if free else "."
        knob = memory_knob(config) if config is not None else "lower batch_size"
        message = f"Out of memory while {where}.{memo} First knob to turn: {knob}."
        return {"kind": "oom", "phase": phase, "message": message}
    if isinstance(exc, ConfigError):
        return {"kind": "config", "phase": phase, "message": f"Config problem: {text}"}
    if _is_data_error(exc):
        return {"kind": "data", "phase": phase,
                "message": f"Data problem while {where}: {first}"}
    return {"kind": "crash", "phase": phase,
            "message": f"{type(exc).__name__} while {where}: {first}. The full traceback is in "
                       f"{error_log or run_dir / 'error.log'}."}


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    return name == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def _is_data_error(exc: BaseException) -> bool:
    names = [c.__name__ for c in type(exc).__mro__]
    return any("Data" in n or "Dataset" in n for n in names) or hasattr(exc, "problems")


def run_job(run_dir: Path) -> int:
    from tuiapp.engine.jobs import launch

    rank, world = launch.rank_env()  # set by torchrun when the runner started a process group
    if world > 1:
        launch.start_rank(run_dir, rank)
        launch.share_dataset_cache(run_dir)
    code, error = _run_job(run_dir, rank, world)
    if world > 1:
        launch.end_rank(run_dir, rank, code, error)
        if code == EXIT_CANCELLED:
            return EXIT_OK  # torchrun counts any other code as a failed rank; the done event says
    return code


def _run_job(run_dir: Path, rank: int, world: int) -> tuple[int, dict[str, Any] | None]:
    from tuiapp.engine.jobs.launch import GroupJobContext, logs_dir, world_size_refusal

    job = json.loads((run_dir / "job.json").read_text(encoding="utf-8"))
    # One event stream for the runner: rank 0's. The others keep theirs beside their stderr.
    events = run_dir / "events.jsonl" if rank == 0 else logs_dir(run_dir) / f"rank-{rank}.events.jsonl"
    error_log = run_dir / "error.log" if rank == 0 else logs_dir(run_dir) / f"rank-{rank}.error.log"
    sink = _WatchingSink(JsonlSink(events))
    ctx = (GroupJobContext if world > 1 else JobContext)(
        output_dir=run_dir, sink=sink,
        resume_from=Path(job["resume_from"]) if job.get("resume_from") else None,
        run_id=job.get("run_id"),
        dataset_path=Path(job["dataset_path"]) if job.get("dataset_path") else None,
        base_model_path=job.get("base_model_path"),
    )
    if job.get("start"):
        from tuiapp.engine.train.policy import StartPoint

        ctx.start = StartPoint.from_dict(job["start"])  # alignment jobs: policy.load_start_model reads it
    # SIGTERM (system shutdown, `kill`) asks for the same cooperative stop as cancel.
    signal.signal(signal.SIGTERM, lambda *_: request_stop(run_dir))
    config = None
    try:
        from tuiapp.engine.train.config import ConfigError, from_dict

        config = from_dict(job["kind"], job["config"])
        if ctx.resume_from is not None:
            refusal = world_size_refusal(ctx.resume_from, config)
            if refusal:
                raise ConfigError("num_processes", refusal)
        train = load_algorithm(job["algorithm"])
        result = train(config, ctx) or {}
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a readable event
        error_log.parent.mkdir(parents=True, exist_ok=True)
        error_log.write_text(traceback.format_exc(), encoding="utf-8")
        try:
            info = describe_error(exc, sink.phase, config, run_dir, error_log)
        except Exception:  # noqa: BLE001 - the message must get out even if wording fails
            info = {"kind": "crash", "phase": sink.phase,
                    "message": f"{type(exc).__name__}; see {error_log}"}
        # Built by hand: the error event's own "kind" field would collide with make_event's.
        sink.emit({"event": "error", "t": time.time(), **info})
        sink.close()
        return EXIT_FAILED, info
    status = _result_status(result, ctx, sink)
    if status == "completed" and result.get("final_dir") and rank == 0:
        _write_plain_peft(ctx, result)
    if sink.done is None:
        safe = {k: v for k, v in result.items() if k not in ("event", "t", "status", "output_dir")}
        sink.emit(make_event("done", status=status, output_dir=str(run_dir), **safe))
    sink.close()
    return (EXIT_CANCELLED if status == "cancelled" else EXIT_OK), None


def _write_plain_peft(ctx: JobContext, result: dict[str, Any]) -> None:
    """An aligned adapter stacked on its SFT start also gets ``<run>/peft/``: one LoRA a plain
    PEFT user loads on the base alone. A chain that cannot be folded costs a warning, not the run."""
    from tuiapp.engine.export.peft_fold import FoldError, write_plain_adapter

    try:
        folder = write_plain_adapter(result["final_dir"], ctx.output_dir)
    except (FoldError, OSError, ValueError) as exc:
        ctx.emit("log", level="warning", message=f"no plain PEFT adapter written: {exc}")
        return
    if folder is not None:
        result["peft_dir"] = str(folder)
        ctx.emit("log", level="info", message=f"plain PEFT adapter (SFT + this run in one LoRA, "
                 f"loads on the base alone): {folder}")


def _result_status(result: dict[str, Any], ctx: JobContext, sink: _WatchingSink) -> str:
    if sink.done is not None and sink.done.get("status") in ("completed", "cancelled"):
        return sink.done["status"]
    if result.get("status") in ("completed", "cancelled"):
        return result["status"]
    if result.get("cancelled") or ctx.stop_requested():
        return "cancelled"
    return "completed"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m tuiapp.engine.jobs.child RUN_DIR", file=sys.stderr)
        return 2
    return run_job(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main())
