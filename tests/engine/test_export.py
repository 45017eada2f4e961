"""Merge a LoRA adapter (with trainable token rows), quantize through llama.cpp, predict sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("llama_cpp")
pytest.importorskip("peft")

from tuiapp.engine.export.gguf import write_gguf  # noqa: E402
from tuiapp.engine.export.parity import check  # noqa: E402
from tuiapp.engine.export.steps import (  # noqa: E402
    ExportError,
    merge_adapter,
    predict_size,
    quantize,
)
from tuiapp.engine.infer.gguf_file import inspect_gguf  # noqa: E402

TOKENIZER = Path(__file__).resolve().parents[2] / "sample_data" / "demo" / "tokenizer"


def tiny_llama(folder: Path, hidden: int = 64, tied: bool = True) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=tied, initializer_range=0.2)
    LlamaForCausalLM(config).to(torch.float16).save_pretrained(str(folder))  # stored like the demo base
    tok.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def base_f16(base_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf") / "base-f16.gguf"
    write_gguf(base_dir, out, "f16")
    return out


def make_adapter(base_dir: Path, out: Path, token_rows=(1, 2)):
    """A LoRA adapter like the SFT engine's (all linear layers + chat-token rows), with weights
    perturbed so the merge has something to change."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM",
                        trainable_token_indices=list(token_rows))
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for _, p in peft_model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    peft_model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(str(out))
    return peft_model.eval()


def test_merged_model_equals_the_peft_model_and_exports_with_parity(base_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    peft_model = make_adapter(base_dir, tmp_path / "adapter")
    info = merge_adapter(base_dir, tmp_path / "adapter", tmp_path / "merged", dtype="float32")
    assert info["dtype"] == "float32" and not info["dequantized"]
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), dtype=torch.float32).eval()
    ids = torch.tensor([[1, 300, 301, 302, 2, 0, 1, 5, 6]])  # includes the trained chat-token rows
    with torch.no_grad():
        want = peft_model(ids).logits
        got = merged(ids).logits
        base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)(ids).logits
    assert (want - base).abs().max() > 0.1  # the adapter really changes the model
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    # the trainable token rows landed in the merged embedding
    emb = merged.get_input_embeddings().weight
    base_emb = base_model_embedding(base_dir)
    assert (emb[1] - base_emb[1]).abs().max() > 0.01 and torch.equal(emb[5], base_emb[5])
    files = {p.name for p in (tmp_path / "merged").iterdir()}
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= files
    assert not any(n.startswith("adapter") for n in files)

    write_gguf(tmp_path / "merged", tmp_path / "merged.gguf", "f16")
    report = check(tmp_path / "merged", tmp_path / "merged.gguf", max_new_tokens=6)
    assert report["ok"], report["reasons"]


def base_model_embedding(base_dir: Path):
    from safetensors import safe_open

    with safe_open(str(base_dir / "model.safetensors"), framework="pt") as f:
        return f.get_tensor("model.embed_tokens.weight").float()


def test_merge_keeps_the_base_dtype_by_default(base_dir, tmp_path):
    make_adapter(base_dir, tmp_path / "adapter", token_rows=(1,))
    info = merge_adapter(base_dir, tmp_path / "adapter", tmp_path / "merged")
    assert info["dtype"] == "float16"
    from safetensors import safe_open

    with safe_open(str(tmp_path / "merged" / "model.safetensors"), framework="pt") as f:
        assert f.get_tensor("model.embed_tokens.weight").dtype == torch.float16
    with pytest.raises(ExportError, match="not a PEFT adapter"):
        merge_adapter(base_dir, base_dir, tmp_path / "nope")


