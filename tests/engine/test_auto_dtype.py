"""dtype=auto (issue 22): bf16 where the hardware has bf16 matrix instructions, fp32 elsewhere,
and every user of the choice (training, pre-flight, CPT's Trainer flags, generation) agrees."""

from __future__ import annotations

import pytest
import torch

from tuiapp.engine.train import cpt, modeling

AMX = {"fpu", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
BF16_ONLY = {"fpu", "avx2", "avx512f", "avx512_bf16"}
PLAIN = {"fpu", "avx2", "fma"}


@pytest.fixture
def cpu(monkeypatch):
    """Set this test's CPU flags; the suite-wide TUNELOOP_CPU_BF16=0 is lifted."""
    monkeypatch.delenv(modeling.CPU_BF16_ENV, raising=False)

    def set_flags(flags):
        monkeypatch.setattr(modeling, "_cpu_flags", lambda: set(flags) if flags is not None else None)

    return set_flags


def test_amx_cpu_picks_bf16_and_says_why(cpu):
    cpu(AMX)
    assert modeling.auto_dtype("cpu") == ("bf16", "this CPU has AMX and AVX512-BF16")
    assert modeling.pick_dtype("auto", "cpu") is torch.bfloat16
    assert modeling.describe_dtype("auto", "cpu") == "auto → bf16: this CPU has AMX and AVX512-BF16"


def test_avx512_bf16_alone_is_enough(cpu):
    cpu(BF16_ONLY)
    assert modeling.auto_dtype("cpu") == ("bf16", "this CPU has AVX512-BF16")


def test_cpu_without_bf16_instructions_stays_fp32(cpu, monkeypatch):
    cpu(PLAIN)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    picked, why = modeling.auto_dtype("cpu")
    assert picked == "fp32" and "neither AMX nor AVX512-BF16" in why and "AVX2" in why
    assert modeling.pick_dtype("auto", "cpu") is torch.float32


def test_explicit_dtype_wins_over_the_cpu(cpu):
    cpu(AMX)
    assert modeling.pick_dtype("fp32", "cpu") is torch.float32
    assert modeling.describe_dtype("fp32", "cpu") == "fp32 (set in the config)"
    cpu(PLAIN)
    assert modeling.pick_dtype("bf16", "cpu") is torch.bfloat16


def test_env_switch_keeps_auto_at_fp32(cpu, monkeypatch):
    cpu(AMX)
    monkeypatch.setenv(modeling.CPU_BF16_ENV, "0")
    picked, why = modeling.auto_dtype("cpu")
    assert picked == "fp32" and modeling.CPU_BF16_ENV in why


def test_without_proc_cpuinfo_torch_probe_decides(cpu, monkeypatch):
    cpu(None)  # macOS / Windows: no /proc/cpuinfo
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert modeling.auto_dtype("cpu") == ("bf16", "this CPU has AMX")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert modeling.auto_dtype("cpu")[0] == "fp32"


def test_cuda_follows_its_bf16_support(cpu, monkeypatch):
    cpu(PLAIN)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert modeling.auto_dtype("cuda") == ("bf16", "this CUDA GPU supports bf16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert modeling.auto_dtype("cuda")[0] == "fp32"


def test_cpt_trainer_flags_follow_the_same_choice(cpu):
    cpu(AMX)
    assert cpt._precision("auto", use_cpu=True) == (True, False)
    assert cpt._precision("fp32", use_cpu=True) == (False, False)
    cpu(PLAIN)
    assert cpt._precision("auto", use_cpu=True) == (False, False)


def test_preflight_memory_estimate_uses_the_pick(cpu):
    from types import SimpleNamespace

    from tuiapp.engine.jobs.preflight import estimate_memory

    model_cfg = SimpleNamespace(hidden_size=64, num_hidden_layers=2, vocab_size=100)
    config = SimpleNamespace(dtype="auto", method="lora", kind="sft", batch_size=2, max_length=16,
                             gradient_checkpointing=False)
    params = {"total": 1000, "trainable": 10, "linear": 800, "method": "lora"}
    cpu(AMX)
    bf16 = estimate_memory(model_cfg, config, params, "cpu")
    cpu(PLAIN)
    fp32 = estimate_memory(model_cfg, config, params, "cpu")
    assert (bf16["dtype"], fp32["dtype"]) == ("bf16", "fp32")
    assert bf16["weights_bytes"] < fp32["weights_bytes"]


class _Store:
    def __init__(self, configs):
        self.configs = configs

    def get_run(self, run_id):
        if run_id not in self.configs:
            raise KeyError(run_id)
        return SimpleRun(self.configs[run_id])


class SimpleRun:
    def __init__(self, config):
        self.config = config


def test_generation_answers_a_run_in_its_training_dtype():
    from types import SimpleNamespace

    from tuiapp.engine.infer.generate import Generator

    pool = Generator.__new__(Generator)
    pool.store = _Store({1: {"dtype": "fp32"}, 2: {}, 3: {"dtype": "bf16"}})
    dtype = {rid: pool._run_dtype(SimpleNamespace(run_id=rid)) for rid in (1, 2, 3, 99, None)}
    assert dtype == {1: "fp32", 2: "auto", 3: "bf16", 99: "auto", None: "auto"}


def test_preflight_says_what_auto_picked_and_why(cpu, tiny_model, tmp_path):
    import json

    from rich.console import Console

    from store import Store
    from tuiapp.engine.jobs.preflight import preflight
    from tuiapp.engine.train.config import SFTJobConfig

    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"prompt": "hi", "completion": "hello"}) + "\n", encoding="utf-8")
    cpu(AMX)
    cfg = SFTJobConfig(base_model=str(tiny_model), dataset=str(data), device="cpu", eval_split=0.0)
    report = preflight(cfg, Store(":memory:"), tmp_path, free_bytes=2**40)
    assert report.dtype == "auto → bf16: this CPU has AMX and AVX512-BF16"
    assert report.memory["dtype"] in ("bf16", "bfloat16")  # the SFT engine names it as torch does
    console = Console(record=True, width=120)
    console.print(report.render())
    row = [line.split() for line in console.export_text().splitlines() if line.startswith("dtype")]
    assert row == [["dtype", "auto", "→", "bf16:", "this", "CPU", "has", "AMX", "and", "AVX512-BF16"]]
    pinned = preflight(SFTJobConfig(base_model=str(tiny_model), dataset=str(data), device="cpu",
                                    dtype="fp32", eval_split=0.0), Store(":memory:"), tmp_path, free_bytes=2**40)
    assert pinned.dtype == "fp32 (set in the config)" and pinned.memory["dtype"] in ("fp32", "float32")
