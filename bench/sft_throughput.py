"""tuneloop SFT vs plain TRL SFTTrainer: non-padding tokens/s, peak memory, loss agreement.

    python bench/sft_throughput.py [--quick] [--model-config demo|smollm2-135m|qwen2-0.5b|llama3-8b]
        [--method lora|qlora|full] [--turns N] [--gradient-checkpointing] [--dtype auto|fp32|bf16]
        [--plain-defaults]

One invocation builds a random-init model of the chosen shape (throughput and memory do not
depend on the weights; nothing is downloaded), then runs each arm in its own child process so
each has its own peak memory, alternating arms when --repeats > 1 (other load on the machine
hits both alike). Both arms train the same model on the same demo SFT data with the same
hyper-parameters (method, LoRA rank/alpha/targets/template rows, lr, schedule, batch, steps,
seed, max_length, dtype, assistant-only loss); LoRA dropout is 0 so the two loss curves can be
compared step by step.

  plain     what a user writes with TRL's defaults: SFTTrainer(model, SFTConfig(...),
            peft_config=LoraConfig(...)) — batches padded to their longest example, TRL's
            default gradient checkpointing on.
  tuneloop  tuneloop.engine.sft.train with its defaults: padding-free batching (no pad
            tokens; examples kept apart by position_ids), no gradient checkpointing.

--turns N joins 1..N consecutive demo exchanges (seeded) into one multi-turn conversation, so
examples run from ~25 to ~25*N tokens: realistic lengths and length spread for the GPU shapes (the
demo rows alone are ~25 tokens, far too short to load an H100). --gradient-checkpointing turns it
on in the tuneloop arm too (plain TRL has it on by default), as the llama3-8b preset does.

--dtype (default auto: tuneloop's own choice, bf16 on a CPU with AMX/AVX512-BF16 or a bf16 GPU)
goes to both arms. --plain-defaults runs the plain arm with TRL's own precision defaults instead
(the model loaded as stored, fp32 here, bf16 autocast on), the "vs plain TRL's defaults" row.
smollm2-135m is SmolLM2-135M's shape with its real tokenizer (bench_models.py).

Prints both arms' settings, each run's tokens/s and peak memory, each arm's loss trajectory, the
loss agreement, and last `ratio X.XX` (tuneloop / plain tokens/s, best run of each).
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

# ------------------------------------------------------------------ measuring


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Meter:
    """Marks train start/end; peak memory during training only (CUDA peak, or RSS high-water
    mark reset at train start through /proc/self/clear_refs)."""

    def __init__(self) -> None:
        self.t0 = self.t1 = 0.0
        self.rss_start = 0.0
        self.cuda = False

    def start(self) -> None:
        import torch

        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated() / 2**20
        else:
            self.rss_start = rss_mb("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            self.base = self.rss_start
        self.t0 = time.perf_counter()

    def stop(self) -> dict:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        self.t1 = time.perf_counter()
        peak = torch.cuda.max_memory_allocated() / 2**20 if self.cuda else rss_mb("VmHWM")
        return {"seconds": self.t1 - self.t0, "peak_mb": peak, "train_mb": peak - self.base,
                "memory": "cuda allocated" if self.cuda else "RSS"}


# ------------------------------------------------------------------ the two arms (children)


def arm_tuneloop(job: dict) -> dict:
    from tuiapp.engine.context import JobContext
    from tuiapp.engine.train import sft
    from tuiapp.engine.train.config import SFTJobConfig

    meter, losses, tokens = Meter(), [], [0]

    class MeterSink:
        def emit(self, event):
            if event["event"] == "phase" and event["phase"] == "train":
                meter.start()
            elif event["event"] == "metrics":
                values = event["values"]
                if "loss" in values:
                    losses.append(values["loss"])
                if "train_loss_mean" in values:  # the Trainer's closing log: training is over
                    meter.result = meter.stop()
                    tokens[0] = int(values.get("num_input_tokens_seen", 0))

        def close(self):
            pass

    cfg = SFTJobConfig(**job["config"])
    result = sft.train(cfg, JobContext(output_dir=Path(job["out"]), sink=MeterSink(),
                                       base_model_path=job["model"], dataset_path=Path(job["data"])))
    return {**meter.result, "tokens": result["tokens_seen"] or tokens[0], "losses": losses}


def arm_plain(job: dict) -> dict:
    import torch
    import transformers
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tuiapp.engine import data

    c = job["config"]
    meter, losses = Meter(), []

    class MeterCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            meter.start()

        def on_log(self, args, state, control, logs=None, **kw):
            if "loss" in (logs or {}):
                losses.append(float(logs["loss"]))
            if "train_loss" in (logs or {}):
                meter.result = meter.stop()

    records = data.validate(job["data"], kind="sft").records
    tok = AutoTokenizer.from_pretrained(job["model"])
    cuda = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=job["out"], per_device_train_batch_size=c["batch_size"],
        gradient_accumulation_steps=c["grad_accum"], learning_rate=c["learning_rate"],
        lr_scheduler_type=c["lr_scheduler"], warmup_steps=c["warmup_ratio"], max_steps=c["max_steps"],
        seed=c["seed"], data_seed=c["seed"], max_length=c["max_length"], assistant_only_loss=True,
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        use_cpu=not cuda, weight_decay=c["weight_decay"],
        max_grad_norm=c["max_grad_norm"], include_num_input_tokens_seen="non_padding",
        **({} if job["plain_defaults"] else {"bf16": c["dtype"] == "bf16"}),  # TRL's default: bf16 on
    )
    peft_config = None
    if c["method"] != "full":
        peft_config = LoraConfig(r=c["lora_r"], lora_alpha=c["lora_alpha"], lora_dropout=c["lora_dropout"],
                                 target_modules="all-linear", task_type="CAUSAL_LM",
                                 trainable_token_indices=job["template_ids"] or None)
    model_kwargs = {"dtype": torch.bfloat16 if c["dtype"] == "bf16" and c["method"] != "full" else torch.float32}
    if job["plain_defaults"]:
        model_kwargs = {}  # from_pretrained's own default: the dtype the model was stored in
    if c["method"] == "qlora":
        from transformers import BitsAndBytesConfig

        model_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=model_kwargs.get("dtype", torch.bfloat16))
    transformers.set_seed(c["seed"])
    model = transformers.AutoModelForCausalLM.from_pretrained(job["model"], **model_kwargs)
    if cuda and c["method"] != "qlora":
        model.to("cuda")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(records),
                         processing_class=tok, peft_config=peft_config, callbacks=[MeterCallback()])
    if peft_config is not None:
        # TRL 1.16's fused LM head reads lm_head.bias, which PEFT 0.21's wrapper for tied
        # trainable token rows hides: without this one-line fix plain TRL crashes on this model.
        from tuiapp.engine.train.modeling import _expose_head_bias

        _expose_head_bias(trainer.model)
    trainer.train()
    return {**meter.result, "tokens": int(trainer.state.num_input_tokens_seen), "losses": losses}


# ------------------------------------------------------------------ the parent


def multi_turn_data(source: str, turns: int, out: Path, seed: int = 0) -> int:
    """Write conversations of 1..turns demo exchanges each (every source row used once)."""
    import random

    rows = [json.loads(line) for line in Path(source).read_text(encoding="utf-8").splitlines() if line.strip()]
    rng = random.Random(seed)
    written = 0
    with out.open("w", encoding="utf-8") as f:
        i = 0
        while i < len(rows):
            k = rng.randint(1, turns)
            group = rows[i:i + k]
            i += k
            messages = [m for row in group for m in row["messages"] if m["role"] != "system"]
            if group[0]["messages"][0]["role"] == "system":
                messages.insert(0, group[0]["messages"][0])
            f.write(json.dumps({"messages": messages}) + "\n")
            written += 1
    return written


def run_arm(name: str, job: dict, workdir: Path) -> dict:
    job_file = workdir / f"{name}-{time.monotonic_ns()}.json"
    job = {**job, "out": str(workdir / f"out-{name}-{time.monotonic_ns()}")}
    job_file.write_text(json.dumps(job))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, __file__, "--arm", name, "--job", str(job_file)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{name} arm failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_settings(config: dict, dtype_why: str, a) -> None:
    """Both arms' settings, so a ratio is never read without what it compares."""
    shared = (f"{config['method']} r {config['lora_r']} alpha {config['lora_alpha']} dropout "
              f"{config['lora_dropout']}, lr {config['learning_rate']} {config['lr_scheduler']} warm-up "
              f"{config['warmup_ratio']}, batch {config['batch_size']} x accum {config['grad_accum']}, "
              f"{config['max_steps']} steps, max_length {config['max_length']}, seed {config['seed']}, "
              f"assistant-only loss, {a.threads} thread(s)")
    print(f"settings (both arms): {shared}")
    plain_dtype = ("TRL defaults (model as stored, bf16 autocast on)" if a.plain_defaults
                   else f"{config['dtype']} ({dtype_why})")
    print(f"settings plain:    dtype {plain_dtype}; padded batches; gradient checkpointing on (TRL default)")
    print(f"settings tuneloop: dtype {config['dtype']} ({dtype_why}); padding-free batches; gradient "
          f"checkpointing {'on' if config['gradient_checkpointing'] else 'off'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps, one run per arm")
    ap.add_argument("--model-config", default="demo", choices=sorted(SHAPES))
    ap.add_argument("--method", default="lora", choices=("lora", "qlora", "full"))
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps per run (default 40, quick 12)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=None, help="runs per arm, alternating (default 2, quick 1)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads per run")
    ap.add_argument("--turns", type=int, default=1, help="demo exchanges per conversation, 1..N (default 1)")
    ap.add_argument("--gradient-checkpointing", action="store_true",
                    help="checkpointing in the tuneloop arm too (plain TRL's default is on)")
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
        out = (arm_tuneloop if a.arm == "tuneloop" else arm_plain)(job)
        print(json.dumps(out))
        return

    import torch
    import transformers
    import trl

    from tuiapp import paths

    steps = a.steps or (12 if a.quick else 40)
    repeats = a.repeats or (1 if a.quick else 2)
    cuda = torch.cuda.is_available()
    dtype, dtype_why = resolve_dtype(a.dtype, "cuda" if cuda else "cpu")
    config = dict(base_model="bench", dataset=str(paths.DEMO_DIR / "sft.jsonl"), method=a.method,
                  lora_r=16, lora_alpha=32, lora_dropout=0.0, max_length=a.max_length, max_steps=steps,
                  batch_size=a.batch_size, grad_accum=1, learning_rate=1e-3, lr_scheduler="cosine",
                  warmup_ratio=0.1, weight_decay=0.0, max_grad_norm=1.0, seed=42, eval_split=0.0,
                  logging_steps=1, save_steps=10**6, eval_steps=10**6, sample_prompts=[],
                  device="cuda" if cuda else "cpu", dtype=dtype,
                  gradient_checkpointing=a.gradient_checkpointing)
    with tempfile.TemporaryDirectory(prefix="tuneloop-bench-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        template_ids = build_model(a.model_config, work / "model")
        if a.turns > 1:
            n = multi_turn_data(config["dataset"], a.turns, work / "multi_turn.jsonl")
            config["dataset"] = str(work / "multi_turn.jsonl")
            print(f"data: {n} conversations of 1-{a.turns} demo exchanges, max_length {a.max_length}")
        print(f"model {a.model_config} ({a.method}) built in {time.perf_counter() - t:.0f}s on "
              f"{'cuda ' + torch.cuda.get_device_name() if cuda else f'cpu x{a.threads} threads'}; "
              f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}")
        job = {"config": config, "model": str(work / "model"), "data": config["dataset"],
               "template_ids": template_ids, "threads": a.threads, "plain_defaults": a.plain_defaults}
        print_settings(config, dtype_why, a)
        runs: dict[str, list[dict]] = {"plain": [], "tuneloop": []}
        for i in range(repeats):
            for name in ("plain", "tuneloop"):
                r = run_arm(name, job, work)
                r["tps"] = r["tokens"] / r["seconds"]
                runs[name].append(r)
                print(f"  run {i + 1} {name:8s} {r['tokens']:7d} tokens in {r['seconds']:6.1f}s = "
                      f"{r['tps']:8.1f} tok/s  peak {r['memory']} {r['peak_mb']:8.1f} MiB "
                      f"(+{r['train_mb']:.1f} MiB during training)")

    best = {k: max(v, key=lambda r: r["tps"]) for k, v in runs.items()}
    p, q = best["plain"], best["tuneloop"]
    for name, r in best.items():
        print(f"{name:8s}  non-padding tokens/s {r['tps']:9.1f}   peak {r['memory']} {r['peak_mb']:8.1f} MiB   "
              f"training +{r['train_mb']:.1f} MiB")
    for name, r in best.items():
        print(f"loss {name:8s} {trajectory(r['losses'])}")
    n = min(len(p["losses"]), len(q["losses"]))
    diffs = [abs(x - y) for x, y in zip(p["losses"][:n], q["losses"][:n], strict=True)]
    print(f"loss per step (plain → tuneloop): first {p['losses'][0]:.4f} → {q['losses'][0]:.4f}, "
          f"last {p['losses'][n - 1]:.4f} → {q['losses'][n - 1]:.4f}; max |diff| over {n} steps "
          f"{max(diffs):.2e}")
    print(f"memory ratio (tuneloop / plain): peak {q['peak_mb'] / p['peak_mb']:.2f}x, "
          f"training increment {q['train_mb'] / max(p['train_mb'], 1e-9):.2f}x")
    print(f"ratio {q['tps'] / p['tps']:.2f}")


if __name__ == "__main__":
    main()
