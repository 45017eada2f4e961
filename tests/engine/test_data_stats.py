"""Token statistics and rendering, with tokenizers the tests build themselves.

A word-level tokenizer (one token per word or punctuation mark, ChatML markers as single
tokens) makes every count in these tests something you can check by hand.
"""

from __future__ import annotations

import json

import pytest

from tuiapp.engine.data import compute_stats, load_tokenizer, render_examples, validate
from tuiapp.engine.data.stats import DEMO_TOKENIZER, Counting, chatml, histogram, percentiles

SENTENCES = [
    "the valley has four towns and one river",
    "who founded the mill by the river",
    "answer briefly and say when you do not know",
] * 20


@pytest.fixture(scope="module")
def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


@pytest.fixture(scope="module")
def bpe_folder(tmp_path_factory):
    """A tiny trained byte-level BPE with a ChatML template, saved like a model's tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES, trainer)
    folder = tmp_path_factory.mktemp("bpe")
    tok.save(str(folder / "raw-tokenizer.json"))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>")
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    fast.save_pretrained(str(folder))
    return folder


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def conv(*pairs):
    return {"messages": [{"role": r, "content": c} for r, c in pairs]}


# ---------------------------------------------------------------- helpers


def test_percentiles_and_histogram_by_hand():
    values = list(range(1, 101))
    assert percentiles(values) == {"min": 1, "mean": 50.5, "p50": 50, "p90": 90, "p99": 99,
                                   "max": 100, "total": 5050}
    assert percentiles([]) is None
    hist = histogram(values)
    assert hist["counts"] == [5] * 20 and hist["edges"][0] == 1 and hist["edges"][-1] == 101
    assert histogram([7, 7, 7]) == {"edges": [7, 8], "counts": [3]}
    assert sum(histogram([3, 900, 41, 41])["counts"]) == 4


def test_word_tokenizer_counts_as_documented(word_tokenizer):
    c = Counting(word_tokenizer)
    assert c.template == "chatml"  # it has no template of its own
    assert c.count(chatml([{"role": "user", "content": "a b c"}])) == 6


# ---------------------------------------------------------------- sft


@pytest.fixture
def sft_report(tmp_path):
    first = conv(("user", "a b c"), ("assistant", "d e"))  # 11 tokens, assistant from 8
    return validate(write_jsonl(tmp_path / "sft.jsonl", [
        first,
        first,  # an exact duplicate
        conv(("system", "s"), ("user", "q"), ("assistant", "r"), ("user", "q2"),
             ("assistant", "r2 r3")),
    ]))


def test_sft_stats(sft_report, word_tokenizer):
    stats = compute_stats(sft_report, word_tokenizer, max_length=8)
    json.dumps(stats)  # JSON-able, all of it
    # third: system 4, user 4, assistant 4, user 4, assistant 5 -> 21 tokens
    assert stats["tokens"] == {"min": 11, "mean": 14.33, "p50": 11, "p90": 21, "p99": 21,
                               "max": 21, "total": 43}
    assert stats["truncated"] == {"count": 3, "share": 1.0}
    # rows 1 and 2 lose every assistant token at 8; row 3's first reply starts at token 10
    assert stats["train_on_nothing"] == {"count": 3, "lines": [1, 2, 3]}
    # replies are trained on their words and <|im_end|>: 3, 3 and (2 + 3) tokens
    assert stats["assistant_tokens"]["total"] == 3 + 3 + 2 + 3
    assert stats["duplicates"] == {"count": 1, "pairs": [[2, 1]]}
    assert stats["turns"] == {"2": 2, "5": 1}
    assert stats["roles"]["assistant"] == {"messages": 4, "tokens": 2 + 2 + 1 + 2}
    assert stats["roles"]["system"] == {"messages": 1, "tokens": 1}
    assert stats["template"] == "chatml" and stats["rows"] == 3
    assert sum(stats["histogram"]["counts"]) == 3


def test_train_on_nothing_counts_only_examples_with_no_assistant_token_left(sft_report,
                                                                            word_tokenizer):
    stats = compute_stats(sft_report, word_tokenizer, max_length=9)
    assert stats["train_on_nothing"] == {"count": 1, "lines": [3]}  # row 3 replies from 10
    stats = compute_stats(sft_report, word_tokenizer, max_length=11)
    assert stats["train_on_nothing"] == {"count": 0, "lines": []}
    assert stats["truncated"]["count"] == 1
    stats = compute_stats(sft_report, word_tokenizer, max_length=None)
    assert stats["truncated"] is None and stats["train_on_nothing"] is None


def test_prompt_completion_strings(tmp_path, word_tokenizer):
    report = validate(write_jsonl(tmp_path / "pc.jsonl", [
        {"prompt": "one two three", "completion": " four"},
        {"prompt": "x", "completion": " y z"}]))
    stats = compute_stats(report, word_tokenizer, max_length=3)
    assert stats["tokens"]["max"] == 4 and stats["tokens"]["min"] == 3
    assert stats["assistant_tokens"]["total"] == 1 + 2
    assert stats["train_on_nothing"] == {"count": 1, "lines": [1]}
    assert stats["roles"]["user"]["tokens"] == 4


# ---------------------------------------------------------------- preference and kto


def test_preference_truncation_per_side(tmp_path, word_tokenizer):
    report = validate(write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "a b", "chosen": " c d e", "rejected": " f"},  # 5 and 3 tokens
        {"prompt": "p q r s t", "chosen": " u", "rejected": " v"},  # prompt alone is 5
    ]))
    stats = compute_stats(report, word_tokenizer, max_length=4)
    pref = stats["preference"]
    assert pref["chosen_truncated"] == 2 and pref["rejected_truncated"] == 1
    assert pref["prompt_fills_max_length"] == 1
    assert pref["prompt_tokens"]["max"] == 5 and pref["chosen_tokens"]["max"] == 3
    assert stats["tokens"]["max"] == 6 and stats["truncated"]["count"] == 2


def test_conversational_preference_uses_the_template(tmp_path, word_tokenizer):
    report = validate(write_jsonl(tmp_path / "p.jsonl", [{
        "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "good one"}],
        "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "bad"}]}]))
    pref = compute_stats(report, word_tokenizer)["preference"]
    assert pref["prompt_tokens"]["max"] == 6  # <s> user q </s> <s> assistant
    assert pref["chosen_tokens"]["max"] == 3 and pref["rejected_tokens"]["max"] == 2


def test_kto_labels(word_tokenizer):
    from pathlib import Path

    good = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "good"
    stats = compute_stats(validate(good / "kto.csv"), word_tokenizer)
    assert stats["labels"] == {"desirable": 2, "undesirable": 1}


def test_text_stats(tmp_path, word_tokenizer):
    f = tmp_path / "c.txt"
    f.write_text("one two\n\nthree four five six\n")
    stats = compute_stats(validate(f), word_tokenizer, max_length=3)
    assert stats["tokens"]["total"] == 6 and stats["truncated"]["count"] == 1
    assert "assistant_tokens" not in stats and stats["roles"] == {}


# ---------------------------------------------------------------- tokenizers


def test_own_chat_template_is_used(bpe_folder, tmp_path):
    tok = load_tokenizer(bpe_folder)
    c = Counting(tok)
    assert c.template == "tokenizer"
    report = validate(write_jsonl(tmp_path / "s.jsonl", [conv(("user", "who founded the mill"),
                                                              ("assistant", "the river"))]))
    stats = compute_stats(report, tok, max_length=512)
    rendered = tok.apply_chat_template(report.records[0]["messages"], tokenize=False)
    assert stats["tokens"]["max"] == len(tok(rendered, add_special_tokens=False)["input_ids"])
    assert stats["assistant_tokens"]["max"] > 0 and stats["truncated"]["count"] == 0


def test_load_tokenizer_variants(bpe_folder, tmp_path):
    from_file = load_tokenizer(bpe_folder / "raw-tokenizer.json")
    from_dir = load_tokenizer(bpe_folder)
    text = "the valley has four towns"
    assert from_file(text)["input_ids"] == from_dir(text)["input_ids"]
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "vocab.txt").write_text("x")
    with pytest.raises(ValueError, match="not a tokenizer"):
        load_tokenizer(tmp_path / "vocab.txt")


def test_bare_tokenizers_object_and_no_tokenizer(word_tokenizer):
    bare = word_tokenizer.backend_tokenizer
    assert Counting(bare).count("<|im_start|>user a b<|im_end|>") == 5
    approx = Counting(None)
    assert approx.count("Hello, world!") == 4 and "approximate" in approx.name


@pytest.mark.skipif(not (DEMO_TOKENIZER / "tokenizer.json").exists(), reason="no demo tokenizer")
def test_demo_tokenizer_is_the_default():
    tok = load_tokenizer(None)
    assert Counting(tok).template == "tokenizer"
    assert tok("hello")["input_ids"]


# ---------------------------------------------------------------- rendering


def test_render_examples(tmp_path, word_tokenizer):
    sft = validate(write_jsonl(tmp_path / "s.jsonl", [conv(("user", "hi"), ("assistant", "yo"))] * 5))
    out = render_examples(sft, n=2, tokenizer=word_tokenizer)
    assert out == ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"] * 2

    pref = validate(write_jsonl(tmp_path / "p.jsonl", [{
        "prompt": [{"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "assistant", "content": "bad"}]}]))
    (text,) = render_examples(pref, tokenizer=word_tokenizer)
    assert text == ("### prompt\n<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n\n"
                    "### chosen\ngood<|im_end|>\n\n### rejected\nbad<|im_end|>\n")

    kto = validate(write_jsonl(tmp_path / "k.jsonl", [
        {"prompt": "p", "completion": "c", "label": False}]))
    assert render_examples(kto, tokenizer=word_tokenizer) == [
        "### prompt\np\n### completion (undesirable)\nc"]
