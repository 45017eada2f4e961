"""What the Compare screen costs: three models streaming side by side in the TUI (driven headless
with Textual's `run_test`) against the same three generations run one after another without UI.

    python bench/compare_overhead.py [--max-new-tokens 128] [--rounds 3] [--threads N] [--allow-eos]

The three models are one base and two LoRA adapters on it (B matrices perturbed so each answers
differently): the demo base model when it is built, else a random-init Llama of the demo shape
with the demo tokenizer, made in a temp folder (speed does not depend on the weights; nothing is
downloaded). Both arms use the SAME Generator (models loaded and warmed up once), the same prompt
and greedy settings, so they produce the same tokens; both store every answer. EOS is ignored by
default so every answer is exactly --max-new-tokens long (random weights stop at random points).

  sequential   generator.complete(ref, ...) for each model in turn, no UI
  side by side Compare screen: three panes, one thread worker each, coalescing PaneChunk
               messages redrawn by the event loop — the real UI path, headless

The three panes share one loaded base and therefore its lock, so they take turns: the UI run
cannot be faster than the sequential one, and the ratio measures only what the UI adds (event
loop, redraws, GIL contention with the worker threads: a model this small is Python-bound,
so main-thread work is taken straight from generation; a larger model hides it). The models are
picked before the clock starts (as a user picks them before pressing Generate: the pane count
follows the picks, and that re-layout is not part of answering).

Both arms run with the same torch thread count (--threads, default 1: on a small shared box the
tiny model is Python-bound and extra threads only spin). Rounds alternate the arms, so each
round's pair sees the same background load; the ratio is the median of the per-round ratios
(the spread is printed too, with the load average: the machine is shared). `ui main-thread cpu`
is what the event loop itself burnt while the panes streamed, the UI's cost with less noise.
Last line: `ratio X.XX` = time_sequential_no_ui / time_side_by_side_ui (goal ≥ 0.8).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROMPT = "Which town is Tesosto from? Tell me about the town and its people."


def build_models(root: Path, seed: int = 0) -> tuple[Path, list[Path], str]:
    """(base folder, two adapter folders, what the base is)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tuiapp import paths

    torch.manual_seed(seed)
    if (paths.DEMO_BASE_MODEL / "config.json").exists():
        base, what = paths.DEMO_BASE_MODEL, "demo base model"
    else:
        base, what = root / "base", "random-init Llama (demo shape: hidden 256, 6 layers)"
        tok = AutoTokenizer.from_pretrained(str(paths.DEMO_TOKENIZER))
        config = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=688,
                             num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=4,
                             max_position_embeddings=1024, tie_word_embeddings=True,
                             eos_token_id=tok.eos_token_id)
        LlamaForCausalLM(config).eval().save_pretrained(str(base))
        tok.save_pretrained(str(base))
    adapters = []
    for i in range(2):
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
        peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                task_type="CAUSAL_LM"))
        with torch.no_grad():
            for name, p in peft.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05 * (i + 1))
        folder = root / f"adapter{i + 1}"
        peft.save_pretrained(str(folder))
        adapters.append(folder)
    return base, adapters, what


def run_sequential(generator, refs: list[str], params) -> tuple[float, list[int]]:
    t0 = time.perf_counter()
    tokens = [generator.complete(ref, PROMPT, params).tokens for ref in refs]
    return time.perf_counter() - t0, tokens


