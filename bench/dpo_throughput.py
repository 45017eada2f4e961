"""tuneloop DPO vs plain TRL DPOTrainer: preference pairs per second with identical settings.

    python bench/dpo_throughput.py [--quick] [--model-config demo|smollm2-135m|qwen2-0.5b] [--repeats N]
        [--dtype auto|fp32|bf16] [--plain-defaults]

One invocation builds a random-init model of the chosen shape (speed does not depend on the
weights; nothing is downloaded) and runs each arm in its own child process, alternating arms
when --repeats > 1 so load from other jobs on the machine hits both alike. Both arms train
LoRA (same rank/alpha/targets, dropout 0) with the sigmoid DPO loss, the same beta, lr,
schedule, batch, steps, seed, max_length and dtype, on the same pairs of the demo preference
set rendered through the same chat template, one epoch over exactly steps × batch pairs.

  plain     what a user writes with TRL's defaults: DPOTrainer(model, args=DPOConfig(...),
            peft_config=LoraConfig(...)) — a reference forward pass every step (adapter
            disabled), TRL's default gradient checkpointing on (--plain-no-checkpointing turns
            it off, to isolate what the precomputed reference is worth by itself).
  tuneloop  tuneloop's engine.dpo code path with its defaults: reference log-probs computed
            once before training (one no-grad pass per pair instead of one per step), no
            gradient checkpointing.

The clock runs from building the trainer (tokenisation and, for tuneloop, the reference pass
included) to the end of training; model loading is not timed in either arm. --dtype (default
auto: tuneloop's own choice, bf16 on a CPU with AMX/AVX512-BF16 or a bf16 GPU) goes to both arms;
--plain-defaults runs the plain arm with TRL's own precision defaults instead (model as stored,
bf16 autocast on). smollm2-135m is SmolLM2-135M's shape with its real tokenizer (bench_models.py).

Prints both arms' settings, each run's pairs/s and peak memory, each arm's loss trajectory, the
loss agreement, and last `ratio X.XX` (tuneloop / plain pairs/s, best run of each).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_models import SHAPES, build_model, resolve_dtype, trajectory  # noqa: E402


def _rss_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Clock:
    """Wall time and peak memory between start() and stop() (CUDA allocator peak, or the RSS
    high-water mark reset at start through /proc/self/clear_refs)."""

    def start(self) -> None:
        import torch

        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated() / 2**20
        else:
            self.base = _rss_mb("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")
        self.t0 = time.perf_counter()

    def stop(self) -> dict:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - self.t0
        peak = torch.cuda.max_memory_allocated() / 2**20 if self.cuda else _rss_mb("VmHWM")
        return {"seconds": seconds, "peak_mb": peak, "train_mb": peak - self.base,
                "memory": "cuda allocated" if self.cuda else "RSS"}


def _loss_logger():
    from transformers import TrainerCallback

    losses: list[float] = []

    class LossLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if "loss" in (logs or {}):
                losses.append(float(logs["loss"]))

    return losses, LossLog()


# ------------------------------------------------------------------ the two arms (children)


def arm_tuneloop(job: dict) -> dict:
    from tuiapp.engine.context import JobContext
    from tuiapp.engine.events import ListSink
    from tuiapp.engine.train import dpo
    from tuiapp.engine.train.config import DPOJobConfig

    cfg = DPOJobConfig(**{**job["config"], "precompute_ref_log_probs": job["precompute"],
                          "padding_free": job.get("padding_free", True)})
    ctx = JobContext(Path(job["out"]), sink=ListSink(), dataset_path=Path(job["data"]),
                     base_model_path=job["model"])
    rows = dpo.load_records(cfg, ctx, "preference")          # what dpo.train does, with a clock
    model, tokenizer, info = dpo._load(cfg, ctx)
    # Imported before the clock as the plain arm imports them (build_dpo_trainer imports lazily).
    from datasets import Dataset  # noqa: F401
    from trl import DPOConfig, DPOTrainer  # noqa: F401

    from tuiapp.engine.train import callbacks  # noqa: F401
    losses, log = _loss_logger()
    clock = Clock()
    clock.start()
    trainer = dpo.build_dpo_trainer(cfg, ctx, model, tokenizer, rows, [], info["device"], extra_callbacks=[log])
    trainer.train()
    return {**clock.stop(), "pairs": trainer.state.global_step * cfg.batch_size, "losses": losses}


def arm_plain(job: dict) -> dict:
    import torch
    import transformers
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from tuiapp.engine.context import JobContext
    from tuiapp.engine.train import dpo, modeling
    from tuiapp.engine.train.config import DPOJobConfig

    c = job["config"]
    cfg = DPOJobConfig(**c)
    rows = dpo.load_records(cfg, JobContext(Path(job["out"]), dataset_path=Path(job["data"])), "preference")
    tok = modeling.load_tokenizer(job["model"])              # same tokenizer and chat template
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if c["dtype"] == "bf16" else torch.float32
    transformers.set_seed(c["seed"])
    model = transformers.AutoModelForCausalLM.from_pretrained(
        job["model"], **({} if job["plain_defaults"] else {"dtype": dtype}))  # default: as stored
    if cuda:
        model.to("cuda")
    args = DPOConfig(
        output_dir=job["out"], per_device_train_batch_size=c["batch_size"],
        gradient_accumulation_steps=c["grad_accum"], learning_rate=c["learning_rate"],
        lr_scheduler_type=c["lr_scheduler"], warmup_steps=c["warmup_ratio"], max_steps=c["max_steps"],
        seed=c["seed"], data_seed=c["seed"], max_length=c["max_length"], beta=c["beta"],
        loss_type=["sigmoid"], logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        use_cpu=not cuda, weight_decay=c["weight_decay"], max_grad_norm=c["max_grad_norm"],
        **({} if job["plain_defaults"] else {"bf16": c["dtype"] == "bf16"}),  # TRL's default: bf16 on
        **({} if job["plain_checkpointing"] else {"gradient_checkpointing": False}),
    )
    peft_config = LoraConfig(r=c["lora_r"], lora_alpha=c["lora_alpha"], lora_dropout=c["lora_dropout"],
                             target_modules="all-linear", task_type="CAUSAL_LM")
    losses, log = _loss_logger()
    clock = Clock()
    clock.start()
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=peft_config, callbacks=[log])
    trainer.train()
    return {**clock.stop(), "pairs": trainer.state.global_step * c["batch_size"], "losses": losses}


# ------------------------------------------------------------------ the parent


def write_pairs(n: int, path: Path) -> None:
    from tuiapp import paths

    lines = (paths.DEMO_DIR / "preferences.jsonl").read_text(encoding="utf-8").splitlines()
    if n > len(lines):
        sys.exit(f"{n} pairs asked, the demo set has {len(lines)}; lower --steps or --batch-size")
    path.write_text("\n".join(lines[:n]) + "\n", encoding="utf-8")


def run_arm(name: str, job: dict, workdir: Path) -> dict:
    stamp = time.monotonic_ns()
    job = {**job, "out": str(workdir / f"out-{name}-{stamp}")}
    job_file = workdir / f"{name}-{stamp}.json"
    job_file.write_text(json.dumps(job))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore",
           "OMP_NUM_THREADS": str(job["threads"]), "TQDM_DISABLE": "1",
           "HF_DATASETS_CACHE": str(workdir / f"cache-{stamp}")}  # no cached reference pass reused
    proc = subprocess.run([sys.executable, __file__, "--arm", name, "--job", str(job_file)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{name} arm failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 steps, two runs per arm")
    ap.add_argument("--model-config", default="demo", choices=sorted(SHAPES))
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps per run (default 30, quick 10)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=None, help="runs per arm, alternating (default 3, quick 2)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per run (the CPU here is 2 shared cores)")
    ap.add_argument("--plain-no-checkpointing", action="store_true",
                    help="turn TRL's default gradient checkpointing off in the plain arm too (isolates "
                         "what the precomputed reference log-probs alone are worth)")
    ap.add_argument("--no-precompute", action="store_true",
                    help="tuneloop arm without precomputed reference log-probs (what they are worth)")
    ap.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16"),
                    help="both arms' dtype (auto: tuneloop's own choice for this machine)")
    ap.add_argument("--plain-defaults", action="store_true",
                    help="plain arm with TRL's own precision defaults, not the shared --dtype")
    ap.add_argument("--arm", help=argparse.SUPPRESS)
    ap.add_argument("--job", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.arm:  # a child: run one arm, print its JSON result last
        import torch

        job = json.loads(Path(a.job).read_text())
        torch.set_num_threads(job["threads"])
        print(json.dumps((arm_tuneloop if a.arm == "tuneloop" else arm_plain)(job)))
        return

    import peft
    import torch
    import transformers
    import trl

    steps = a.steps or (10 if a.quick else 30)
    repeats = a.repeats or (2 if a.quick else 3)
    cuda = torch.cuda.is_available()
    dtype, dtype_why = resolve_dtype(a.dtype, "cuda" if cuda else "cpu")
    with tempfile.TemporaryDirectory(prefix="tuneloop-dpo-bench-") as tmp:
        work = Path(tmp)
        pairs_file = work / "pairs.jsonl"
        write_pairs(steps * a.batch_size, pairs_file)
        config = dict(base_model=str(work / "model"), dataset=str(pairs_file), method="lora", lora_r=16,
                      lora_alpha=32, lora_dropout=0.0, max_length=a.max_length, max_steps=steps,
                      batch_size=a.batch_size, grad_accum=1, learning_rate=5e-4, lr_scheduler="cosine",
                      warmup_ratio=0.1, weight_decay=0.0, max_grad_norm=1.0, seed=42, eval_split=0.0,
                      logging_steps=1, save_steps=10**6, eval_steps=10**6, sample_prompts=[], beta=0.1,
                      loss_type="sigmoid", device="cuda" if cuda else "cpu", dtype=dtype)
        t = time.perf_counter()
        build_model(a.model_config, work / "model")
        where = f"cuda {torch.cuda.get_device_name()}" if cuda else f"cpu x{a.threads} threads"
        print(f"model {a.model_config} built in {time.perf_counter() - t:.0f}s on {where}; {steps} steps x "
              f"{a.batch_size} pairs, plain checkpointing {'off' if a.plain_no_checkpointing else 'on'}, tuneloop precompute "
              f"{'off' if a.no_precompute else 'on'}, max_length {a.max_length}; torch {torch.__version__}, transformers "
              f"{transformers.__version__}, trl {trl.__version__}, peft {peft.__version__}")
        job = {"config": config, "model": str(work / "model"), "data": str(pairs_file), "threads": a.threads,
               "plain_checkpointing": not a.plain_no_checkpointing, "precompute": not a.no_precompute,
               "plain_defaults": a.plain_defaults}
        shared = (f"lora r 16 alpha 32 dropout 0, sigmoid beta 0.1, lr 5e-4 cosine warm-up 0.1, {steps} "
                  f"steps x {a.batch_size} pairs, max_length {a.max_length}, seed 42, {a.threads} thread(s)")
        plain_dtype = ("TRL defaults (model as stored, bf16 autocast on)" if a.plain_defaults
                       else f"{dtype} ({dtype_why})")
        print(f"settings (both arms): {shared}")
        print(f"settings plain:    dtype {plain_dtype}; reference forward every step; padded batches; "
              f"gradient checkpointing {'off' if a.plain_no_checkpointing else 'on (TRL default)'}")
        print(f"settings tuneloop: dtype {dtype} ({dtype_why}); reference log-probs "
              f"{'every step' if a.no_precompute else 'precomputed once'}; padding-free batches; "
              "gradient checkpointing off")
        runs: dict[str, list[dict]] = {"plain": [], "tuneloop": []}
        for i in range(repeats):
            for name in ("plain", "tuneloop"):
                r = run_arm(name, job, work)
                r["pps"] = r["pairs"] / r["seconds"]
                runs[name].append(r)
                print(f"  run {i + 1} {name:8s} {r['pairs']:5d} pairs in {r['seconds']:6.1f}s = {r['pps']:7.2f} "
                      f"pairs/s  peak {r['memory']} {r['peak_mb']:8.1f} MiB (+{r['train_mb']:.1f} MiB)")

    best = {k: max(v, key=lambda r: r["pps"]) for k, v in runs.items()}
    p, q = best["plain"], best["tuneloop"]
    for name, r in best.items():
        print(f"{name:8s}  pairs/s {r['pps']:8.2f}   peak {r['memory']} {r['peak_mb']:8.1f} MiB   "
              f"training +{r['train_mb']:.1f} MiB")
    for name, r in best.items():
        print(f"loss {name:8s} {trajectory(r['losses'])}")
    n = min(len(p["losses"]), len(q["losses"]))
    if n:
        diffs = [abs(x - y) for x, y in zip(p["losses"][:n], q["losses"][:n], strict=True)]
        print(f"loss per step (plain → tuneloop): first {p['losses'][0]:.4f} → {q['losses'][0]:.4f}, "
              f"last {p['losses'][n - 1]:.4f} → {q['losses'][n - 1]:.4f}; max |diff| over {n} steps "
              f"{max(diffs):.2e}")
    per_run = [t["pps"] / s["pps"] for s, t in zip(runs["plain"], runs["tuneloop"], strict=True)]
    print("per-run ratios: " + ", ".join(f"{x:.2f}" for x in per_run))
    print(f"ratio {q['pps'] / p['pps']:.2f}")


if __name__ == "__main__":
    main()
