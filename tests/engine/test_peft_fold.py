"""An aligned run's adapter also ships as one plain PEFT LoRA on the base alone: loading it with
nothing but PEFT gives the same model as tuneloop's stack (base + SFT merged, then the run's
adapter), and what cannot be one LoRA is refused in words."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from tuiapp.engine.export.peft_fold import FoldError, fold, write_plain_adapter  # noqa: E402

TOKENIZER = Path(__file__).resolve().parents[2] / "sample_data" / "demo" / "tokenizer"
TEXT = "Which town is Tesosto from? Tesosto is from the hills."


def _base(folder: Path) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).eval().save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def _load(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def _adapter(model, out: Path, seed: int, **lora) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    torch.manual_seed(seed)
    peft = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **lora))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
            elif "trainable_tokens_delta" in name:  # rows the template's tokens trained
                p.add_(torch.randn_like(p))
    peft.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(TOKENIZER)).save_pretrained(str(out))
    return out


def _stacked(base: Path, adapters: list[Path]):
    from peft import PeftModel

    model = _load(base)
    for folder in adapters[:-1]:
        model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    return PeftModel.from_pretrained(model, str(adapters[-1])).eval()


def _logits(model) -> torch.Tensor:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(TOKENIZER))(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """base → SFT (r=4 on q/v/down, embedding rows 1 and 2 trained) → DPO on base+SFT merged (rsLoRA r=2 on q/k/o, other alpha)
    → a second DPO on top of that (r=3 on v only), starts recorded as the trainers record them."""
    from peft import PeftModel

    root = tmp_path_factory.mktemp("fold")
    base = _base(root / "base")
    sft = _adapter(_load(base), root / "runs" / "1" / "final", 1, r=4, lora_alpha=8,
                   target_modules=["q_proj", "v_proj", "down_proj"], trainable_token_indices=[1, 2])
    merged = PeftModel.from_pretrained(_load(base), str(sft)).merge_and_unload()
    dpo = _adapter(merged, root / "runs" / "2" / "final", 2, r=2, lora_alpha=16, use_rslora=True,
                   target_modules=["q_proj", "k_proj", "o_proj"])
    start = {"base_path": str(base), "adapter_dir": str(sft), "full_dir": None, "run_id": 1}
    (dpo / "tuneloop-start.json").write_text(json.dumps(start), encoding="utf-8")
    merged2 = PeftModel.from_pretrained(merged, str(dpo)).merge_and_unload()
    dpo2 = _adapter(merged2, root / "runs" / "3" / "final", 3, r=3, lora_alpha=3, target_modules=["v_proj"],
                    trainable_token_indices=[2, 5])  # row 2 again: the later adapter's value wins
    (root / "runs" / "3" / "job.json").write_text(json.dumps(  # PPO/GRPO record it in job.json
        {"kind": "ppo", "start": {"base_path": str(base), "adapter_dir": str(dpo), "full_dir": None}}),
        encoding="utf-8")
    return {"base": base, "sft": sft, "dpo": dpo, "dpo2": dpo2, "root": root}


def test_folded_adapter_on_the_base_alone_equals_the_stack(chain):
    from peft import PeftModel

    folder = write_plain_adapter(chain["dpo"])
    assert folder == chain["root"] / "runs" / "2" / "peft"
    cfg = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    assert cfg["base_model_name_or_path"] == str(chain["base"].resolve())
    assert cfg["target_modules"] == ["down_proj", "k_proj", "o_proj", "q_proj", "v_proj"]
    assert (folder / "tokenizer.json").is_file()
    plain = PeftModel.from_pretrained(_load(chain["base"]), str(folder)).eval()
    want = _logits(_stacked(chain["base"], [chain["sft"], chain["dpo"]]))
    got = _logits(plain)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    # the aligned adapter did something: the folded model is not the SFT model
    assert not torch.allclose(got, _logits(_stacked(chain["base"], [chain["sft"]])), atol=1e-3)
    # q_proj is in both adapters: ranks add (4 + 2); k_proj only in DPO keeps 2
    assert set(cfg["rank_pattern"].values()) | {cfg["r"]} == {2, 4, 6}
    q = plain.base_model.model.model.layers[0].self_attn
    assert q.q_proj.lora_A["default"].weight.shape[0] == 6
    assert q.k_proj.lora_A["default"].weight.shape[0] == 2


def test_three_deep_chain_with_start_in_job_json(chain):
    from peft import PeftModel

    folder = write_plain_adapter(chain["dpo2"])
    plain = PeftModel.from_pretrained(_load(chain["base"]), str(folder)).eval()
    want = _logits(_stacked(chain["base"], [chain["sft"], chain["dpo"], chain["dpo2"]]))
    assert torch.allclose(_logits(plain), want, atol=1e-3)  # three merges of float rounding
    assert json.loads((folder / "adapter_config.json").read_text())["trainable_token_indices"] == \
        {"embed_tokens": [1, 2, 5]}
    record = json.loads((folder / "tuneloop-folded.json").read_text(encoding="utf-8"))
    assert [Path(p).name for p in record["adapters"]] == ["final", "final", "final"]
    assert len(record["adapters"]) == 3


def test_plain_sft_adapter_needs_no_fold(chain):
    assert write_plain_adapter(chain["sft"]) is None


def test_dora_is_refused_in_words(chain, tmp_path):
    dora = _adapter(_load(chain["base"]), tmp_path / "dora", 5, r=2, lora_alpha=4, use_dora=True,
                    target_modules=["q_proj"])
    with pytest.raises(FoldError, match="DoRA"):
        fold([chain["sft"], dora])


def test_modules_to_save_is_refused_in_words(chain, tmp_path):
    odd = _adapter(_load(chain["base"]), tmp_path / "mts", 6, r=2, lora_alpha=4, target_modules=["q_proj"],
                   modules_to_save=["lm_head"])
    with pytest.raises(FoldError, match="modules_to_save"):
        fold([chain["sft"], odd])
