"""Every shipped preset loads and validates; the SFT presets point at what they say."""

from __future__ import annotations

import json

import pytest

from tuiapp import paths
from tuiapp.engine.train import config as cfgmod

PRESETS = cfgmod.list_presets()
SFT_PRESETS = ("demo-sft-lora", "demo-sft-qlora", "demo-sft-full", "qwen2.5-0.5b-qlora", "llama3-8b-qlora")


def test_the_sft_presets_are_shipped():
    assert set(SFT_PRESETS) <= set(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_loads_through_load_config(name):
    loaded = cfgmod.load_config(PRESETS[name])
    assert loaded.kind in cfgmod.CONFIG_CLASSES
    # a resolved config round-trips: what a run stores re-creates the same job
    again = cfgmod.from_dict(loaded.kind, loaded.to_dict())
    assert again == loaded


@pytest.mark.parametrize("name", [n for n in SFT_PRESETS if n.startswith("demo-")])
def test_demo_sft_presets_use_demo_data_and_demo_questions(name):
    cfg = cfgmod.load_config(PRESETS[name], kind="sft")
    assert cfg.base_model == "demo" and cfg.dataset == "demo/sft"
    assert (paths.DEMO_DIR / "sft.jsonl").exists()
    held = {json.loads(line)["prompt"] for line in (paths.DEMO_DIR / "eval_heldout.jsonl").open()}
    forbidden = {json.loads(line)["prompt"] for line in (paths.DEMO_DIR / "eval_forbidden.jsonl").open()}
    assert sum(p in held for p in cfg.sample_prompts) == 2
    assert sum(p in forbidden for p in cfg.sample_prompts) == 1
    assert cfg.device == "cpu" and cfg.dtype == "fp32"


@pytest.mark.parametrize("name,hub,template,checkpointing", [
    ("qwen2.5-0.5b-qlora", "Qwen/Qwen2.5-0.5B", "chatml", False),
    ("llama3-8b-qlora", "meta-llama/Meta-Llama-3-8B", "llama3", True),
])
def test_gpu_presets_are_realistic_qlora(name, hub, template, checkpointing):
    cfg = cfgmod.load_config(PRESETS[name], kind="sft")
    assert cfg.base_model == hub and cfg.method == "qlora" and cfg.chat_template == template
    assert (cfg.lora_r, cfg.lora_alpha, cfg.learning_rate) == (16, 32, 2e-4)
    assert cfg.dtype == "bf16" and cfg.device == "cuda" and cfg.max_length == 2048
    assert cfg.gradient_checkpointing is checkpointing


def test_an_override_changes_one_key_and_a_bad_one_is_named():
    cfg = cfgmod.load_config(PRESETS["demo-sft-lora"], ["lora_r=8", "method=full"])
    assert cfg.lora_r == 8 and cfg.method == "full"
    with pytest.raises(cfgmod.ConfigError, match="lora_rank.*did you mean lora_r"):
        cfgmod.load_config(PRESETS["demo-sft-lora"], ["lora_rank=8"])
