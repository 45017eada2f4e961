"""Aligned adapters (DPO/KTO/PPO/GRPO/RLOO) are trained on base + SFT adapter merged: generation,
REF resolution and export must merge the SFT adapter first, then apply the run's own adapter."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from store import Store  # noqa: E402
from tuiapp.engine.export.steps import ExportError, merge_adapter  # noqa: E402
from tuiapp.engine.infer.generate import (  # noqa: E402
    GenerationParams,
    Generator,
    TransformersBackend,
)
from tuiapp.engine.infer.model_refs import RefError, resolve_ref  # noqa: E402

TOKENIZER = Path(__file__).resolve().parents[2] / "sample_data" / "demo" / "tokenizer"
PROMPT = "Which town is Tesosto from?"
GREEDY = GenerationParams(max_new_tokens=8)


def make_base(folder: Path) -> Path:
    """A wide init (0.2) keeps logits far from ties, so greedy answers survive the float
    differences between an adapter applied on the fly and one merged into the weights."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True, initializer_range=0.2, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).eval().save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def perturbed_adapter(model, out: Path, seed: int, task_type: str = "CAUSAL_LM") -> Path:
    """A LoRA adapter with non-zero B (a fresh one is a no-op), saved with the tokenizer."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    torch.manual_seed(seed)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                            task_type=task_type))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(TOKENIZER)).save_pretrained(str(out))
    return out


def merged_start(base: Path, sft: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    return PeftModel.from_pretrained(model, str(sft)).merge_and_unload()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A store with an SFT run, a DPO run (start recorded beside its adapter, as dpo.py writes it)
    and a PPO run (start only in job.json, a value head beside the adapter, as ppo.py writes it)."""
    root = tmp_path_factory.mktemp("aligned")
    base = make_base(root / "base")
    store = Store(root / "tuneloop.db")
    base_row = store.add_model("tiny", "hf", str(base))
    sft_dir = root / "runs" / "1"
    sft = perturbed_adapter(_plain(base), sft_dir / "final", seed=1)
    sft_run = store.create_run("sft", {"base_model": str(base)}, base_model_id=base_row.id,
                               output_dir=str(sft_dir), status="completed")
    start = {"base_path": str(base), "adapter_dir": str(sft), "full_dir": None, "run_id": sft_run.id}

    dpo_dir = root / "runs" / "2"
    dpo = perturbed_adapter(merged_start(base, sft), dpo_dir / "final", seed=2)
    (dpo / "tuneloop-start.json").write_text(json.dumps(start), encoding="utf-8")
    dpo_run = store.create_run("dpo", {"base_model": str(base)}, base_model_id=base_row.id,
                               parent_run_id=sft_run.id, output_dir=str(dpo_dir), status="completed")

    ppo_dir = root / "runs" / "3"
    ppo = perturbed_adapter(merged_start(base, sft), ppo_dir / "final", seed=3)
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(1, 64), "bias": torch.zeros(1)}, str(ppo / "value_head.safetensors"))
    (ppo_dir / "job.json").write_text(json.dumps({"run_id": 3, "kind": "ppo", "start": start}), encoding="utf-8")
    ppo_run = store.create_run("ppo", {"base_model": str(base)}, base_model_id=base_row.id,
                               parent_run_id=sft_run.id, output_dir=str(ppo_dir), status="completed")

    rm_dir = root / "runs" / "4"
    from transformers import AutoModelForSequenceClassification

    cls = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1, dtype=torch.float32)
    perturbed_adapter(cls, rm_dir / "final", seed=4, task_type="SEQ_CLS")
    rm_run = store.create_run("reward", {"base_model": str(base)}, base_model_id=base_row.id,
                              output_dir=str(rm_dir), status="completed")
    return {"root": root, "base": base, "store": store, "sft": sft, "dpo": dpo, "ppo": ppo,
            "runs": {"sft": sft_run.id, "dpo": dpo_run.id, "ppo": ppo_run.id, "reward": rm_run.id}}


def _plain(base: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)


