"""GGUF writer + parity: tiny random-init Llama / Mistral / Qwen2 folders exported, loaded by
llama.cpp and compared with transformers; damaged files give readable errors, not crashes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

from tuiapp.engine.export import gguf as gguf_writer  # noqa: E402
from tuiapp.engine.export.gguf import GGUFExportError, write_gguf  # noqa: E402
from tuiapp.engine.export.parity import check  # noqa: E402
from tuiapp.engine.infer.gguf_file import GGUFFileError, inspect_gguf, open_llama  # noqa: E402

TOKENIZER = Path(__file__).resolve().parents[2] / "sample_data" / "demo" / "tokenizer"


def make_model(arch: str, folder: Path, tied: bool = True, seed: int = 0) -> Path:
    """A 2-layer, hidden-64 model with the demo tokenizer. A wide init (0.2) makes attention
    sharp, so a wrong q/k layout shows in the logits instead of hiding in uniform attention."""
    from transformers import (
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  tie_word_embeddings=tied, initializer_range=0.2, rope_theta=10000.0)
    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "mistral": (MistralConfig, MistralForCausalLM),
               "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
    config_cls, model_cls = classes[arch]
    extra = {"sliding_window": None} if arch == "mistral" else {}
    model = model_cls(config_cls(**common, **extra)).eval()
    if arch == "qwen2":  # its q/k/v biases start at zero; give them values so they are tested
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.2)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_model("llama", tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def llama_f16(llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf") / "llama-f16.gguf"
    write_gguf(llama_dir, out, "f16")
    return out


@pytest.mark.parametrize("arch,tied", [("llama", False), ("mistral", True), ("qwen2", False)])
def test_f16_export_loads_and_matches_transformers(arch, tied, tmp_path):
    folder = make_model(arch, tmp_path / arch, tied=tied, seed=1)
    seen = []
    info = write_gguf(folder, tmp_path / "m.gguf", "f16", progress=lambda d, t, n: seen.append((d, t)))
    assert info["arch"] == ("qwen2" if arch == "qwen2" else "llama")
    assert seen[-1] == (info["tensors"], info["tensors"]) and len(seen) == info["tensors"]
    # an untied head is written as output.weight; a tied one is left to llama.cpp
    from gguf import GGUFReader

    names = {t.name for t in GGUFReader(str(tmp_path / "m.gguf")).tensors}
    assert ("output.weight" in names) != tied
    assert ("blk.0.attn_q.bias" in names) == (arch == "qwen2")
    report = check(folder, tmp_path / "m.gguf")
    assert report["ok"], report["reasons"]
    assert report["tokenization"]["identical"]
    assert report["logits"]["top1_agreement"] >= 0.95
    assert report["logits"]["relative_diff"] < 0.02
    assert report["kind"] == "f16"


def test_f32_export_is_near_exact_and_bf16_within_its_tolerance(llama_dir, tmp_path):
    write_gguf(llama_dir, tmp_path / "f32.gguf", "f32")
    report = check(llama_dir, tmp_path / "f32.gguf", max_new_tokens=4)
    assert report["ok"], report["reasons"]
    assert report["logits"]["relative_diff"] < 1e-4
    assert report["logits"]["top1_agreement"] == 1.0
    assert report["greedy"]["exact"] == report["greedy"]["prompts"]

    write_gguf(llama_dir, tmp_path / "bf16.gguf", "bf16")
    info = inspect_gguf(tmp_path / "bf16.gguf")
    assert info["file_type"] == 32 and "BF16" in info["tensor_types"]
    report = check(llama_dir, tmp_path / "bf16.gguf", max_new_tokens=4)
    assert report["ok"], report["reasons"]
    assert report["kind"] == "bf16"


def test_skipping_the_qk_permutation_fails_parity(llama_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(gguf_writer.ARCHITECTURES, "LlamaForCausalLM", ("llama", False))
    write_gguf(llama_dir, tmp_path / "wrong.gguf", "f16")
    report = check(llama_dir, tmp_path / "wrong.gguf", max_new_tokens=4)
    assert not report["ok"]
    assert report["tokenization"]["identical"]  # the vocabulary is fine; the weights are not
    assert any("logits differ" in r for r in report["reasons"])
    assert report["logits"]["relative_diff"] > 0.1


def test_metadata_written_for_llama_cpp(llama_f16):
    from gguf import GGUFReader

    reader = GGUFReader(str(llama_f16))

    def text(key):
        field = reader.fields[key]
        return bytes(field.parts[field.data[0]]).decode()

    def number(key):
        field = reader.fields[key]
        return field.parts[field.data[0]].tolist()[0]

    assert text("general.architecture") == "llama"
    assert text("tokenizer.ggml.model") == "gpt2"
    assert text("tokenizer.ggml.pre") == "gpt-2"
    template = text("tokenizer.chat_template")
    assert "<|im_start|>" in template and "% generation %" not in template  # HF-only tags removed
    assert "endgeneration" not in template
    vocab = json.loads((TOKENIZER / "tokenizer.json").read_text())["model"]["vocab"]
    assert number("tokenizer.ggml.eos_token_id") == 2          # <|im_end|>
    assert number("tokenizer.ggml.padding_token_id") == 0      # <|endoftext|>
    assert number("tokenizer.ggml.add_bos_token") is False
    assert number("llama.embedding_length") == 64 and number("llama.block_count") == 2
    assert number("llama.attention.head_count_kv") == 2
    tokens = reader.fields["tokenizer.ggml.tokens"]
    assert len(tokens.data) == len(vocab)
    types = reader.fields["tokenizer.ggml.token_type"]
    assert [types.parts[types.data[i]].tolist()[0] for i in range(4)] == [3, 3, 3, 1]  # control x3
    assert "output.weight" not in {t.name for t in reader.tensors}  # tied: llama.cpp reuses token_embd


def test_chat_template_renders_in_llama_cpp(llama_f16):
    with open_llama(llama_f16, vocab_only=True) as llm:
        ids = llm.tokenize(b"<|im_start|>user\nhi<|im_end|>", add_bos=True, special=True)
        assert ids[0] == 1 and ids[-1] == 2
        assert llm.metadata["tokenizer.chat_template"].startswith("{%- for message")


def test_unknown_pre_tokenizer_is_refused_before_writing(llama_dir, tmp_path):
    folder = tmp_path / "odd"
    shutil.copytree(llama_dir, folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"\w+|\s"}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    (folder / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(GGUFExportError, match="unknown pre-tokenizer regex"):
        write_gguf(folder, tmp_path / "odd.gguf")
    assert not (tmp_path / "odd.gguf").exists() and not (tmp_path / "odd.gguf.partial").exists()


def test_byte_fallback_with_an_unknown_layout_is_refused_in_words(llama_dir, tmp_path):
    """Byte fallback on a byte-level (not "▁") layout is no SentencePiece llama.cpp knows
    (the supported SentencePiece layouts are tested in test_gguf_spm.py)."""
    folder = tmp_path / "spm"
    shutil.copytree(llama_dir, folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    data["model"]["byte_fallback"] = True
    (folder / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(GGUFExportError, match="SentencePiece-style tokenizer with normalizer"):
        write_gguf(folder, tmp_path / "spm.gguf")
    assert not (tmp_path / "spm.gguf").exists()


def test_unsupported_folders_get_clear_errors(llama_dir, tmp_path):
    with pytest.raises(GGUFExportError, match="no config.json"):
        write_gguf(tmp_path, tmp_path / "x.gguf")
    folder = tmp_path / "gpt2"
    shutil.copytree(llama_dir, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(GGUFExportError, match="GPT2LMHeadModel is not supported"):
        write_gguf(folder, tmp_path / "x.gguf")
    with pytest.raises(GGUFExportError, match="dtype"):
        write_gguf(llama_dir, tmp_path / "x.gguf", dtype="q4")


def test_truncated_and_corrupted_files_give_readable_errors(llama_f16, tmp_path):
    data = llama_f16.read_bytes()
    cases = {
        "cut-in-data.gguf": data[: len(data) - 4096],
        "cut-in-header.gguf": data[:200],
        "tiny.gguf": data[:5],
        "not-gguf.gguf": b"PK\x03\x04" + data[4:],
        "bad-version.gguf": data[:4] + (99).to_bytes(4, "little") + data[8:],
        "garbled-table.gguf": data[:24] + bytes([0xFF]) * 64 + data[88:],
    }
    for name, payload in cases.items():
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(GGUFFileError) as err:
            inspect_gguf(path)
        message = str(err.value)
        assert name in message and "Traceback" not in message
        with pytest.raises(GGUFFileError):  # llama.cpp never sees it
            with open_llama(path, vocab_only=True):
                pass
    with pytest.raises(GGUFFileError, match="truncated"):
        inspect_gguf(tmp_path / "cut-in-data.gguf")
    with pytest.raises(GGUFFileError, match="no such file"):
        inspect_gguf(tmp_path / "missing.gguf")


def test_bf16_checkpoint_exports_and_bf16_rounding_matches_torch(tmp_path):
    import numpy as np

    from tuiapp.engine.export.gguf import _convert

    folder = make_model("llama", tmp_path / "bf16-src", seed=2)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.bfloat16).save_pretrained(str(folder))
    for dtype in ("f16", "bf16"):
        write_gguf(folder, tmp_path / f"{dtype}.gguf", dtype)
        report = check(folder, tmp_path / f"{dtype}.gguf", max_new_tokens=4)
        assert report["ok"], (dtype, report["reasons"])
    # bf16 from a bf16 checkpoint is a bit-exact copy of the stored weights
    from gguf import GGUFReader
    from safetensors import safe_open

    stored = {t.name: t for t in GGUFReader(str(tmp_path / "bf16.gguf")).tensors}
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        want = f.get_tensor("model.layers.0.mlp.down_proj.weight").view(torch.int16).numpy()
    got = np.asarray(stored["blk.0.ffn_down.weight"].data).view(np.int16).reshape(want.shape)
    assert np.array_equal(got, want)

    values = torch.randn(4096) * 10
    values[:4] = torch.tensor([1.0, -0.0, 3.0e38, 1.00390625])  # incl. a tie that rounds to even
    ours = _convert(values.numpy(), "F32", "bf16")
    theirs = values.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(ours, theirs)


@pytest.mark.parametrize("name", ["llama-bpe", "qwen2"])
def test_llama3_and_qwen2_split_regexes_tokenize_like_llama_cpp(name, llama_dir, tmp_path):
    """The demo vocab under the Llama-3 / Qwen2 split regex: llama.cpp's pre-tokenizer of that
    name must cut text exactly where the HF regex does (digit runs, contractions, newlines)."""
    from tuiapp.engine.export.vocab import _KNOWN_SPLITS

    regex = next(r for r, n in _KNOWN_SPLITS.items() if n == name)
    folder = tmp_path / name
    shutil.copytree(llama_dir, folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    # The two regexes differ only on digit runs (Llama-3 keeps up to 3 together), which shows
    # only if the vocab can merge digits: the last two merges become "1 2" -> "12", "12 3" -> "123".
    model = data["model"]
    by_id = {i: t for t, i in model["vocab"].items()}
    last = sorted(by_id)[-2:]
    for i, new in zip(last, ("12", "123"), strict=True):
        del model["vocab"][by_id[i]]
        model["vocab"][new] = i
    model["merges"] = model["merges"][:-2] + [["1", "2"], ["12", "3"]]
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    (folder / "tokenizer.json").write_text(json.dumps(data))
    info = write_gguf(folder, tmp_path / "m.gguf", "f16")
    assert info["pre_tokenizer"] == name
    from transformers import AutoTokenizer

    from tuiapp.engine.export.parity import DEFAULT_TEXTS, check_tokenization

    texts = list(DEFAULT_TEXTS) + ["1234567 12 1", "I'M HERE, YOU'LL SEE\r\n\r\n  x", "a\n\n\nb  \n c"]
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    digits = tokenizer("1234567", add_special_tokens=False)["input_ids"]
    assert len(digits) == (5 if name == "llama-bpe" else 7)  # "123" merged only under Llama-3
    with open_llama(tmp_path / "m.gguf", vocab_only=True) as llm:
        report = check_tokenization(tokenizer, llm, texts)
    assert report["identical"], report["mismatches"]