async def run_side_by_side(app, refs: list[str], max_new_tokens: int
                           ) -> tuple[float, list[int], float]:
    from textual.widgets import Input

    from tuiapp.widgets.model_picker import ModelPicker

    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.press("f5")
        screen = app.screen
        while not screen.choices_loaded:
            await pilot.pause(0.01)
        screen.query_one(ModelPicker).select(refs)
        screen.set_prompt(PROMPT)
        screen.query_one("#cmp-max", Input).value = str(max_new_tokens)
        await pilot.pause()
        cpu0, t0 = time.thread_time(), time.perf_counter()  # this thread runs the event loop
        screen.action_generate()
        while screen.generating:  # a plain sleep: the bench itself must not load the loop
            await asyncio.sleep(0.01)
        elapsed, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
        results = [screen.results.get(f"cmp-pane-{i}", {}) for i in range(len(refs))]
        failed = [p.error for p in screen.query("OutputPane") if p.error]
        if failed:
            raise SystemExit(f"a pane failed: {failed[0]}")
    return elapsed, [r.get("tokens", 0) for r in results], cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for both arms (default: what the app uses, "
                             "tuiapp.engine.infer.generate.cpu_generation_threads: 1 on 2 cores)")
    parser.add_argument("--allow-eos", action="store_true",
                        help="let answers end at EOS (default: exactly --max-new-tokens each)")
    args = parser.parse_args(argv)

    import torch

    from tuiapp.engine.infer.generate import cpu_generation_threads

    if args.threads is not None:  # the backend reads it too, so both arms use the same count
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    args.threads = cpu_generation_threads()
    torch.set_num_threads(args.threads)
    from store import Store
    from tuiapp.app import Settings, TuiApp
    from tuiapp.engine.facade import Engine
    from tuiapp.engine.infer.generate import GenerationParams, Generator

    class KeepModelsEngine(Engine):
        def close_generator(self) -> None:
            pass  # the screen closes it on exit; the next round reuses the loaded models

    with tempfile.TemporaryDirectory(prefix="tuneloop-bench-compare-") as tmp:
        root = Path(tmp)
        base, adapters, what = build_models(root)
        home = root / "home"
        home.mkdir()
        store = Store(str(home / "tuneloop.db"))
        base_row = store.add_model("bench-base", "hf", str(base))
        refs = [f"model:{base_row.id}"] + [
            f"model:{store.add_model(f'bench-adapter{i + 1}', 'adapter', str(a), base_model_id=base_row.id).id}"
            for i, a in enumerate(adapters)]
        generator = Generator(store, home, device="cpu")
        params = GenerationParams(max_new_tokens=args.max_new_tokens)  # greedy
        for ref in refs:  # load the base and both adapters once, outside the timings
            generator.complete(ref, PROMPT, GenerationParams(max_new_tokens=2), store_result=False)
        if not args.allow_eos:
            # random weights hit EOS at random points; without it every answer is exactly
            # --max-new-tokens long, so the timings are about streaming, not about luck
            for backend in generator._backends.values():
                backend.stop_ids = set()

        seq_times, ui_times, ui_cpus, seq_tokens, ui_tokens = [], [], [], [], []
        load_before = os.getloadavg()
        for r in range(args.rounds):
            seq, seq_tokens = run_sequential(generator, refs, params)
            engine = KeepModelsEngine(store=store, home=home)
            engine.use_generator(generator)
            app = TuiApp(store=store, engine=engine,
                         settings=Settings(home=home, refresh_interval=0, poll_interval=0))
            ui, ui_tokens, cpu = asyncio.run(run_side_by_side(app, refs, args.max_new_tokens))
            seq_times.append(seq)
            ui_times.append(ui)
            ui_cpus.append(cpu)
            print(f"round {r + 1}: sequential {seq:.3f}s  side by side {ui:.3f}s  "
                  f"ratio {seq / ui:.2f}  ui main-thread cpu {cpu:.3f}s", flush=True)
        generator.close()
        store.close()

    if seq_tokens != ui_tokens:
        print(f"error: the arms generated different token counts {seq_tokens} vs {ui_tokens}",
              file=sys.stderr)
        return 1
    total = sum(seq_tokens)
    seq, ui = statistics.median(seq_times), statistics.median(ui_times)
    ratios = sorted(s / u for s, u in zip(seq_times, ui_times, strict=True))
    load_after = os.getloadavg()
    print(f"models: {what} + 2 LoRA adapters on it; greedy, {args.max_new_tokens} new tokens max; "
          f"tokens per model {seq_tokens}; torch threads {args.threads}; cpus {os.cpu_count()}")
    print(f"sequential (no UI):    {seq:.3f}s  {total / seq:.1f} tok/s")
    print(f"side by side (TUI):    {ui:.3f}s  {total / ui:.1f} tok/s  "
          f"ui main-thread cpu {statistics.median(ui_cpus):.3f}s (median)")
    print(f"per-round ratios {' '.join(f'{r:.2f}' for r in ratios)}; load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"ratio {statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