def answer(folder: Path) -> str:
    backend = TransformersBackend(folder, device="cpu")
    return [c for c in backend.generate(None, PROMPT, GREEDY) if c.done][-1].text


@pytest.fixture(scope="module")
def manual(world, tmp_path_factory):
    """base + SFT merged, then + DPO merged, by hand: what the aligned model is."""
    root = tmp_path_factory.mktemp("manual")
    merge_adapter(world["base"], world["sft"], root / "sft")
    merge_adapter(root / "sft", world["dpo"], root / "dpo")
    merge_adapter(root / "sft", world["ppo"], root / "ppo")
    return root


def test_refs_carry_the_sft_adapter_to_merge_first(world):
    store, runs = world["store"], world["runs"]
    sft = resolve_ref(str(runs["sft"]), store)
    assert sft.kind == "adapter" and sft.merge_dirs == ()
    for kind in ("dpo", "ppo"):
        ref = resolve_ref(f"run:{runs[kind]}", store)
        assert ref.kind == "adapter" and ref.base_dir == world["base"].resolve()
        assert ref.merge_dirs == (world["sft"].resolve(),)
        assert ref.adapter_dir == world[kind].resolve()
    # the folder itself (start file beside it) resolves the same way
    assert resolve_ref(str(world["dpo"]), store).merge_dirs == (world["sft"].resolve(),)


def test_aligned_generation_equals_manual_merge_and_differs_from_sft(world, manual):
    gen = Generator(world["store"], device="cpu")
    try:
        got = {k: gen.complete(str(world["runs"][k]), PROMPT, GREEDY, store_result=False).text
               for k in ("sft", "dpo", "ppo")}
        # SFT alone and the aligned runs share no backend: base vs base+SFT merged
        assert len(gen._backends) == 2
    finally:
        gen.close()
    assert got["sft"] == answer(manual / "sft")
    assert got["dpo"] == answer(manual / "dpo")
    assert got["ppo"] == answer(manual / "ppo")
    assert got["dpo"] != got["sft"] and got["ppo"] != got["sft"]


def test_reward_run_is_refused_in_words(world):
    with pytest.raises(RefError, match="reward model"):
        resolve_ref(str(world["runs"]["reward"]), world["store"])


def test_missing_start_adapter_is_said(world, tmp_path):
    folder = tmp_path / "dpo-copy"
    import shutil

    shutil.copytree(world["dpo"], folder)
    start = json.loads((folder / "tuneloop-start.json").read_text(encoding="utf-8"))
    start["adapter_dir"] = str(tmp_path / "gone")
    (folder / "tuneloop-start.json").write_text(json.dumps(start), encoding="utf-8")
    with pytest.raises(RefError, match="which is gone"):
        resolve_ref(str(folder), world["store"])


def test_export_of_aligned_run_merges_both_and_passes_parity(world, manual, tmp_path):
    pytest.importorskip("llama_cpp")
    from safetensors.torch import load_file

    from tuiapp.engine.export.job import resolve_source, run_export

    store, run_id = world["store"], world["runs"]["dpo"]
    source = resolve_source(run_id, store)
    assert source.merge_dirs == (world["sft"].resolve(),) and source.base_dir == world["base"].resolve()
    result = run_export(str(run_id), store, world["root"], quants=["f16"], out=tmp_path / "out",
                        max_new_tokens=6)
    assert result["ok"], [f["reasons"] for f in result["files"]]
    ours = load_file(str(tmp_path / "out" / "merged" / "model.safetensors"))
    theirs = load_file(str(manual / "dpo" / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    assert all(torch.allclose(ours[k].float(), theirs[k].float(), atol=1e-3) for k in ours)
    # and not just the SFT merge: the DPO adapter is in there too
    sft_only = load_file(str(manual / "sft" / "model.safetensors"))
    assert any(not torch.allclose(ours[k].float(), sft_only[k].float(), atol=1e-3) for k in ours)
    with pytest.raises(ExportError, match="reward model"):
        resolve_source(world["runs"]["reward"], store)
