"""F16 GGUF export speed and memory against a plain copy of the same safetensors bytes.

    python bench/export_speed.py --quick          # small random-init Llama (~25M params), seconds
    python bench/export_speed.py --full           # random-init Qwen2-0.5B shapes (~1 GB fp16)
    python bench/export_speed.py --model DIR      # an existing HF folder (e.g. the demo base)

Each side runs in its own child process so its peak RSS is its own (best of --repeat runs):
  baseline  read the model's .safetensors files in 8 MiB chunks and write the bytes out again;
  export    tuiapp.engine.export.gguf.write_gguf(DIR, OUT, "f16").
Prints both wall times, peak RSS (and growth over the child's RSS right before the work, i.e.
with its imports loaded) against the model's size; the last line is ``ratio X.XX`` =
export time / baseline time (goal <= 2.0; RSS growth goal <= 1.1x model size).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TOKENIZER = ROOT / "sample_data" / "demo" / "tokenizer"

SHAPES = {
    # random-init Llama with the demo tokenizer
    "quick": dict(arch="llama", vocab_size=None, hidden_size=512, intermediate_size=1408,
                  num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4),
    # Qwen2-0.5B's published shapes (the demo tokenizer's ids padded to its vocab)
    "full": dict(arch="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
                 num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2),
}


def _rss_mib() -> float:
    """Peak RSS of this process (VmHWM: unlike ru_maxrss it is not inherited across exec)."""
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build_model(kind: str, folder: Path) -> Path:
    import torch
    from transformers import (
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(0)
    shape = dict(SHAPES[kind])
    arch = shape.pop("arch")
    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    shape["vocab_size"] = shape["vocab_size"] or len(tok)
    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM),
                             "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
    config = config_cls(**shape, max_position_embeddings=2048, tie_word_embeddings=True)
    with torch.device("cpu"):
        model = model_cls(config).to(torch.float16)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def child_baseline(model_dir: str, out_dir: str) -> dict:
    files = sorted(Path(model_dir).glob("*.safetensors"))
    before = _current_rss_mib()
    t0 = time.perf_counter()
    buf = bytearray(8 << 20)
    view = memoryview(buf)
    for file in files:
        with open(file, "rb", buffering=0) as src, open(Path(out_dir) / file.name, "wb", buffering=0) as dst:
            while n := src.readinto(buf):
                dst.write(view[:n])
            dst.flush()
            os.fsync(dst.fileno())
    return {"seconds": time.perf_counter() - t0, "rss_before_mib": before, "peak_rss_mib": _rss_mib()}


def child_export(model_dir: str, out_dir: str) -> dict:
    import gguf  # noqa: F401 - imports are start-up, not export work (timed for neither side)

    from tuiapp.engine.export.gguf import write_gguf

    out = Path(out_dir) / "model-f16.gguf"
    before = _current_rss_mib()
    t0 = time.perf_counter()
    info = write_gguf(model_dir, out, "f16")
    with open(out, "rb+") as f:
        os.fsync(f.fileno())
    return {"seconds": time.perf_counter() - t0, "rss_before_mib": before, "peak_rss_mib": _rss_mib(),
            "gguf_bytes": info["size_bytes"]}


def run_child(side: str, model_dir, out_dir) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.run([sys.executable, __file__, "--child", side, str(model_dir), str(out_dir)],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        sys.exit(f"{side} child failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]) if side != "build" else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="small random-init model (default)")
    group.add_argument("--full", action="store_true", help="random-init Qwen2-0.5B shapes (~1 GB)")
    group.add_argument("--model", help="benchmark an existing HF model folder")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; the fastest counts")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, model_dir, out_dir = args.child
        if side == "build":
            build_model(model_dir, Path(out_dir))
            return
        result = (child_baseline if side == "baseline" else child_export)(model_dir, out_dir)
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory(prefix="tuneloop-bench-") as tmp:
        tmp = Path(tmp)
        if args.model:
            model_dir, label = Path(args.model), args.model
        else:
            kind = "full" if args.full else "quick"
            model_dir, label = tmp / "model", f"random-init {kind}"
            run_child("build", kind, model_dir)  # torch stays out of this process
        model_mib = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) / 2**20
        results: dict[str, dict] = {}
        for rep in range(args.repeat):  # alternate sides; keep each side's fastest run
            for side in ("baseline", "export"):
                out_dir = tmp / f"out-{side}-{rep}"
                out_dir.mkdir()
                r = run_child(side, model_dir, out_dir)
                if side not in results or r["seconds"] < results[side]["seconds"]:
                    results[side] = r
                for f in out_dir.iterdir():
                    f.unlink()
        base, exp = results["baseline"], results["export"]
        print(f"model: {label}, safetensors {model_mib:.1f} MiB, best of {args.repeat} per side")
        for side, r in results.items():
            growth = r["peak_rss_mib"] - r["rss_before_mib"]
            print(f"{side:8s}: {r['seconds']:.3f} s, peak RSS {r['peak_rss_mib']:.0f} MiB "
                  f"({growth:.0f} MiB above its start, {growth / model_mib:.2f}x model size)")
        print(f"ratio {exp['seconds'] / base['seconds']:.2f}")


if __name__ == "__main__":
    main()
