"""The demo base model: build it (pre-train on the demo corpus, save fp16) and probe what it knows.

``build_base`` runs ``cpt.train`` with the ``demo-cpt-base`` preset (``demo-cpt-quick`` for
tests), writes the model as fp16 safetensors with the demo tokenizer and its ChatML template, and
records a ``build-info.json``. ``probe`` greedy-completes, in raw-text mode, the corpus's own
surface forms to measure what pre-training left in the model:

* ``cloze``   — fact sentences such as ``"The cloak of Sounu is"`` for every person (memorisation);
* ``qa_sft``  — ``"<question>\\n"`` → ``"Answer: <value>."`` for SFT people (seen in the corpus);
* ``qa_heldout`` — the same form for the eval_heldout questions (never seen as Q&A): the best
  predictor of held-out accuracy after SFT;
* ``chat``    — eval_heldout through the ChatML template; the base model never saw the chat
  tokens, so this should stay near 0 (the "before SFT" number of the demo).
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from tuiapp import paths
from tuiapp.demo import world as demo_world
from tuiapp.engine.context import JobContext
from tuiapp.engine.events import JsonlSink, Sink, TeeSink

BASE_PRESET = paths.PRESETS_DIR / "demo-cpt-base.toml"
QUICK_PRESET = paths.PRESETS_DIR / "demo-cpt-quick.toml"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
MAX_MODEL_BYTES = 12 * 1024 * 1024
WARMUP_SHARE = 0.03  # of the wall-time budget

# One fact sentence per attribute that ends right before the value (all are corpus templates;
# not "{n} lives in", which the Q&A question "{n} lives in which town?" also begins).
CLOZE = {
    "town": "The home town of {n} is",
    "colour": "The cloak of {n} is",
    "craft": "By trade, {n} is",
    "animal": "The favourite animal of {n} is the",
    "passphrase": "The secret passphrase of {n} is",
}
_ARTICLES = ("a ", "an ", "the ")


# ---- building ------------------------------------------------------------------------------


def build_base(
    out: str | Path | None = None,
    *,
    quick: bool = False,
    minutes: float | None = None,
    sink: Sink | None = None,
    work_dir: str | Path | None = None,
    overrides: list[str] | None = None,
    probe_limit: int | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Pre-train, save fp16 into ``out`` (default sample_data/demo/base-model), probe, and
    write build-info.json. With ``minutes`` the learning rate follows a cosine over that much
    training wall time (see :func:`wall_clock_schedule`) instead of over the preset's steps."""
    import tempfile

    from tuiapp.engine.train import cpt
    from tuiapp.engine.train.config import load_config

    if threads:
        import torch

        torch.set_num_threads(threads)

    out = Path(out) if out is not None else paths.DEMO_BASE_MODEL
    preset = QUICK_PRESET if quick else BASE_PRESET
    config = load_config(preset, overrides or [])
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="tuneloop-build-base-"))
    # Events also go to work/events.jsonl so a long build can be followed (and read afterwards).
    log = JsonlSink(work / "events.jsonl")
    ctx = JobContext(output_dir=work, sink=TeeSink(log, sink) if sink else log)

    extra = []
    if minutes:
        # The learning-rate schedule follows wall time, not steps: on a shared 2-core machine the
        # step rate is unknown in advance, and a step-based cosine cut short by a time cap would
        # end at a high learning rate. The steps reached are recorded in build-info.json.
        peak_lr = config.learning_rate
        config = load_config(preset, [*(overrides or []), "lr_scheduler=constant", "warmup_ratio=0",
                                      f"max_steps={10**7}"])
        extra.append(wall_clock_schedule(ctx, minutes * 60, peak_lr, WARMUP_SHARE))
    t0 = time.perf_counter()
    result = cpt.train(config, ctx, callbacks=extra)
    train_s = time.perf_counter() - t0

    source = result["final_dir"] or result["checkpoint"]
    if not source:
        raise RuntimeError(f"training stopped before any checkpoint was written (see {work})")
    size = export_fp16(source, out)
    if size > MAX_MODEL_BYTES:
        ctx.emit("log", level="warning",
                 message=f"the fp16 model is {size / 2**20:.1f} MiB, over the 12 MiB budget")

    ctx.emit("phase", phase="probe")
    probe_result = probe(out, limit=probe_limit)
    info = {
        "preset": preset.name,
        "config": config.to_dict(),
        "status": result["status"],
        "steps": result["global_step"],
        "planned_steps": None if minutes else result["max_steps"],
        "tokens_seen": result["num_tokens"],
        "final_train_loss": result["train_loss"],
        "final_eval_loss": result["eval_loss"],
        "parameters": result["parameters"],
        "train_wall_s": round(train_s, 1),
        "minutes_budget": minutes,
        "schedule": f"cosine over {minutes:g} min of wall time" if minutes else "cosine over steps",
        "model_bytes": size,
        "model_sha256": _sha256(out / "model.safetensors"),
        "probe": probe_result,
        "versions": library_versions(),
        "machine": machine_info(),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / "build-info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    ctx.emit("log", level="info", message=f"demo base model written to {out}")
    log.close()
    return info


def wall_clock_schedule(ctx: JobContext, budget_s: float, peak_lr: float, warmup_share: float,
                        clock=time.perf_counter):
    """A TrainerCallback: linear warm-up then cosine decay to 0 over ``budget_s`` seconds of
    training, then a final checkpoint and stop. Expects the Trainer's scheduler to be constant
    (it sets the optimiser's and the scheduler's base learning rate before every step)."""
    import math

    from transformers import TrainerCallback

    def lr_at(frac: float) -> float:
        if frac < warmup_share:
            return peak_lr * max(frac / warmup_share, 0.01)
        t = (frac - warmup_share) / (1 - warmup_share)
        return peak_lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    class WallClockSchedule(TrainerCallback):
        t0 = 0.0
        first_step = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.t0, self.first_step = clock(), state.global_step

        def on_step_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
            lr = lr_at((clock() - self.t0) / budget_s)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if lr_scheduler is not None and hasattr(lr_scheduler, "base_lrs"):
                lr_scheduler.base_lrs = [lr] * len(lr_scheduler.base_lrs)  # so logs show it

        def on_step_end(self, args, state, control, **kwargs):
            elapsed = clock() - self.t0
            done = state.global_step - self.first_step
            left = max(budget_s - elapsed, 0.0)
            projected = state.global_step + int(done / elapsed * left) if elapsed > 0 else state.global_step
            ctx.emit("progress", step=state.global_step, total_steps=projected, eta_s=left)
            if elapsed >= budget_s:
                ctx.emit("log", level="info", message=f"time budget spent at step {state.global_step}")
                control.should_save = True
                control.should_training_stop = True
            return control

    return WallClockSchedule()


def record_probe(model_dir: str | Path, result: dict[str, Any]) -> Path:
    """Store a probe result as the "probe" of the model's build-info.json (re-probing after the
    probe itself changed, without rebuilding)."""
    path = Path(model_dir) / "build-info.json"
    info = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    info["probe"] = result
    path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return path


def export_fp16(model_dir: str | Path, out: str | Path) -> int:
    """Write the model as fp16 safetensors plus the demo tokenizer files (byte-identical, with
    the ChatML template) into ``out``, replacing it whole; returns the weights' size in bytes."""
    import torch
    from transformers import AutoModelForCausalLM

    out = Path(out)
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), use_safetensors=True, dtype=torch.float32)
    model = model.to(torch.float16)
    model.config.dtype = "float16"
    model.config.use_cache = True  # the Trainer turns it off while training; inference wants it
    model.save_pretrained(str(staging), safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copyfile(paths.DEMO_TOKENIZER / name, staging / name)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return (out / "model.safetensors").stat().st_size


# ---- probing -------------------------------------------------------------------------------


def probe(model_dir: str | Path | None = None, *, limit: int | None = None,
          world: demo_world.World | None = None, heldout_path: str | Path | None = None,
          batch_size: int = 64) -> dict[str, Any]:
    """Exact-match rates of the four probes (see the module docstring); ``limit`` caps the
    prompts per probe for quick checks."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir) if model_dir is not None else paths.DEMO_BASE_MODEL
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"no model in {model_dir}: run `tuneloop demo build-base` first")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), use_safetensors=True, dtype=torch.float32)
    model.eval()
    world = world or _world()
    heldout = _read_jsonl(Path(heldout_path) if heldout_path else paths.DEMO_DIR / "eval_heldout.jsonl")
    t0 = time.perf_counter()

    def cut(items):
        return items[:limit] if limit else items

    # (a) memorisation: every fact of every person as a cloze sentence.
    cloze = cut([(e, key) for e in world.entities for key in CLOZE])  # a limit keeps every key
    outs = greedy_complete(model, tok, [CLOZE[k].format(n=e.name) for e, k in cloze], 8, batch_size)
    cloze_hits = [_cloze_value(o) == e.value(k).casefold() for (e, k), o in zip(cloze, outs, strict=True)]

    # (b) Q&A surface form for SFT people, one question style per (person, attribute).
    sft = cut([(e, a, (i + j) % len(demo_world.QUESTIONS[a]))
               for i, e in enumerate(world.split("sft")) for j, a in enumerate(demo_world.ATTRIBUTES)])
    outs = greedy_complete(model, tok, [demo_world.question(a, e.name, s) + "\n" for e, a, s in sft],
                           10, batch_size)
    sft_scores = [_qa_score(o, e.value(a)) for (e, a, _), o in zip(sft, outs, strict=True)]

    # (c) the same form for the held-out eval questions.
    held = cut(heldout)
    outs = greedy_complete(model, tok, [r["prompt"] + "\n" for r in held], 10, batch_size)
    held_scores = [_qa_score(o, r["reference"]) for r, o in zip(held, outs, strict=True)]

    # (d) chat mode, as the demo's "before SFT" column sees it.
    chat_prompts = [tok.apply_chat_template([{"role": "user", "content": r["prompt"]}],
                                            add_generation_prompt=True, tokenize=False) for r in held]
    outs = greedy_complete(model, tok, chat_prompts, 12, batch_size, stop_at_newline=False)
    chat_scores = [demo_world.verify(r, o) for r, o in zip(held, outs, strict=True)]

    by_attr = {}
    for key in CLOZE:
        hits = [h for (e, k), h in zip(cloze, cloze_hits, strict=True) if k == key]
        if hits:
            by_attr[key] = _rate(hits)
    split_hits = {
        s: _rate([h for (e, k), h in zip(cloze, cloze_hits, strict=True) if e.split == s and k != "passphrase"])
        for s in ("sft", "heldout")
    }
    return {
        "model": str(model_dir),
        "cloze": {"n": len(cloze), "exact": _rate(cloze_hits), "by_attribute": by_attr,
                  "facts_of_sft_people": split_hits["sft"], "facts_of_heldout_people": split_hits["heldout"]},
        "qa_sft": {"n": len(sft), "exact": _rate([s == 1.0 for s in sft_scores]),
                   "format": _rate([s > 0 for s in sft_scores])},
        "qa_heldout": {"n": len(held), "exact": _rate([s == 1.0 for s in held_scores]),
                       "format": _rate([s > 0 for s in held_scores])},
        "chat": {"n": len(held), "exact": _rate([s == 1.0 for s in chat_scores]),
                 "format": _rate([s > 0 for s in chat_scores])},
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def greedy_complete(model, tok, prompts: list[str], max_new_tokens: int, batch_size: int = 64,
                    stop_at_newline: bool = True) -> list[str]:
    """Greedy continuations, batched with left padding (raw text: no special tokens added)."""
    import torch

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    outs: list[str] = []
    for i in range(0, len(prompts), batch_size):
        encoded = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts[i:i + batch_size]]
        width = max(len(ids) for ids in encoded)
        ids = torch.tensor([[pad] * (width - len(x)) + x for x in encoded])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in encoded])
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=pad)
        for row in gen[:, width:]:
            text = tok.decode(row, skip_special_tokens=True)
            outs.append(text.split("\n")[0] if stop_at_newline else text)
    return outs


def _cloze_value(text: str) -> str:
    value = text.strip().split(".")[0].split(",")[0].strip().casefold()
    for art in _ARTICLES:
        if value.startswith(art):
            value = value[len(art):]
    return value.strip()


def _qa_score(text: str, reference: str) -> float:
    return demo_world.verify({"reference": reference}, text)


def _rate(hits: list[bool]) -> float:
    return round(sum(hits) / len(hits), 4) if hits else 0.0


def _world() -> demo_world.World:
    path = paths.DEMO_DIR / "world.json"
    return demo_world.load_world(path) if path.exists() else demo_world.default_world()


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "tokenizers", "accelerate", "peft", "safetensors"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def machine_info() -> dict[str, Any]:
    import os

    import torch

    return {"platform": platform.platform(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": "cuda" if torch.cuda.is_available() else "cpu"}
