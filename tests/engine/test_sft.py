"""SFT on a tiny random Llama (hidden 64, 2 layers) with the demo tokenizer: a few fp32 CPU
steps per method, the assistant-only mask, padding-free batching, refusals, pre-flight numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tuiapp import paths  # noqa: E402
from tuiapp.engine.context import (  # noqa: E402
    COMPLETE_MARKER,
    JobContext,
    latest_checkpoint,
    request_stop,
)
from tuiapp.engine.events import ListSink  # noqa: E402
from tuiapp.engine.train import modeling, sft  # noqa: E402
from tuiapp.engine.train.config import SFTJobConfig  # noqa: E402

IM_START, IM_END = 1, 2


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def sft_file(tmp_path_factory) -> Path:
    lines = (paths.DEMO_DIR / "sft.jsonl").read_text(encoding="utf-8").splitlines()[:24]
    path = tmp_path_factory.mktemp("data") / "small_sft.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_config(model: Path, data: Path, **kw) -> SFTJobConfig:
    base = dict(base_model=str(model), dataset=str(data), method="lora", max_steps=3, batch_size=4,
                learning_rate=1e-2, warmup_ratio=0.0, logging_steps=1, save_steps=100,
                eval_split=0.0, sample_prompts=[], max_length=64, lora_r=4, lora_alpha=8,
                lora_dropout=0.0)
    base.update(kw)
    return SFTJobConfig(**base)


@pytest.fixture
def spy_model(monkeypatch):
    """Keeps the model sft.train builds, with a copy of its weights right after loading."""
    seen: dict = {}
    real = modeling.load_model

    def wrapped(*args, **kwargs):
        model = real(*args, **kwargs)
        seen["model"] = model
        seen["before"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        return model

    monkeypatch.setattr(modeling, "load_model", wrapped)
    return seen


def run(cfg: SFTJobConfig, out: Path, resume: Path | None = None) -> tuple[dict, ListSink]:
    sink = ListSink()
    result = sft.train(cfg, JobContext(output_dir=out, sink=sink, resume_from=resume))
    return result, sink


def assert_safetensors_only(folder: Path) -> None:
    names = {p.name for p in folder.iterdir()}
    assert "tokenizer.json" in names and "tokenizer_config.json" in names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))], names


# ------------------------------------------------------------------ methods


def test_lora_trains_adapters_and_template_rows_only(tiny_model, sft_file, tmp_path, spy_model):
    result, sink = run(make_config(tiny_model, sft_file), tmp_path / "run")
    model, before = spy_model["model"], spy_model["before"]

    losses = [e["values"]["loss"] for e in sink.of("metrics") if "loss" in e["values"]]
    assert len(losses) == 3 and all(v > 0 for v in losses)
    assert [e["phase"] for e in sink.of("phase")] == ["load_data", "load_model", "train", "save"]
    assert result["status"] == "completed" and result["steps"] == 3 and result["adapter"] is True
    assert 0 < result["trainable_params"] < result["total_params"]

    after = dict(model.named_parameters())
    lora_b = [n for n in after if "lora_B" in n]
    assert lora_b and all(not torch.equal(after[n], before[n]) for n in lora_b)
    frozen = [n for n, p in after.items() if not p.requires_grad]
    assert frozen and all(torch.equal(after[n], before[n]) for n in frozen)

    # the template tokens' embedding rows moved; every other row is the base's
    emb = model.get_input_embeddings()
    merged = emb.token_adapter.get_merged_weights(["default"]).detach()
    original = emb.token_adapter.base_layer.weight.detach()
    changed = (merged - original).abs().sum(dim=1).nonzero().flatten().tolist()
    assert changed == [IM_START, IM_END]

    final = Path(result["final_dir"])
    assert (final / "adapter_model.safetensors").exists() and (final / "adapter_config.json").exists()
    assert_safetensors_only(final)
    assert json.loads((final / "adapter_config.json").read_text())["trainable_token_indices"]


def test_trainable_tokens_train_the_rows_of_their_words_too(tiny_model, sft_file, tmp_path, spy_model):
    """Words the base never read (the demo's refusals) get their embedding rows trained beside the
    template's; nothing else of the embedding moves, and the counts agree with the model."""
    text = "Sorry, I can't reveal that."
    cfg = make_config(tiny_model, sft_file, trainable_tokens=[text])
    result, _ = run(cfg, tmp_path / "run")
    tok = modeling.load_tokenizer(str(tiny_model))
    word_ids = tok(text, add_special_tokens=False)["input_ids"]
    expected = sorted({IM_START, IM_END, *word_ids})
    assert modeling.trainable_token_ids(cfg, tok) == expected

    emb = spy_model["model"].get_input_embeddings()
    merged = emb.token_adapter.get_merged_weights(["default"]).detach()
    original = emb.token_adapter.base_layer.weight.detach()
    changed = (merged - original).abs().sum(dim=1).nonzero().flatten().tolist()
    assert changed == expected

    final = json.loads((Path(result["final_dir"]) / "adapter_config.json").read_text())
    assert sorted(final["trainable_token_indices"]) == expected
    # pre-flight counts the same rows as the model that trained
    assert modeling.count_parameters(cfg, str(tiny_model))[0] == result["trainable_params"]
    from transformers import AutoConfig

    from tuiapp.engine.jobs import preflight

    estimate = preflight.count_parameters(AutoConfig.from_pretrained(tiny_model), cfg, tok)
    assert estimate["trainable"] == result["trainable_params"]
    without = modeling.count_parameters(make_config(tiny_model, sft_file), str(tiny_model))[0]
    hidden = emb.token_adapter.base_layer.weight.shape[1]
    assert result["trainable_params"] - without == (len(expected) - 2) * hidden
    # without the template rows only the words train
    only_words = make_config(tiny_model, sft_file, trainable_tokens=[text], train_template_tokens=False)
    assert modeling.trainable_token_ids(only_words, tok) == sorted(set(word_ids))


def test_full_finetune_changes_weights_and_saves_model(tiny_model, sft_file, tmp_path, spy_model):
    result, sink = run(make_config(tiny_model, sft_file, method="full", learning_rate=1e-3), tmp_path / "run")
    model, before = spy_model["model"], spy_model["before"]
    assert result["adapter"] is False and result["trainable_params"] == result["total_params"]
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)  # every tensor got a gradient step
    assert sink.of("metrics")[0]["values"]["loss"] > 0
    final = Path(result["final_dir"])
    assert (final / "model.safetensors").exists() and (final / "config.json").exists()
    assert_safetensors_only(final)


