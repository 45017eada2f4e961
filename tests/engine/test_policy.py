"""The shared start-point loader of the alignment jobs: an SFT adapter merged in memory gives
the same logits as base + adapter, the new adapter starts as a no-op so the reference (adapter
disabled) equals the start model, the base folder is never written, and start_from refusals
are in words."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from tuiapp.engine.context import JobContext  # noqa: E402
from tuiapp.engine.train import policy  # noqa: E402
from tuiapp.engine.train.config import DPOJobConfig  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def sft_adapter(tiny_model, tmp_path_factory) -> Path:
    """What an SFT run leaves in final/: a LoRA adapter whose B matrices are not zero."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("sft-final")
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    peft.save_pretrained(folder)
    return folder


def folder_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def config(model: Path, **kw) -> DPOJobConfig:
    base = dict(base_model=str(model), dataset="unused.jsonl", device="cpu", lora_r=4, lora_alpha=8)
    base.update(kw)
    return DPOJobConfig(**base)


def ids(tokenizer):
    return torch.tensor([tokenizer("the river town has a bridge")["input_ids"]])


def test_merged_start_equals_base_plus_adapter_and_reference_equals_start(tiny_model, sft_adapter, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    before = folder_digest(tiny_model)
    start = policy.start_from_folder(sft_adapter, base_path=str(tiny_model))
    assert start.adapter_dir == str(sft_adapter) and start.full_dir is None
    model, tok, info = policy.load_start_model(config(tiny_model), JobContext(tmp_path), start=start)
    assert isinstance(model, PeftModel)
    assert 0 < info["trainable_params"] < info["total_params"]

    x = ids(tok)
    expected_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), sft_adapter)
    base_only = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        expected = expected_model(x).logits
        start_logits = model(x).logits
        with model.disable_adapter():
            reference = model(x).logits
        plain = base_only(x).logits
    assert torch.allclose(start_logits, expected, atol=1e-4)
    assert torch.allclose(reference, start_logits, atol=1e-5)   # new adapter: B = 0 at init
    assert not torch.allclose(plain, expected, atol=1e-3)        # the SFT adapter did something

    # Train the new adapter one step: the policy moves, the reference stays the start model.
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model.train()
    out = model(x, labels=x)
    out.loss.backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        moved = model(x).logits
        with model.disable_adapter():
            still = model(x).logits
    assert not torch.allclose(moved, expected, atol=1e-4)
    assert torch.allclose(still, expected, atol=1e-4)
    assert folder_digest(tiny_model) == before


def test_no_start_from_is_the_base_with_a_fresh_adapter(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    ctx = JobContext(tmp_path, base_model_path=str(tiny_model))
    model, tok, info = policy.load_start_model(config(tiny_model), ctx)
    assert info["start_point"]["adapter_dir"] is None
    x = ids(tok)
    with torch.no_grad():
        assert torch.allclose(model(x).logits, AutoModelForCausalLM.from_pretrained(tiny_model)(x).logits,
                              atol=1e-5)


def test_sequence_classifier_shares_the_merged_decoder(tiny_model, sft_adapter, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    start = policy.start_from_folder(sft_adapter, base_path=str(tiny_model))
    model, tok, _ = policy.load_start_model(config(tiny_model), JobContext(tmp_path), start=start,
                                            for_sequence_classification=True)
    x = ids(tok)
    with torch.no_grad():
        score = model(x).logits
        hidden = model(x, output_hidden_states=True).hidden_states[-1]
        merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), sft_adapter)
        expected = merged(x, output_hidden_states=True).hidden_states[-1]
    assert score.shape == (1, 1)
    assert torch.allclose(hidden, expected, atol=1e-4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("score" in n for n in trainable) and any("lora_A" in n for n in trainable)


def test_resolve_start_from_a_run_in_the_store(tiny_model, sft_adapter, tmp_path):
    import shutil

    from store import Store

    store = Store(":memory:")
    base = store.add_model("tiny", "hf", str(tiny_model))
    run_dir = tmp_path / "runs" / "1"
    shutil.copytree(sft_adapter, run_dir / "final")
    run = store.create_run("sft", {"base_model": str(tiny_model)}, base_model_id=base.id,
                           output_dir=str(run_dir))
    with pytest.raises(policy.StartError, match="queued"):
        policy.resolve_start(SimpleNamespace(start_from=str(run.id), base_model="demo"), store)
    store.update_run(run.id, status="completed")
    start = policy.resolve_start(SimpleNamespace(start_from=str(run.id), base_model="demo"), store)
    assert start == policy.StartPoint(str(tiny_model), adapter_dir=str(run_dir / "final"), run_id=run.id)
    assert policy.StartPoint.from_dict(start.to_dict()) == start
    with pytest.raises(policy.StartError, match="no run with id 99"):
        policy.resolve_start(SimpleNamespace(start_from="99", base_model="demo"), store)
    with pytest.raises(policy.StartError, match="neither"):
        policy.resolve_start(SimpleNamespace(start_from="nowhere/at/all", base_model="demo"), store)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(policy.StartError, match="neither a LoRA adapter"):
        policy.start_from_folder(empty)
