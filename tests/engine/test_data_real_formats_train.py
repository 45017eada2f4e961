"""The public-shaped files train: SFT on tool-use conversations (ShareGPT function calls and
OpenAI tool_calls), DPO on ShareGPT preference pairs, KTO on messages + label, a few steps each
on the tiny CPU model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tuiapp.engine.context import JobContext  # noqa: E402
from tuiapp.engine.events import ListSink  # noqa: E402
from tuiapp.engine.train import dpo, sft  # noqa: E402
from tuiapp.engine.train.config import DPOJobConfig, KTOJobConfig, SFTJobConfig  # noqa: E402

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real_formats"


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def _config(cls, model: Path, data: Path, **kw):
    base = dict(base_model=str(model), dataset=str(data), method="lora", max_steps=2, batch_size=2,
                learning_rate=5e-3, warmup_ratio=0.0, logging_steps=1, save_steps=100,
                eval_split=0.0, sample_prompts=[], max_length=128, lora_r=4, lora_alpha=8)
    base.update(kw)
    return cls(**base)


def _run(train, cfg, out: Path) -> list[dict]:
    sink = ListSink()
    train(cfg, JobContext(out, sink=sink, dataset_path=Path(cfg.dataset),
                          base_model_path=cfg.base_model))
    return [e["values"] for e in sink.events if e["event"] == "metrics" and "loss" in e["values"]]


def _file(tmp_path: Path, name: str, n: int = 3) -> Path:
    """The fixture's rows repeated, so a batch of two exists for every step."""
    src = REAL / name
    rows = json.loads(src.read_text()) if src.suffix == ".json" else [
        json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    out = tmp_path / (src.stem + ".jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows * n))
    return out


@pytest.mark.parametrize("name", ["openai_tools.jsonl", "sharegpt_tools.json"])
def test_sft_trains_on_tool_use(tiny_model, tmp_path, name):
    metrics = _run(sft.train, _config(SFTJobConfig, tiny_model, _file(tmp_path, name)),
                   tmp_path / "run")
    assert metrics and all(m["loss"] == m["loss"] for m in metrics)  # finite, recorded


def test_dpo_trains_on_sharegpt_preference(tiny_model, tmp_path):
    cfg = _config(DPOJobConfig, tiny_model, _file(tmp_path, "sharegpt_preference.json"),
                  device="cpu", dtype="fp32")
    assert _run(dpo.train, cfg, tmp_path / "run")


def test_kto_trains_on_messages_with_label(tiny_model, tmp_path):
    cfg = _config(KTOJobConfig, tiny_model, _file(tmp_path, "kto_messages.json"),
                  device="cpu", dtype="fp32")
    assert _run(dpo.train_kto, cfg, tmp_path / "run")