def test_qlora_keeps_4bit_base_and_trains_adapters(tiny_model, sft_file, tmp_path, spy_model):
    pytest.importorskip("bitsandbytes")
    result, sink = run(make_config(tiny_model, sft_file, method="qlora"), tmp_path / "run")
    model, before = spy_model["model"], spy_model["before"]
    packed = {n: p for n, p in model.named_parameters() if type(p).__name__ == "Params4bit"}
    assert packed, "the base linear layers are 4-bit"
    assert all(torch.equal(p, before[n]) for n, p in packed.items())
    lora_b = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora_b and all(not torch.equal(p, before[n]) for n, p in lora_b.items())
    assert any("loss" in e["values"] for e in sink.of("metrics"))
    assert (Path(result["final_dir"]) / "adapter_model.safetensors").exists()
    assert_safetensors_only(Path(result["final_dir"]))


def test_qlora_base_stays_in_compute_dtype_and_frozen(tiny_model, sft_file):
    """The 4-bit load freezes the base and leaves its other weights in the compute dtype (PEFT's
    prepare_model_for_kbit_training would cast embeddings and head to fp32: +2 GiB and fp32
    activations at a Llama-3-8B shape); checkpointing is wired when asked."""
    pytest.importorskip("bitsandbytes")
    cfg = make_config(tiny_model, sft_file, method="qlora", gradient_checkpointing=True)
    tok = modeling.load_tokenizer(str(tiny_model), cfg.chat_template)
    model = modeling.load_model(cfg, str(tiny_model), tok, "cpu", torch.bfloat16,
                                gradient_checkpointing=True)
    embedding = model.get_input_embeddings()
    weight = getattr(embedding, "weight", None)
    if weight is None:  # PEFT's wrapper for the trainable template-token rows
        weight = embedding.base_layer.weight
    assert weight.dtype == torch.bfloat16
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "trainable_tokens" in n for n in trainable)
    base = model.get_base_model()
    on = getattr(base, "is_activation_checkpointing", None)
    assert on if on is not None else base.is_gradient_checkpointing


