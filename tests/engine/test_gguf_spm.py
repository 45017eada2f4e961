"""SentencePiece-style tokenizers (byte-fallback BPE with "▁" for spaces, as Llama-2 and
Mistral-7B-v0.1 ship) exported as llama.cpp's SPM vocab: a tiny one is trained here on the demo
corpus, a random-init Llama gets it, and llama.cpp must tokenise exactly as transformers does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

from tuiapp import paths  # noqa: E402
from tuiapp.engine.export.gguf import GGUFExportError, write_gguf  # noqa: E402
from tuiapp.engine.export.parity import DEFAULT_TEXTS, check, check_tokenization  # noqa: E402
from tuiapp.engine.infer.gguf_file import open_llama  # noqa: E402

EXTRA_TEXTS = ["  x", " leading", "trailing ", "a\n\n\nb  \n c", "Tesosto's passphrase: ΔΣ ∑ 🙂🙂",
               "ü" * 5, "<b> literal angle </b>", "x" * 40]


def train_spm_tokenizer(layout: str):
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    lines = (paths.DEMO_DIR / "corpus.txt").read_text(encoding="utf-8").splitlines()[:3000]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=900, special_tokens=specials,
                                                       show_progress=False))
    if layout == "legacy":  # Llama-2 / Mistral v0.1: a normalizer, no pre-tokenizer
        tok.pre_tokenizer = None
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=layout, split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


def make_spm_model(folder: Path, layout: str = "legacy") -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=train_spm_tokenizer(layout), bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        initializer_range=0.2, bos_token_id=1, eos_token_id=2)).eval()
    model.save_pretrained(str(folder))
    fast.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def spm_dir(tmp_path_factory):
    return make_spm_model(tmp_path_factory.mktemp("spm") / "model")


def test_legacy_sentencepiece_export_tokenises_and_answers_like_transformers(spm_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(spm_dir))
    assert tokenizer.tokenize("the cloak")[0].startswith("▁")  # it is the SentencePiece kind
    info = write_gguf(spm_dir, tmp_path / "m.gguf", "f16")
    assert info["tokenizer"] == "llama" and info["pre_tokenizer"] is None
    report = check(spm_dir, tmp_path / "m.gguf", texts=list(DEFAULT_TEXTS) + EXTRA_TEXTS,
                   max_new_tokens=4)
    assert report["ok"], report["reasons"]
    assert report["tokenization"]["identical"], report["tokenization"]["mismatches"]
    assert report["logits"]["top1_agreement"] >= 0.95

    from gguf import GGUFReader

    reader = GGUFReader(str(tmp_path / "m.gguf"))
    field = reader.fields

    def value(key):
        f = field[key]
        return f.parts[f.data[0]].tolist()

    assert bytes(value("tokenizer.ggml.model")).decode() == "llama"
    assert value("tokenizer.ggml.add_space_prefix") == [True]
    types = [field["tokenizer.ggml.token_type"].parts[i].tolist()[0]
             for i in field["tokenizer.ggml.token_type"].data]
    vocab = tokenizer.get_vocab()
    assert types[vocab["<0x41>"]] == 6 and types[vocab["<unk>"]] == 2 and types[vocab["<s>"]] == 3
    scores = [field["tokenizer.ggml.scores"].parts[i].tolist()[0] for i in field["tokenizer.ggml.scores"].data]
    merged = json.loads((spm_dir / "tokenizer.json").read_text())["model"]["merges"]
    first = "".join(merged[0].split(" ") if isinstance(merged[0], str) else merged[0])
    assert scores[vocab[first]] == -1.0 and min(scores) == -float(len(merged))


def test_metaspace_never_is_exported_and_first_is_refused_in_words(tmp_path):
    from transformers import AutoTokenizer

    never = make_spm_model(tmp_path / "never", layout="never")
    write_gguf(never, tmp_path / "never.gguf", "f16")
    with open_llama(tmp_path / "never.gguf", vocab_only=True) as llm:
        report = check_tokenization(AutoTokenizer.from_pretrained(str(never)), llm,
                                    list(DEFAULT_TEXTS) + EXTRA_TEXTS)
    assert report["identical"], report["mismatches"]

    first = make_spm_model(tmp_path / "first", layout="first")
    with pytest.raises(GGUFExportError, match="prepend_scheme 'first'.*leading space"):
        write_gguf(first, tmp_path / "first.gguf", "f16")
    assert not (tmp_path / "first.gguf").exists()
