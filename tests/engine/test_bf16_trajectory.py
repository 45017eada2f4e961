"""bf16 (what dtype=auto now picks on an AMX / AVX512-BF16 CPU, issue 22) trains along the same
loss trajectory as fp32, within bf16's own rounding noise.

The tolerance, per logged step: 2^-8 of the fp32 loss (0.39%, 0.03 nats at the tiny model's
7.7-nat start). bf16 keeps 8 significant bits, so 2^-8 relative is one bf16 step at the loss's
own magnitude: a bf16 run cannot be asked to agree more closely than bf16 can write the number,
and a real break (LoRA weights kept in bf16, a lost loss scale, a changed mask) moves the loss by
tenths of a nat. Measured here (tiny Llama, LoRA r 4, lr 1e-2, 5 steps, 2 CPU threads): max
difference 1.7e-4 nats, 170x inside it, against a descent of 0.67 nats over the 5 steps.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tuiapp import paths  # noqa: E402
from tuiapp.engine.context import JobContext  # noqa: E402
from tuiapp.engine.events import ListSink  # noqa: E402
from tuiapp.engine.train import modeling, sft  # noqa: E402
from tuiapp.engine.train.config import SFTJobConfig  # noqa: E402

RELATIVE = 2.0 ** -8  # of the fp32 loss, per step (see the top)


def _config(model, data, **kw) -> SFTJobConfig:
    return SFTJobConfig(base_model=str(model), dataset=str(data), method="lora", max_steps=5, batch_size=4,
                        learning_rate=1e-2, warmup_ratio=0.0, logging_steps=1, save_steps=100,
                        eval_split=0.0, sample_prompts=[], max_length=64, lora_r=4, lora_alpha=8,
                        lora_dropout=0.0, device="cpu", seed=3, **kw)


def _train(cfg, out):
    sink = ListSink()
    result = sft.train(cfg, JobContext(output_dir=out, sink=sink))
    assert result["status"] == "completed", result
    losses = [e["values"]["loss"] for e in sink.events
              if e["event"] == "metrics" and "loss" in e["values"]]
    said = " ".join(e.get("message", "") for e in sink.events if e["event"] == "log")
    return losses, said


def test_bf16_loss_trajectory_stays_within_tolerance_of_fp32(tiny_model, tmp_path, monkeypatch):
    torch.set_num_threads(2)
    data = tmp_path / "sft.jsonl"
    data.write_text("\n".join((paths.DEMO_DIR / "sft.jsonl").read_text(encoding="utf-8").splitlines()[:24])
                    + "\n", encoding="utf-8")
    fp32, said32 = _train(_config(tiny_model, data, dtype="fp32"), tmp_path / "fp32")
    # dtype=auto on an AMX CPU: the path a default job now takes there
    monkeypatch.delenv(modeling.CPU_BF16_ENV, raising=False)
    monkeypatch.setattr(modeling, "_cpu_flags", lambda: {"amx_bf16", "avx512_bf16"})
    bf16, said16 = _train(_config(tiny_model, data, dtype="auto"), tmp_path / "auto")
    assert "(float32)" in said32 and "(bfloat16)" in said16  # the runs really differ in dtype
    assert len(fp32) == len(bf16) == 5
    for step, (a, b) in enumerate(zip(fp32, bf16, strict=True), 1):
        assert abs(a - b) <= RELATIVE * abs(a), f"step {step}: fp32 {a:.5f}, bf16 {b:.5f}"
    assert fp32 != bf16  # bf16 rounding shows: the two runs did not share one computation
    tol = RELATIVE * fp32[0]
    assert fp32[0] - fp32[-1] > 5 * tol and bf16[0] - bf16[-1] > 5 * tol  # both learn, clearly