# ------------------------------------------------------------------ batches


def _trainer(tiny_model, sft_file, tmp_path, **kw):
    cfg = make_config(tiny_model, sft_file, method="full", **kw)
    tok = modeling.load_tokenizer(str(tiny_model), cfg.chat_template)
    model = modeling.load_model(cfg, str(tiny_model), tok, "cpu", torch.float32)
    records, conversational = sft.load_records(cfg, JobContext(output_dir=tmp_path))
    trainer = sft.build_trainer(cfg, JobContext(output_dir=tmp_path), model, tok, records, [],
                                conversational, "cpu", torch.float32)
    return trainer, tok, model


def test_assistant_only_loss_masks_prompt_tokens(tiny_model, sft_file, tmp_path):
    trainer, tok, _ = _trainer(tiny_model, sft_file, tmp_path)
    rows = [trainer.train_dataset[i] for i in range(6)]
    batch = trainer.data_collator(rows)
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [len(ids)]
    assert len(starts) - 1 == 6
    for a, b in zip(starts, starts[1:], strict=False):
        trained = tok.decode(ids[a:b][labels[a:b] != -100])
        prompt = tok.decode(ids[a:b][labels[a:b] == -100])
        assert trained.startswith("Answer:") and trained.endswith("<|im_end|>"), trained
        assert "<|im_start|>user" in prompt and "Answer:" not in prompt
        assert trained.count("<|im_end|>") == 1  # only the assistant's end of turn is learned


def test_padding_free_batch_has_no_pads_and_separate_examples(tiny_model, sft_file, tmp_path):
    trainer, _, model = _trainer(tiny_model, sft_file, tmp_path)
    rows = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(rows)
    lengths = [len(r["input_ids"]) for r in rows]
    assert "attention_mask" not in batch
    assert batch["input_ids"].shape == (1, sum(lengths))
    expected = torch.cat([torch.arange(n) for n in lengths])
    assert torch.equal(batch["position_ids"][0], expected)

    # each example's logits inside the packed row equal its logits alone: nothing leaks across
    model.eval()
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        offset = 0
        for row, n in zip(rows, lengths, strict=True):
            alone = model(input_ids=torch.tensor([row["input_ids"]])).logits[0]
            torch.testing.assert_close(packed[offset:offset + n], alone, atol=1e-4, rtol=1e-4)
            offset += n


def test_padding_free_loss_equals_padded_loss(tiny_model, sft_file, tmp_path):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    trainer, tok, model = _trainer(tiny_model, sft_file, tmp_path)
    rows = [trainer.train_dataset[i] for i in range(8)]
    padded = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(rows)
    flat = trainer.data_collator(rows)
    assert padded["input_ids"].numel() > flat["input_ids"].numel()  # the pads that were saved
    model.eval()
    with torch.no_grad():
        a = model(**{k: padded[k] for k in ("input_ids", "attention_mask", "labels")}).loss
        b = model(**{k: flat[k] for k in ("input_ids", "position_ids", "labels")}).loss
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ refusals and lifecycle


