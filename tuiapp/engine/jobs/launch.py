"""Several processes per job (issue 21): the ``accelerate launch`` command, what each rank does
differently, and how the runner tells which rank failed.

With ``num_processes > 1`` the runner does not start ``python -m tuiapp.engine.jobs.child`` but

    python -m accelerate.commands.launch --multi_gpu --num_processes N ... \\
        --module tuiapp.engine.jobs.child RUN_DIR

accelerate hands that to torchrun's elastic agent, which starts N ranks (each in its own session)
and, when one dies, stops the others and prints which rank failed first. ``--multi_gpu`` is also
the right flag on CPU: accelerate's ``--cpu`` launcher starts one process unless MPI is there,
while the torchrun path starts N; each rank's Trainer then sees ``use_cpu`` plus WORLD_SIZE and
joins a gloo group (accelerate ``state._prepare_backend``). On CUDA the same group uses NCCL.

Each rank writes ``logs/rank-N.json`` (pid; exit code when it ends) and its stderr to
``logs/rank-N.stderr.log``; only rank 0 writes ``events.jsonl`` (the others' events go to
``logs/rank-N.events.jsonl``), so the runner ingests one stream. Cancel stays a STOP file, but the
ranks agree on it with one all-reduce per step (``GroupJobContext``): they stop at the same step,
so the last checkpoint is written once and nobody waits in a collective for a peer that left.
No Textual import; torch only inside functions that run in a rank.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from tuiapp.engine.context import JobContext

CHILD_MODULE = "tuiapp.engine.jobs.child"
LOGS = "logs"
# ChildFailedError's summary (torch.distributed.elastic.multiprocessing.errors): the first failure.
_ROOT_RE = re.compile(r"Root Cause.*?rank\s*:\s*(\d+)\s*\(local_rank:\s*\d+\)\s*\n\s*exitcode\s*:\s*"
                      r"(-?\d+)", re.S)


# ---------------------------------------------------------------- the command


def mixed_precision(config: Any) -> str:
    """accelerate's --mixed_precision: auto follows the job's dtype."""
    mp = getattr(config, "mixed_precision", "auto")
    if mp != "auto":
        return mp
    return config.dtype if config.dtype in ("bf16", "fp16") else "no"


def strategy_flags(config: Any) -> list[str]:
    if config.distributed == "fsdp":
        # Sharded state dicts: each rank saves its own shard (no gather of the full model on one
        # device); a checkpoint then only resumes on the same world size, which resume enforces.
        # use_orig_params keeps LoRA's frozen/trainable split visible to the optimiser.
        return ["--use_fsdp", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
                "--fsdp_sharding_strategy", "FULL_SHARD", "--fsdp_state_dict_type",
                "SHARDED_STATE_DICT", "--fsdp_use_orig_params", "true"]
    if config.distributed == "deepspeed":
        return ["--use_deepspeed", "--zero_stage", str(config.zero_stage)]
    return ["--multi_gpu"]


def launch_command(config: Any, run_dir: str | Path, python: str = sys.executable, *,
                   num_machines: int = 1, machine_rank: int = 0, main_address: str | None = None,
                   main_port: int | None = None, device: str = "cpu") -> list[str]:
    """The exact argv that starts ``config.num_processes`` ranks per machine on ``run_dir``.

    One machine: port 0 lets accelerate pick a free port (two jobs' groups never collide).
    Several machines: the same command on each with its own ``machine_rank``; all reach rank 0
    at ``main_address:main_port`` and share ``run_dir`` on a common file system."""
    n = int(config.num_processes)
    cmd = [python, "-m", "accelerate.commands.launch"]
    if getattr(config, "accelerate_config", ""):
        cmd += ["--config_file", str(Path(config.accelerate_config).expanduser())]
    cmd += strategy_flags(config)
    cmd += ["--num_processes", str(n * num_machines), "--num_machines", str(num_machines),
            "--mixed_precision", mixed_precision(config), "--dynamo_backend", "no"]
    if num_machines > 1:
        if not main_address:
            raise ValueError("a launch on several machines needs the main address (rank 0's host)")
        cmd += ["--machine_rank", str(machine_rank), "--main_process_ip", main_address,
                "--main_process_port", str(main_port or 29500)]
    else:
        cmd += ["--main_process_port", str(main_port or 0)]
    if device == "cpu":
        threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // n))
        cmd += ["--num_cpu_threads_per_process", threads]
    cmd += ["--monitor_interval", "0.5", "--module", CHILD_MODULE, str(run_dir)]
    return cmd


def accelerate_yaml(config: Any, *, num_machines: int = 1, machine_rank: int = 0,
                    main_address: str | None = None, main_port: int = 29500) -> str:
    """The same launch as an accelerate config file (what `accelerate config` would write)."""
    kind = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed": "DEEPSPEED"}[config.distributed]
    lines = ["compute_environment: LOCAL_MACHINE", f"distributed_type: {kind}",
             f"mixed_precision: '{mixed_precision(config)}'", f"num_machines: {num_machines}",
             f"num_processes: {int(config.num_processes) * num_machines}",
             f"machine_rank: {machine_rank}"]
    if num_machines > 1:
        lines += [f"main_process_ip: {main_address}", f"main_process_port: {main_port}"]
    if config.distributed == "fsdp":
        lines += ["fsdp_config:", "  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP",
                  "  fsdp_sharding_strategy: FULL_SHARD", "  fsdp_state_dict_type: SHARDED_STATE_DICT",
                  "  fsdp_use_orig_params: true"]
    elif config.distributed == "deepspeed":
        lines += ["deepspeed_config:", f"  zero_stage: {config.zero_stage}"]
    return "\n".join(lines) + "\n"


def shell_line(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


# ---------------------------------------------------------------- pre-flight


def check_processes(report: Any, config: Any) -> None:
    """World size and global batch on the report; refusals in words for what cannot run."""
    n = int(getattr(config, "num_processes", 1) or 1)
    strategy = getattr(config, "distributed", "ddp")
    if strategy == "deepspeed":
        strategy = f"deepspeed ZeRO-{getattr(config, 'zero_stage', 2)}"
    report.distributed = {
        "num_processes": n, "strategy": strategy if n > 1 else "single process",
        "backend": "nccl" if report.device == "cuda" else "gloo",
        "per_device_batch": config.batch_size, "grad_accum": config.grad_accum,
        "global_batch": config.batch_size * n * config.grad_accum,
    }
    if n == 1:
        return
    if report.device == "cuda":
        visible = visible_gpus()
        report.distributed["visible_devices"] = visible
        if n > visible:
            report.refusals.append(
                f"num_processes: {n} processes need {n} GPUs but {visible} "
                f"{'is' if visible == 1 else 'are'} visible (CUDA_VISIBLE_DEVICES="
                f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); set num_processes="
                f"{max(visible, 1)}")
    else:
        cores = os.cpu_count() or 1
        report.distributed["visible_devices"] = cores
        if n > cores:
            report.refusals.append(f"num_processes: {n} CPU processes need {n} cores but this "
                                   f"machine has {cores}; set num_processes to at most {cores}")
    if getattr(config, "distributed", "ddp") == "deepspeed":
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            report.refusals.append("distributed: deepspeed is not installed (pip install "
                                   "deepspeed), or use distributed=ddp or fsdp")
    path = getattr(config, "accelerate_config", "")
    if path and not Path(path).expanduser().is_file():
        report.refusals.append(f"accelerate_config: {path} does not exist")
    if report.steps and config.max_steps <= 0:
        report.steps = max(1, -(-report.steps // n))  # each step sees n x the examples


def visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001
        return 0


def share_memory(report: Any, config: Any) -> None:
    """Per-device memory: DDP keeps a full copy on every device; FSDP shards weights, gradients
    and optimiser state; ZeRO-1 shards the optimiser state, ZeRO-2 also gradients, ZeRO-3 also
    weights. Activations and logits stay per device (each device runs its own batch)."""
    n = int(getattr(config, "num_processes", 1) or 1)
    m = report.memory
    if n == 1 or not m:
        return
    strategy, stage = getattr(config, "distributed", "ddp"), getattr(config, "zero_stage", 2)
    sharded: set[str] = set()
    if strategy == "fsdp":
        sharded = {"weights_bytes", "grads_bytes", "optimizer_bytes"}
    elif strategy == "deepspeed":
        sharded = {k for k, s in (("optimizer_bytes", 1), ("grads_bytes", 2), ("weights_bytes", 3))
                   if stage >= s}
    saved = sum(int(m.get(k, 0) or 0) * (n - 1) // n for k in sharded)
    m["single_process_bytes"] = m["estimate_bytes"]
    m["estimate_bytes"] = int(m["estimate_bytes"] - saved)
    m["per_device"] = True


# ---------------------------------------------------------------- inside a rank


def rank_env() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) for a plain child."""
    return int(os.environ.get("RANK", "0") or 0), int(os.environ.get("WORLD_SIZE", "1") or 1)


def logs_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / LOGS


def start_rank(run_dir: Path, rank: int) -> None:
    """This rank's stderr goes to logs/rank-N.stderr.log (Python and C++ warnings, NCCL/gloo
    errors, tracebacks); its pid goes to logs/rank-N.json so the runner can stop it."""
    logs = logs_dir(run_dir)
    logs.mkdir(parents=True, exist_ok=True)
    err = open(logs / f"rank-{rank}.stderr.log", "ab", buffering=0)  # noqa: SIM115 - lives as fd 2
    os.dup2(err.fileno(), 2)
    _write_rank(run_dir, rank, {"rank": rank, "pid": os.getpid(), "started": time.time()})


def share_dataset_cache(run_dir: Path) -> None:
    """In-memory ``datasets`` (our rows go through ``Dataset.from_list``) put map results in a
    per-process temp folder under a random name. TRL's DPO pre-computation writes the reference
    log-probs on rank 0 and has every rank read them back by the fingerprint it broadcast, so
    rank 1 looks in its own empty temp folder and fails. In a rank, such caches go to one folder
    of the run under the fingerprint's name instead: the same path on every rank. Writes there
    are atomic (datasets writes a temp file and renames it) and same-fingerprint contents equal."""
    from datasets import arrow_dataset
    from datasets.fingerprint import is_caching_enabled

    folder = logs_dir(run_dir) / "datasets-cache"
    folder.mkdir(parents=True, exist_ok=True)
    original = arrow_dataset.Dataset._get_cache_file_path

    def shared_path(self, fingerprint):
        if is_caching_enabled() and self.cache_files:
            return original(self, fingerprint)
        return str(folder / f"cache-{fingerprint}.arrow")

    arrow_dataset.Dataset._get_cache_file_path = shared_path


def end_rank(run_dir: Path, rank: int, code: int, error: dict[str, Any] | None = None) -> None:
    info = read_rank(run_dir, rank) or {"rank": rank, "pid": os.getpid()}
    info.update(exit=code, ended=time.time(), **({"error": error} if error else {}))
    _write_rank(run_dir, rank, info)


def _write_rank(run_dir: Path, rank: int, info: dict[str, Any]) -> None:
    path = logs_dir(run_dir) / f"rank-{rank}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info), encoding="utf-8")
    os.replace(tmp, path)


def read_rank(run_dir: str | Path, rank: int) -> dict[str, Any] | None:
    try:
        return json.loads((logs_dir(run_dir) / f"rank-{rank}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def rank_files(run_dir: str | Path) -> dict[int, dict[str, Any]]:
    out = {}
    for path in logs_dir(run_dir).glob("rank-*.json"):
        try:
            out[int(path.stem.split("-")[1])] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, IndexError):
            continue
    return out


class GroupJobContext(JobContext):
    """A rank's context: the STOP file is read by every rank and OR-ed across the group, so all
    ranks stop at the same step (one checks the file a moment after another otherwise)."""

    def stop_requested(self) -> bool:
        local = self.stop_file.exists()
        try:
            import torch
            import torch.distributed as dist
        except ImportError:
            return local
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return local
        device = "cpu"
        if "nccl" in str(dist.get_backend()) and torch.cuda.is_available():
            device = f"cuda:{torch.cuda.current_device()}"
        flag = torch.tensor([1.0 if local else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)


def checkpoint_world_size(checkpoint: str | Path) -> int | None:
    """How many ranks wrote a Trainer checkpoint: one rng_state_R.pth each (rng_state.pth: one)."""
    folder = Path(checkpoint)
    per_rank = list(folder.glob("rng_state_*.pth"))
    if per_rank:
        return len(per_rank)
    return 1 if (folder / "rng_state.pth").exists() else None


def world_size_refusal(checkpoint: str | Path, config: Any) -> str | None:
    """Why a checkpoint cannot continue on this many processes (None: it can)."""
    saved = checkpoint_world_size(checkpoint)
    wanted = int(getattr(config, "num_processes", 1) or 1)
    if saved is None or saved == wanted:
        return None
    why = ("its FSDP/ZeRO shards cannot be resharded here" if getattr(config, "distributed", "ddp")
           in ("fsdp", "deepspeed") else "its per-rank random state and data order belong to "
           f"{saved} process(es), so the run would not continue the same trajectory")
    return (f"{Path(checkpoint).name} was written by {saved} process(es) and this run asks for "
            f"{wanted}: {why}; resume with num_processes={saved}, or start a new run")


# ---------------------------------------------------------------- the runner's side


def group_failure(run_dir: str | Path, rc: int | None) -> str | None:
    """Which rank failed and why, from the elastic agent's summary in child.log, else from the
    rank files (a rank that never wrote its exit code died without Python noticing)."""
    run_dir = Path(run_dir)
    ranks = rank_files(run_dir)
    try:
        text = (run_dir / "child.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    m = _ROOT_RE.search(text)
    if m:
        rank, code = int(m.group(1)), int(m.group(2))
    else:
        vanished = sorted(r for r, info in ranks.items() if "exit" not in info)
        failed = sorted(r for r, info in ranks.items() if info.get("exit") not in (None, 0, 3))
        if failed:
            rank, code = failed[0], int(ranks[failed[0]]["exit"])
        elif rc is not None and rc < 0:
            return None  # the launcher itself was killed before it could say: no rank to blame
        elif vanished and rc not in (0, None):
            rank, code = vanished[0], -signal.SIGKILL
        else:
            return None
    log = logs_dir(run_dir) / f"rank-{rank}.stderr.log"
    error = (ranks.get(rank) or {}).get("error") or {}
    if code < 0:
        try:
            sig = signal.Signals(-code).name
        except ValueError:
            sig = f"signal {-code}"
        why = f"was killed by {sig}"
        if -code == signal.SIGKILL:
            why += " (if nobody killed it, the machine may have run out of memory)"
    elif error.get("message"):
        why = f"failed: {error['message']}"
    else:
        why = f"exited with code {code}"
    return (f"rank {rank} of the process group {why}; the other ranks were stopped. "
            f"Its stderr: {log}")


def stop_group(run_dir: str | Path, launcher_pid: int | None, grace: float = 5.0) -> None:
    """Stop the launcher and every rank still alive: SIGTERM, then SIGKILL after ``grace``. Each
    rank leads its own session (torchrun starts them so), so a kill of the launcher's process
    group alone would not reach them; their pids are in logs/rank-N.json."""
    # Only processes still running this run's child: a pid from a rank file may have been
    # reused by an unrelated process since (a runner that recovers the run days later).
    pids = [int(info["pid"]) for info in rank_files(run_dir).values()
            if info.get("pid") and "exit" not in info and _runs_child(int(info["pid"]), run_dir)]
    launcher = [launcher_pid] if launcher_pid and _runs_child(launcher_pid, run_dir) else []
    targets = launcher + pids
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in targets if _alive(p)]
        if not alive:
            return
        for pid in alive:
            try:
                os.killpg(pid, sig) if pid in pids else os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        end = time.monotonic() + grace
        while time.monotonic() < end and any(_alive(p) for p in alive):
            time.sleep(0.1)


def _runs_child(pid: int, run_dir: str | Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return False
    return CHILD_MODULE in cmdline and str(Path(run_dir)) in cmdline


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
