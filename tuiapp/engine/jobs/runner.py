"""The job runner: a persistent queue in the store, one child process per job, events → store.

    runner = Runner(store, home)
    run = runner.submit(config)     # resolve + pre-flight, row status=queued, RUN_DIR/job.json
    runner.start_next()             # oldest queued job, if none is running (one per machine)
    runner.poll()                   # events.jsonl → metrics, samples, status; call it often
    runner.cancel(run.id)           # queued: at once; running: STOP file → last checkpoint
    runner.resume(run.id)           # a NEW run (resumed_from=old) continuing the trajectory
    runner.recover()                # running rows whose process is gone → interrupted

Each run owns ``home/runs/<id>/``: job.json, events.jsonl, child.log, error.log, the HF
``checkpoint-N/`` folders and ``final/``. Resume hard-links (or copies, across file systems) the
newest complete checkpoint of the old run into the new run's folder, so every run folder stays
self-contained and the old one is never written again; the old run's metrics and samples up to
that step are copied to the new run so its curves read from step 0.

The child writes events to a file rather than a pipe, so a job outlives the process that started
it (close the TUI, the job goes on) and any later ``poll()`` from any tuneloop process picks the
events up; a per-run lock and an offset kept in the store's meta make that replay exactly once.
No Textual import here.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tuiapp.engine.context import latest_checkpoint, request_stop
from tuiapp.engine.events import read_jsonl_events
from tuiapp.engine.jobs.child import CHILD_MARKER

ALGORITHMS = {
    "sft": "tuiapp.engine.train.sft:train", "cpt": "tuiapp.engine.train.cpt:train",
    "dpo": "tuiapp.engine.train.dpo:train", "kto": "tuiapp.engine.train.dpo:train_kto",
    "reward": "tuiapp.engine.train.reward:train", "ppo": "tuiapp.engine.train.ppo:train",
    "grpo": "tuiapp.engine.train.rl:train_grpo", "rloo": "tuiapp.engine.train.rl:train_rloo",
}
RESUMABLE = ("cancelled", "interrupted", "failed")
ACTIVE = ("queued", "running")
VANISHED = ("the process ended without saying why (killed or machine restarted); "
            "resume it with `tuneloop runs resume {id}`")
_OFFSET_KEY = "runner.events_offset.{id}"


class PreflightRefused(ValueError):
    """Submit refused: the pre-flight report says why."""

    def __init__(self, report: Any) -> None:
        self.report = report
        super().__init__("; ".join(report.refusals))


class Runner:
    def __init__(self, store: Any, home: str | Path, algorithms: dict[str, str] | None = None,
                 python: str = sys.executable, env: dict[str, str] | None = None) -> None:
        self.store = store
        self.home = Path(home)
        self.runs_dir = self.home / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.algorithms = dict(ALGORITHMS if algorithms is None else algorithms)
        self.python = python
        self.env = dict(env or {})
        self._procs: dict[int, subprocess.Popen] = {}
        self._progress: dict[int, dict[str, Any]] = {}

    # ---------------------------------------------------------------- queue

    def submit(self, config: Any, report: Any = None, free_bytes: int | None = None) -> Any:
        """Pre-flight (unless a report is given), then a queued run with its resolved config."""
        from tuiapp.engine.jobs.preflight import preflight

        if config.kind not in self.algorithms:
            raise ValueError(f"no training algorithm for {config.kind!r} jobs in this version")
        report = report or preflight(config, self.store, self.home, free_bytes=free_bytes)
        if not report.ok:
            raise PreflightRefused(report)
        env = environment(report.device, report.dataset_hash)
        if getattr(report, "base_gguf", None):
            env["base_gguf"] = report.base_gguf  # lineage: the GGUF file the base came from
        run = self.store.create_run(
            config.kind, config.to_dict(), base_model_id=report.base_model_id,
            dataset_version_id=report.dataset_version_id, seed=config.seed, environment=env,
            name=config.run_name, status="queued",
            parent_run_id=getattr(report, "parent_run_id", None))
        run_dir = self.runs_dir / str(run.id)
        run_dir.mkdir(parents=True, exist_ok=True)
        self._write_job(run_dir, self._job(config, report, run.id))
        return self.store.update_run(run.id, output_dir=str(run_dir))

    def _job(self, config: Any, report: Any, run_id: int | None) -> dict[str, Any]:
        return {
            "run_id": run_id, "kind": config.kind, "config": config.to_dict(),
            "algorithm": self.algorithms[config.kind], "dataset_path": report.dataset_path,
            "base_model_path": report.base_model, "resume_from": None,
            # alignment jobs: where the policy starts (policy.StartPoint), read by the child
            "start": getattr(report, "start", None),
        }

    def prepare_launch(self, config: Any, report: Any, name: str | None = None) -> Path:
        """A job folder a cluster scheduler starts itself (``tuneloop train --print-launch``):
        job.json as submit writes it, but no queued row, so no local poll ever starts it. The
        folder fills like a run's (events.jsonl, logs/, checkpoints, final/)."""
        if config.kind not in self.algorithms:
            raise ValueError(f"no training algorithm for {config.kind!r} jobs in this version")
        folder = self.home / "launch" / (name or time.strftime(f"{config.kind}-%Y%m%d-%H%M%S"))
        folder.mkdir(parents=True, exist_ok=True)
        self._write_job(folder, self._job(config, report, None))
        return folder

    def start_next(self) -> Any | None:
        """Start the oldest queued run as a child process unless a run is already running."""
        with self._lock(self.runs_dir / ".queue.lock"):
            self.recover()
            if self.store.list_runs(status="running"):
                return None
            queued = self.store.list_runs(status="queued")
            if not queued:
                return None
            run = queued[-1]  # list_runs is newest first
            return self._spawn(run)

    def _spawn(self, run: Any) -> Any:
        run_dir = Path(run.output_dir)
        log = (run_dir / "child.log").open("ab")
        env = {**os.environ, **self.env}
        try:
            cmd = self.command(run)
        except (ValueError, OSError) as exc:
            log.close()
            return self.store.update_run(run.id, status="failed",
                                         error=f"could not build the launch command: {exc}")
        try:
            proc = subprocess.Popen(
                cmd, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True)  # Ctrl-C in a terminal reaches the CLI, not the job
        except OSError as exc:
            return self.store.update_run(run.id, status="failed",
                                         error=f"could not start the training process: {exc}")
        finally:
            log.close()
        self._procs[run.id] = proc
        self._progress[run.id] = {"step": 0, "total_steps": None, "eta_s": None,
                                  "world_size": _world(run)}
        return self.store.update_run(run.id, status="running", pid=proc.pid, error=None)

    def command(self, run: Any) -> list[str]:
        """The child's argv: one process, or an accelerate launch group (see launch.py)."""
        run_dir = Path(run.output_dir)
        if _world(run) == 1:
            return [self.python, "-m", CHILD_MARKER, str(run_dir)]
        from tuiapp.engine.jobs.launch import launch_command
        from tuiapp.engine.train.config import from_dict

        config = from_dict(run.kind, run.config)
        return launch_command(config, run_dir, self.python,
                              device=(run.environment or {}).get("device", "cpu"))

    # ---------------------------------------------------------------- events → store

    def poll(self) -> list[Any]:
        """Replay new events of every running run; finish runs whose process ended. Returns the
        runs whose status changed."""
        changed = []
        for run in self.store.list_runs(status="running"):
            after = self._poll_run(run)
            if after.status != run.status:
                changed.append(after)
        return changed

    def _poll_run(self, run: Any) -> Any:
        run_dir = Path(run.output_dir)
        proc = self._procs.get(run.id)
        # Decide "ended" before reading, so no event written before the exit is missed.
        if proc is not None:
            rc = proc.poll()
            ended = rc is not None
        else:
            rc = None
            ended = not pid_is_job(run.pid)
        with self._lock(run_dir / ".ingest.lock"):
            run = self.store.get_run(run.id)
            if run.status != "running":
                return run
            terminal = self._ingest(run)
            if terminal is not None:
                # Let the child exit (and free its memory) before the next job may start.
                if proc is not None and not ended:
                    try:
                        rc = proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        pass
                self._procs.pop(run.id, None)
                if _world(run) > 1:
                    return self._finish_group(run, terminal, rc)
                return self._finish(run, terminal)
            if not ended:
                return run
            self._procs.pop(run.id, None)
            if _world(run) > 1:
                return self._finish_group(run, None, rc)
            if rc is not None and rc < 0:
                sig = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else -rc
                return self.store.update_run(
                    run.id, status="interrupted",
                    error=f"the training process was killed by {sig} (if nobody stopped it, the "
                          "machine may have run out of memory); resume it with "
                          f"`tuneloop runs resume {run.id}`")
            if rc is not None:
                return self.store.update_run(
                    run.id, status="failed",
                    error=f"the training process exited with code {rc} without a result; "
                          f"see {run_dir / 'child.log'}")
            return self.store.update_run(run.id, status="interrupted",
                                         error=VANISHED.format(id=run.id))

    def _ingest(self, run: Any) -> dict[str, Any] | None:
        """New events → store; returns a done/error event if one arrived."""
        key = _OFFSET_KEY.format(id=run.id)
        offset = int(self.store.get_meta(key, 0) or 0)
        events, new_offset = read_jsonl_events(Path(run.output_dir) / "events.jsonl", offset)
        terminal = None
        prog = self._progress.setdefault(run.id, {"step": 0, "total_steps": None, "eta_s": None,
                                                  "world_size": _world(run)})
        for ev in events:
            kind = ev.get("event")
            if kind == "metrics":
                values = {k: v for k, v in (ev.get("values") or {}).items()
                          if isinstance(v, (int, float))}
                if values:
                    self.store.log_metrics(run.id, int(ev.get("step", 0)), values, t=ev.get("t"))
                    prog.update({k: values[k] for k in ("loss", "tokens_per_s", "eval_loss")
                                 if k in values})
            elif kind == "sample":
                self.store.add_generation(
                    f"run:{run.id}@{ev.get('step')}", ev.get("prompt", ""), ev.get("output", ""),
                    run_id=run.id, step=ev.get("step"))
            elif kind == "progress":
                prog.update(step=ev.get("step"), total_steps=ev.get("total_steps"),
                            eta_s=ev.get("eta_s"))
            elif kind == "checkpoint":
                prog["checkpoint"] = ev.get("path")
            elif kind == "phase":
                prog["phase"] = ev.get("phase")
            elif kind in ("done", "error") and terminal is None:
                terminal = ev
        if new_offset != offset:
            self.store.set_meta(key, new_offset)
        return terminal

    def _finish(self, run: Any, event: dict[str, Any]) -> Any:
        if event["event"] == "error":
            return self.store.update_run(run.id, status="failed",
                                         error=event.get("message") or "the job failed")
        status = event.get("status") if event.get("status") in ("completed", "cancelled") \
            else "completed"
        fields: dict[str, Any] = {"status": status, "error": None}
        final = Path(run.output_dir) / "final"
        if status == "completed" and final.is_dir():
            kind = "adapter" if (final / "adapter_config.json").exists() else "hf"
            model = self.store.find_model(str(final)) or self.store.add_model(
                f"run {run.id} {run.name or run.kind}", kind, str(final),
                base_model_id=run.base_model_id, meta={"run_id": run.id})
            fields["adapter_model_id"] = model.id
        return self.store.update_run(run.id, **fields)

    def _finish_group(self, run: Any, terminal: dict[str, Any] | None, rc: int | None) -> Any:
        """A process group ended (or its rank 0 reported the end): no rank may outlive the run;
        a failure names the rank that failed first, not the peers that lost it."""
        from tuiapp.engine.jobs.launch import group_failure, stop_group

        stop_group(run.output_dir, run.pid)
        failed = terminal is None or terminal.get("event") == "error" or rc not in (0, 3, None)
        reason = group_failure(run.output_dir, rc) if failed else None
        if reason is not None and not (terminal and terminal.get("event") == "error"
                                       and reason.startswith("rank 0 ") and "killed" not in reason):
            return self.store.update_run(run.id, status="failed", error=reason)
        if terminal is not None:
            return self._finish(run, terminal)
        if rc is not None and rc < 0:
            sig = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else -rc
            return self.store.update_run(
                run.id, status="interrupted",
                error=f"the process group's launcher was killed by {sig}; its ranks were "
                      f"stopped; resume it with `tuneloop runs resume {run.id}`")
        return self.store.update_run(
            run.id, status="failed" if rc else "interrupted",
            error=(f"the process group exited with code {rc} without a result; see "
                   f"{Path(run.output_dir) / 'child.log'}") if rc else VANISHED.format(id=run.id))

    def progress(self, run_id: int) -> dict[str, Any]:
        """Latest step, total, ETA, loss, tokens/s, phase, checkpoint and world size (processes
        of the job) seen by this runner."""
        return dict(self._progress.get(run_id, {}))

    # ---------------------------------------------------------------- cancel, resume, recover

    def cancel(self, run_id: int) -> Any:
        run = self.store.get_run(run_id)
        if run.status == "queued":
            return self.store.update_run(run_id, status="cancelled")
        if run.status == "running":
            request_stop(run.output_dir)
            return run
        raise ValueError(f"run {run_id} is {run.status}; only queued or running runs can be "
                         "cancelled")

    def resume(self, run_id: int, num_processes: int | None = None) -> Any:
        """Queue a new run continuing ``run_id`` from its newest complete checkpoint, on the
        same world size (``num_processes`` other than the checkpoint's is refused in words)."""
        from tuiapp.engine.jobs.launch import world_size_refusal
        from tuiapp.engine.train.config import from_dict

        old = self.store.get_run(run_id)
        if old.status not in RESUMABLE:
            raise ValueError(f"run {run_id} is {old.status}; only cancelled, interrupted or "
                             "failed runs can be resumed")
        ckpt = latest_checkpoint(old.output_dir) if old.output_dir else None
        if ckpt is None:
            raise ValueError(f"run {run_id} has no complete checkpoint to resume from; start it "
                             "again instead (lower save_steps to checkpoint more often)")
        config = dict(old.config)
        if num_processes is not None:
            config["num_processes"] = int(num_processes)
        try:
            refusal = world_size_refusal(ckpt, from_dict(old.kind, config))
        except ValueError:  # a config this version cannot read: the child will say so
            refusal = None
        if refusal:
            raise ValueError(f"run {run_id} cannot be resumed so: {refusal}")
        job = json.loads((Path(old.output_dir) / "job.json").read_text(encoding="utf-8"))
        job["config"] = {**job.get("config", {}), **config}
        step = int(ckpt.name.split("-")[-1])
        new = self.store.create_run(
            old.kind, config, base_model_id=old.base_model_id,
            dataset_version_id=old.dataset_version_id, parent_run_id=old.parent_run_id,
            seed=old.seed, environment=environment(old.environment.get("device", "cpu"),
                                                   old.environment.get("dataset_hash")),
            name=old.name, resumed_from=old.id, status="queued")
        run_dir = self.runs_dir / str(new.id)
        run_dir.mkdir(parents=True, exist_ok=True)
        link_tree(ckpt, run_dir / ckpt.name)
        self._copy_history(old.id, new.id, step)
        job.update(run_id=new.id, resume_from=str(run_dir / ckpt.name))
        job["algorithm"] = self.algorithms.get(old.kind, job["algorithm"])
        self._write_job(run_dir, job)
        return self.store.update_run(new.id, output_dir=str(run_dir))

    def _copy_history(self, old_id: int, new_id: int, step: int) -> None:
        by_step: dict[tuple[int, str], dict[str, float]] = {}
        for m in self.store.metrics(old_id):
            if m.step <= step and m.value is not None:
                by_step.setdefault((m.step, m.t), {})[m.name] = m.value
        for (s, t), values in sorted(by_step.items()):
            self.store.log_metrics(new_id, s, values, t=t)
        for g in reversed(self.store.list_generations(run_id=old_id, limit=100000)):
            if g.step is not None and g.step <= step:
                self.store.add_generation(f"run:{new_id}@{g.step}", g.prompt, g.output,
                                          params=g.params, run_id=new_id, step=g.step)

    def recover(self) -> list[Any]:
        """Runs marked running whose process is gone: replay what they wrote, then finish them
        (done/error seen) or mark them interrupted."""
        changed = []
        for run in self.store.list_runs(status="running"):
            if run.id in self._procs or pid_is_job(run.pid):
                continue
            after = self._poll_run(run)
            if after.status != run.status:
                changed.append(after)
        return changed

    # ---------------------------------------------------------------- waiting

    def wait(self, run_id: int, interval: float = 0.5, timeout: float | None = None,
             on_update: Callable[[Any, dict[str, Any]], None] | None = None) -> Any:
        """Poll (and keep the queue moving while waiting) until ``run_id`` is finished; returns
        its row. Jobs queued behind it are left for the next poller to start."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.poll()
            run = self.store.get_run(run_id)
            if not run.finished and self.start_next() is not None:
                run = self.store.get_run(run_id)
            if on_update is not None:
                on_update(run, self.progress(run_id))
            if run.finished:
                return run
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run.status} after {timeout} s")
            time.sleep(interval)

    # ---------------------------------------------------------------- helpers

    @staticmethod
    def _write_job(run_dir: Path, job: dict[str, Any]) -> None:
        tmp = run_dir / "job.json.tmp"
        tmp.write_text(json.dumps(job, indent=2, default=str), encoding="utf-8")
        os.replace(tmp, run_dir / "job.json")

    @staticmethod
    @contextmanager
    def _lock(path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _world(run: Any) -> int:
    """Processes the run's job starts (its config's num_processes; 1 for older runs)."""
    try:
        return max(1, int((run.config or {}).get("num_processes", 1) or 1))
    except (TypeError, ValueError):
        return 1


def pid_is_job(pid: int | None) -> bool:
    """True when ``pid`` is a live (not zombie) tuneloop job process."""
    if not pid:
        return False
    proc = Path(f"/proc/{pid}")
    if proc.parent.is_dir() and Path("/proc/self").exists():
        try:
            stat = (proc / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return False
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            return False
        return CHILD_MARKER in cmdline
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def link_tree(src: Path, dest: Path) -> None:
    """Hard-link a checkpoint folder (copy where links are not possible)."""
    def link_or_copy(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dest, copy_function=link_or_copy, dirs_exist_ok=True)


def environment(device: str, dataset_hash: str | None) -> dict[str, Any]:
    """What a run needs to be re-run: library versions, device and its name, dataset hash."""
    import platform
    from importlib import metadata

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for lib in ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "datasets"):
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    return {"versions": versions, "device": device, "device_name": device_name(device),
            "dataset_hash": dataset_hash, "platform": platform.platform()}


def device_name(device: str) -> str:
    if device == "cuda":
        try:
            import torch

            return torch.cuda.get_device_name(0)
        except Exception:  # noqa: BLE001
            return "cuda"
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