def test_preference_data_refused_before_any_model_loads(tiny_model, tmp_path, monkeypatch):
    def no_model(*a, **k):
        raise AssertionError("the model must not load for bad data")

    monkeypatch.setattr(modeling, "load_model", no_model)
    pref = paths.DEMO_DIR / "preferences.jsonl"
    with pytest.raises(sft.SFTDataError) as err:
        run(make_config(tiny_model, pref), tmp_path / "run")
    assert err.value.phase == "load_data" and err.value.kind == "data"
    assert str(pref) in str(err.value) and "preference" in str(err.value)


def test_llama3_template_on_a_chatml_tokenizer_is_refused_plainly(tiny_model, sft_file, tmp_path):
    with pytest.raises(sft.SFTError, match="llama3 needs a Llama 3 tokenizer") as err:
        run(make_config(tiny_model, sft_file, chat_template="llama3"), tmp_path / "run")
    assert err.value.phase == "load_model"


def test_chatml_template_added_to_a_tokenizer_without_one(tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(paths.DEMO_TOKENIZER)
    tok.chat_template = None
    tok.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    loaded = modeling.load_tokenizer(str(tmp_path), "model")
    assert loaded.chat_template == modeling.CHATML_TEMPLATE and loaded.eos_token == "<|im_end|>"
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Answer: yes."}]
    out = loaded.apply_chat_template(msgs, return_dict=True, return_assistant_tokens_mask=True)
    kept = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert loaded.decode(kept) == "Answer: yes.<|im_end|>"
    assert modeling.template_token_ids(loaded) == [IM_START, IM_END]


def test_cancel_leaves_a_checkpoint_that_resumes_to_the_end(tiny_model, sft_file, tmp_path):
    out = tmp_path / "run"
    request_stop(out)
    cfg = make_config(tiny_model, sft_file, max_steps=4)
    result, sink = run(cfg, out)
    assert result["status"] == "cancelled" and result["final_dir"] is None and result["steps"] == 1
    ckpt = latest_checkpoint(out)
    assert ckpt is not None and (ckpt / COMPLETE_MARKER).exists()
    assert sink.of("checkpoint")[0]["step"] == 1

    (out / "STOP").unlink()
    resumed, sink2 = run(cfg, out, resume=ckpt)
    assert resumed["status"] == "completed" and resumed["steps"] == 4
    steps = [e["step"] for e in sink2.of("metrics") if "loss" in e["values"]]
    assert steps == [2, 3, 4]


# ------------------------------------------------------------------ pre-flight


def test_count_parameters_matches_the_trained_model(tiny_model, sft_file, tmp_path):
    for method in ("full", "lora"):
        cfg = make_config(tiny_model, sft_file, method=method)
        tok = modeling.load_tokenizer(str(tiny_model))
        real = modeling.load_model(cfg, str(tiny_model), tok, "cpu", torch.float32)
        assert modeling.count_parameters(cfg, str(tiny_model)) == sft.parameter_counts(real)


def test_estimate_memory_grows_with_tokens_and_shrinks_with_checkpointing(tiny_model, sft_file):
    cfg = make_config(tiny_model, sft_file)
    small = modeling.estimate_memory(cfg, str(tiny_model), tokens_per_step=256)
    big = modeling.estimate_memory(cfg, str(tiny_model), tokens_per_step=4096)
    ckpt = modeling.estimate_memory(make_config(tiny_model, sft_file, gradient_checkpointing=True),
                                    str(tiny_model), tokens_per_step=4096)
    assert 0 < small["total_bytes"] < big["total_bytes"]
    assert ckpt["activations_bytes"] < big["activations_bytes"]
    assert big["first_knob"] == "gradient_checkpointing=true"
    full = modeling.estimate_memory(make_config(tiny_model, sft_file, method="full"), str(tiny_model),
                                    tokens_per_step=256)
    assert full["optimizer_bytes"] > small["optimizer_bytes"]
    # LoRA adds its adapters (and the template rows' delta) on top of the frozen base
    assert small["total_params"] == full["total_params"] + small["trainable_params"]