def test_quantize_q8_0_keeps_greedy_answers(base_dir, base_f16, tmp_path):
    out = quantize(base_f16, tmp_path / "q8.gguf", "Q8_0")
    assert "Q8_0" in out["tensor_types"] and out["size_bytes"] < base_f16.stat().st_size
    assert inspect_gguf(out["path"])["file_type"] == 7
    report = check(base_dir, out["path"], max_new_tokens=8)
    assert report["kind"] == "quantized"
    assert report["ok"], report["reasons"]
    assert report["greedy"]["prompts"] == 3 and report["greedy"]["agreeing"] >= 2
    assert report["logits"]["top1_agreement"] >= 0.8
    predicted = predict_size(base_dir, "q8_0")
    assert abs(predicted - out["size_bytes"]) / out["size_bytes"] < 0.10


def test_a_quantization_too_coarse_for_the_model_fails_parity(base_dir, base_f16, tmp_path):
    # this random-init model is chaotic (wide init): 4 bits flip most of its predictions
    out = quantize(base_f16, tmp_path / "q4.gguf", "q4_0")
    report = check(base_dir, out["path"], max_new_tokens=8)
    assert not report["ok"]
    assert any("top-1 token agrees" in r for r in report["reasons"])
    assert report["tokenization"]["identical"]


def test_k_quant_on_narrow_rows_falls_back_like_llama_cpp(base_dir, base_f16, tmp_path):
    out = quantize(base_f16, tmp_path / "q4km.gguf", "q4_k_m")
    assert out["fallbacks"], "hidden 64 is not a multiple of 256; llama.cpp must fall back"
    assert "Q4_K" not in out["tensor_types"]
    predicted = predict_size(base_dir, "q4_k_m")
    assert abs(predicted - out["size_bytes"]) / out["size_bytes"] < 0.15


def test_predicted_f16_size_and_k_quant_mix_on_wide_rows(base_dir, base_f16, tmp_path):
    assert abs(predict_size(base_dir, "f16") - base_f16.stat().st_size) / base_f16.stat().st_size < 0.05
    wide = tiny_llama(tmp_path / "wide", hidden=256, tied=False)
    write_gguf(wide, tmp_path / "wide.gguf", "f16")
    out = quantize(tmp_path / "wide.gguf", tmp_path / "wide-q4km.gguf", "q4_k_m")
    assert "Q4_K" in out["tensor_types"] and "Q6_K" in out["tensor_types"]
    predicted = predict_size(wide, "q4_k_m")
    assert abs(predicted - out["size_bytes"]) / out["size_bytes"] < 0.10


def test_quantize_refuses_bad_requests_in_words(base_f16, tmp_path):
    with pytest.raises(ExportError, match="unknown quantization type 'q9_9'"):
        quantize(base_f16, tmp_path / "x.gguf", "q9_9")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(base_f16.read_bytes()[:1000])
    with pytest.raises(ExportError, match="broken.gguf"):
        quantize(broken, tmp_path / "x.gguf", "q8_0")
    q8 = quantize(base_f16, tmp_path / "q8.gguf", "q8_0")["path"]
    with pytest.raises(ExportError, match="already quantized"):
        quantize(q8, tmp_path / "again.gguf", "q4_0")
    assert not (tmp_path / "x.gguf").exists()
    assert json.loads(json.dumps(inspect_gguf(q8)))  # the summary is JSON-able for the store


DEMO_BASE = Path(__file__).resolve().parents[2] / "sample_data" / "demo" / "base-model"


@pytest.mark.skipif(not (DEMO_BASE / "config.json").exists(), reason="demo base model not built yet")
def test_demo_base_model_exports_with_parity(tmp_path):
    write_gguf(DEMO_BASE, tmp_path / "demo-f16.gguf", "f16")
    report = check(DEMO_BASE, tmp_path / "demo-f16.gguf", max_new_tokens=8)
    assert report["ok"], report["reasons"]
    q8 = quantize(tmp_path / "demo-f16.gguf", tmp_path / "demo-q8_0.gguf", "q8_0")
    report = check(DEMO_BASE, q8["path"], max_new_tokens=8)
    assert report["ok"], report["reasons"]
