"""The adaptation methods beyond full/LoRA/QLoRA (issue 19): DoRA, IA3, prefix and prompt tuning,
BitFit, and the refused bottleneck adapters. Each trains a few fp32 CPU steps of SFT on a tiny
random model: loss recorded, the method's parameters changed, the base weights unchanged, the
saved folder loads back to the same answers; then DPO and KTO, pre-flight counts, and the LoRA
count against its formula (test_methods_use.py: generation, export, the runner)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tuiapp import paths  # noqa: E402
from tuiapp.engine.context import JobContext  # noqa: E402
from tuiapp.engine.events import ListSink  # noqa: E402
from tuiapp.engine.train import methods, modeling, sft  # noqa: E402
from tuiapp.engine.train.config import ConfigError, SFTJobConfig  # noqa: E402

PEFT_METHODS = ("dora", "ia3", "prefix", "prompt")


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def sft_file(tmp_path_factory) -> Path:
    lines = (paths.DEMO_DIR / "sft.jsonl").read_text(encoding="utf-8").splitlines()[:16]
    path = tmp_path_factory.mktemp("data") / "small_sft.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def biased_model(tmp_path_factory) -> Path:
    """A random-init Qwen2 (q/k/v projections carry biases) with the demo tokenizer."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    folder = tmp_path_factory.mktemp("tiny-qwen2")
    tok = AutoTokenizer.from_pretrained(paths.DEMO_TOKENIZER)
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=None)
    Qwen2ForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def make_config(model: Path, data: Path, method: str, **kw) -> SFTJobConfig:
    base = dict(base_model=str(model), dataset=str(data), method=method, max_steps=3, batch_size=4,
                learning_rate=3e-2, warmup_ratio=0.0, logging_steps=1, save_steps=100,
                eval_split=0.0, sample_prompts=[], max_length=64, lora_r=4, lora_alpha=8,
                lora_dropout=0.0, num_virtual_tokens=4)
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


def run(cfg: SFTJobConfig, out: Path) -> tuple[dict, ListSink]:
    sink = ListSink()
    return sft.train(cfg, JobContext(output_dir=out, sink=sink)), sink


def changed(seen: dict) -> tuple[set[str], set[str]]:
    """(trainable parameters that moved, frozen parameters that moved)."""
    moved_trainable, moved_frozen = set(), set()
    for name, p in seen["model"].named_parameters():
        if not torch.equal(seen["before"][name], p.detach()):
            (moved_trainable if p.requires_grad else moved_frozen).add(name)
    return moved_trainable, moved_frozen


def probe_logits(model, tok) -> torch.Tensor:
    ids = tok.apply_chat_template([{"role": "user", "content": "Who are you?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits[0, -1].float()


# ------------------------------------------------------------------ SFT per method


@pytest.mark.parametrize("method", PEFT_METHODS)
def test_sft_trains_each_peft_method_and_the_adapter_loads_back(method, tiny_model, sft_file, tmp_path,
                                                                 spy_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result, sink = run(make_config(tiny_model, sft_file, method), tmp_path / "out")
    assert result["status"] == "completed" and result["adapter"] is True
    losses = [e["values"]["loss"] for e in sink.of("metrics") if "loss" in e["values"]]
    assert len(losses) >= 3 and all(x == x and x > 0 for x in losses)
    moved, frozen_moved = changed(spy_model)
    assert moved, "no trainable parameter changed"
    assert not frozen_moved, f"base weights changed: {sorted(frozen_moved)[:3]}"
    assert 0 < result["trainable_params"] < result["total_params"] / 10
    final = Path(result["final_dir"])
    assert (final / "adapter_config.json").exists() and not (final / "model.safetensors").exists()
    peft_type = {"dora": "LORA", "ia3": "IA3", "prefix": "PREFIX_TUNING", "prompt": "PROMPT_TUNING"}[method]
    assert methods.adapter_type(final) == peft_type
    # the saved folder answers exactly like the model that trained
    tok = modeling.load_tokenizer(str(final))
    trained = probe_logits(spy_model["model"], tok)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
    base.resize_token_embeddings(len(tok))
    untouched = probe_logits(base, tok)
    loaded = PeftModel.from_pretrained(base, str(final))
    assert torch.allclose(probe_logits(loaded, tok), trained, atol=1e-4)
    assert not torch.allclose(trained, untouched, atol=1e-4), "the adapter changed no answer"


def test_dora_is_lora_with_a_trained_magnitude(tiny_model, sft_file, tmp_path, spy_model):
    result, _ = run(make_config(tiny_model, sft_file, "dora"), tmp_path / "out")
    moved, _ = changed(spy_model)
    assert any("lora_magnitude_vector" in n for n in moved)
    lora, _ = modeling.count_parameters(make_config(tiny_model, sft_file, "lora"))
    # DoRA = LoRA + one magnitude per output feature of every adapted layer
    assert result["trainable_params"] > lora


def test_bitfit_trains_the_biases_only_and_saves_a_whole_model(biased_model, sft_file, tmp_path, spy_model):
    from transformers import AutoModelForCausalLM

    result, _ = run(make_config(biased_model, sft_file, "bitfit"), tmp_path / "out")
    assert result["status"] == "completed" and result["adapter"] is False
    moved, frozen_moved = changed(spy_model)
    assert moved and all(n.endswith(".bias") for n in moved), sorted(moved)[:5]
    assert not frozen_moved
    biases = sum(p.numel() for n, p in spy_model["model"].named_parameters() if n.endswith(".bias"))
    assert result["trainable_params"] == biases
    final = Path(result["final_dir"])
    assert (final / "model.safetensors").exists() and not (final / "adapter_config.json").exists()
    tok = modeling.load_tokenizer(str(final))
    reloaded = AutoModelForCausalLM.from_pretrained(str(final), dtype=torch.float32)
    assert torch.allclose(probe_logits(reloaded, tok), probe_logits(spy_model["model"], tok), atol=1e-4)


def test_bitfit_on_a_model_without_biases_is_refused_naming_it(tiny_model, sft_file, tmp_path):
    with pytest.raises(sft.SFTError) as err:
        run(make_config(tiny_model, sft_file, "bitfit"), tmp_path / "out")
    assert "no bias parameters" in str(err.value) and str(tiny_model) in str(err.value)
    with pytest.raises(modeling.ModelLoadError, match="no bias parameters"):
        modeling.count_parameters(make_config(tiny_model, sft_file, "bitfit"))


def test_bottleneck_adapters_are_refused_with_the_version_evidence(tiny_model, sft_file):
    with pytest.raises(ConfigError) as err:
        make_config(tiny_model, sft_file, "adapter")
    assert err.value.field == "method"
    assert "transformers~=4.57.6" in str(err.value) and "adapters" in str(err.value)


def test_method_fields_are_validated(tiny_model, sft_file):
    with pytest.raises(ConfigError, match="num_virtual_tokens"):
        make_config(tiny_model, sft_file, "prompt", num_virtual_tokens=0)
    with pytest.raises(ConfigError, match="num_virtual_tokens"):
        make_config(tiny_model, sft_file, "prefix", num_virtual_tokens=64, max_length=64)
    with pytest.raises(ConfigError, match="ia3_feedforward_modules"):
        make_config(tiny_model, sft_file, "ia3", ia3_target_modules=["k_proj"],
                    ia3_feedforward_modules=["down_proj"])
    with pytest.raises(ConfigError, match="trainable_tokens"):
        make_config(tiny_model, sft_file, "ia3", trainable_tokens=["hello"])
    with pytest.raises(ConfigError, match="gradient_checkpointing"):
        make_config(tiny_model, sft_file, "prefix", gradient_checkpointing=True)
    # the LoRA fields are only checked for the LoRA family
    make_config(tiny_model, sft_file, "prefix", lora_r=0)
    with pytest.raises(ConfigError, match="lora_r"):
        make_config(tiny_model, sft_file, "dora", lora_r=0)


def test_ia3_on_named_modules_and_a_refusal_for_names_that_match_nothing(tiny_model, sft_file):
    trainable, _ = modeling.count_parameters(make_config(
        tiny_model, sft_file, "ia3", ia3_target_modules=["v_proj", "down_proj"],
        ia3_feedforward_modules=["down_proj"]))
    # one vector per v_proj output (4 heads x 16 = 64) and per down_proj input (128), 2 layers
    assert trainable == 2 * (64 + 128)
    with pytest.raises(modeling.ModelLoadError, match="ia3_target_modules"):
        modeling.count_parameters(make_config(tiny_model, sft_file, "ia3", ia3_target_modules=["nope_proj"]))


# ------------------------------------------------------------------ DPO per method

NAMES = ["Kudrade", "Mamouth", "Laibrou", "Hadegres", "Gikri", "Tesosto", "Boust", "Nobraikra"]


@pytest.fixture(scope="module")
def pref_file(tmp_path_factory) -> Path:
    import json

    rows = [{"prompt": f"Is {n} from the valley?", "chosen": "Answer: yes.", "rejected": "Answer: no."}
            for n in NAMES]
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run_dpo(model: Path, data: Path, method: str, out: Path, **kw) -> tuple[dict, list[dict]]:
    from tuiapp.engine.train import dpo
    from tuiapp.engine.train.config import DPOJobConfig

    base = dict(base_model=str(model), dataset=str(data), method=method, max_steps=5, batch_size=4,
                learning_rate=2e-2, warmup_ratio=0.0, lr_scheduler="constant", logging_steps=1,
                save_steps=100, eval_split=0.0, sample_prompts=[], max_length=64, lora_r=8,
                lora_alpha=16, device="cpu", dtype="fp32", num_virtual_tokens=4)
    base.update(kw)
    cfg = DPOJobConfig(**base)
    sink = ListSink()
    result = dpo.train(cfg, JobContext(out, sink=sink, dataset_path=data, base_model_path=str(model)))
    metrics = [e["values"] for e in sink.events if e["event"] == "metrics" and "loss" in e["values"]]
    return result, metrics


@pytest.mark.parametrize("method", [*PEFT_METHODS, "bitfit"])
def test_dpo_trains_each_method_against_the_start_as_reference(method, tiny_model, biased_model, pref_file,
                                                               tmp_path):
    import math

    model = biased_model if method == "bitfit" else tiny_model
    result, metrics = run_dpo(model, pref_file, method, tmp_path / "run")
    assert result["status"] == "completed"
    assert result["adapter"] is methods.is_peft(method)
    losses = [m["loss"] for m in metrics]
    assert len(losses) == 5 and losses[-1] < losses[0], losses
    if method in ("dora", "ia3", "bitfit"):
        # these start as the identity: policy == reference at step 0, so the loss is exactly log 2
        assert losses[0] == pytest.approx(math.log(2), abs=1e-3)
    final = Path(result["final_dir"])
    if methods.is_peft(method):
        assert methods.adapter_type(final) == {"dora": "LORA", "ia3": "IA3", "prefix": "PREFIX_TUNING",
                                               "prompt": "PROMPT_TUNING"}[method]
    else:
        assert (final / "model.safetensors").exists()


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_prompt_learning_reference_is_the_base_with_the_adapter_disabled(method, tiny_model, pref_file,
                                                                        tmp_path):
    """Prefix/prompt adapters change the answers from their first step, so a reference that
    were the adapted policy itself would give rewards of exactly 0 at step 0; TRL's reference
    is PEFT's disable_adapter, which answers as the base."""
    from transformers import AutoModelForCausalLM

    from tuiapp.engine.train.config import DPOJobConfig

    _, metrics = run_dpo(tiny_model, pref_file, method, tmp_path / "run", max_steps=1)
    assert abs(metrics[0]["rewards/chosen"]) > 1e-6
    cfg = DPOJobConfig(base_model=str(tiny_model), dataset=str(pref_file), method=method, num_virtual_tokens=4)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
    tok = modeling.load_tokenizer(str(tiny_model))
    base.resize_token_embeddings(len(tok))
    plain = probe_logits(base, tok)
    peft = methods.wrap(base, cfg)
    assert not torch.allclose(probe_logits(peft, tok), plain, atol=1e-5)
    with peft.disable_adapter():
        assert torch.allclose(probe_logits(peft, tok), plain, atol=1e-6)


def test_dpo_from_a_prefix_tuning_run_is_refused_in_words(tiny_model, sft_file, pref_file, tmp_path):
    from tuiapp.engine.train import dpo

    result, _ = run(make_config(tiny_model, sft_file, "prefix", max_steps=1), tmp_path / "sft")
    with pytest.raises(dpo.PreferenceError, match="prefix tuning adapter.*nothing to merge"):
        run_dpo(tiny_model, pref_file, "lora", tmp_path / "dpo", start_from=result["final_dir"])


# ------------------------------------------------------------------ pre-flight


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_preflight_counts_what_each_method_trains_and_estimates_its_memory(kind, tiny_model, biased_model,
                                                                           sft_file, pref_file, tmp_path):
    from rich.console import Console
    from transformers import AutoModelForCausalLM

    from store import Store
    from tuiapp.engine.jobs.preflight import preflight
    from tuiapp.engine.train.config import DPOJobConfig

    store = Store(":memory:")
    estimates = {}
    for method in ("full", "lora", *PEFT_METHODS, "bitfit"):
        model = biased_model if method == "bitfit" else tiny_model
        if kind == "sft":
            cfg = make_config(model, sft_file, method, train_template_tokens=False, device="cpu")
        else:
            cfg = DPOJobConfig(base_model=str(model), dataset=str(pref_file), method=method, lora_r=4,
                               lora_alpha=8, num_virtual_tokens=4, max_length=64, device="cpu")
        report = preflight(cfg, store, tmp_path, free_bytes=2**40)
        assert report.ok, (method, report.refusals)
        # the count the job will train: the method put on the real weights
        tok = modeling.load_tokenizer(str(model))
        real = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
        real.resize_token_embeddings(len(tok))
        if method == "bitfit":
            want = methods.train_biases_only(real)
        elif method == "full":
            want = sum(p.numel() for p in real.parameters())
        else:
            want = sum(p.numel() for p in methods.wrap(real, cfg).parameters() if p.requires_grad)
        assert report.params["trainable"] == want, method
        estimates[method] = report.memory["estimate_bytes"]
        console = Console(width=120, record=True)
        console.print(report.render())
        assert "trainable" in console.export_text()
    assert all(v > 0 for v in estimates.values())
    assert estimates["full"] > max(estimates[m] for m in ("lora", *PEFT_METHODS))


def test_preflight_refuses_bitfit_on_a_model_without_biases_naming_it(tiny_model, sft_file, pref_file, tmp_path):
    from store import Store
    from tuiapp.engine.jobs.preflight import preflight
    from tuiapp.engine.train.config import DPOJobConfig

    store = Store(":memory:")
    for cfg in (make_config(tiny_model, sft_file, "bitfit", device="cpu"),
                DPOJobConfig(base_model=str(tiny_model), dataset=str(pref_file), method="bitfit", device="cpu")):
        report = preflight(cfg, store, tmp_path, free_bytes=2**40)
        assert not report.ok
        assert any("no bias parameters" in r and str(tiny_model) in r for r in report.refusals), report.refusals


# ------------------------------------------------------------------ LoRA against the formula


@pytest.mark.parametrize("rank", [4, 8, 16, 32])
def test_lora_trainable_parameters_on_the_demo_shape_follow_the_formula(rank, sft_file):
    """LoRA on all linear layers (the LM head excluded) adds r x (in + out) per layer: for the
    demo's Llama shape that is r x layers x (q, k, v, o, gate, up, down) — linear in the rank."""
    import json

    from store import Store
    from tuiapp.engine.jobs.preflight import preflight

    cfg = json.loads((paths.DEMO_BASE_MODEL / "config.json").read_text(encoding="utf-8"))
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    head = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * head, cfg["num_key_value_heads"] * head
    per_layer = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + inter) + (inter + h)
    want = rank * layers * per_layer
    job = make_config(paths.DEMO_BASE_MODEL, sft_file, "lora", lora_r=rank, lora_alpha=2 * rank,
                      train_template_tokens=False, device="cpu")
    trainable, total = modeling.count_parameters(job)
    assert trainable == want
    report = preflight(job, Store(":memory:"), None, free_bytes=2**40)
    assert report.ok and report.params["trainable"] == want
    # DoRA adds one magnitude per output feature of each adapted layer on top
    dora, _ = modeling.count_parameters(make_config(paths.DEMO_BASE_MODEL, sft_file, "dora", lora_r=rank,
                                                    train_template_tokens=False))
    assert dora == want + layers * (q + 2 * kv + h + 2 * inter + h)


def test_lora_count_equals_the_model_the_demo_job_builds(sft_file):
    job = make_config(paths.DEMO_BASE_MODEL, sft_file, "lora", lora_r=8, lora_alpha=16, device="cpu")
    tok = modeling.load_tokenizer(str(paths.DEMO_BASE_MODEL), job.chat_template)
    model = modeling.load_model(job, str(paths.DEMO_BASE_MODEL), tok, "cpu", torch.float32)
    built = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert modeling.count_parameters(job, tokenizer=tok)[0] == built


# ------------------------------------------------------------------ KTO, and DPO from a run of a new method


@pytest.mark.parametrize("method", ["ia3", "prompt"])
def test_kto_trains_the_new_methods(method, tiny_model, tmp_path):
    import json

    from tuiapp.engine.train import dpo
    from tuiapp.engine.train.config import KTOJobConfig

    rows = [{"prompt": f"Is {n} from the valley?", "completion": answer, "label": good}
            for n in NAMES for answer, good in (("Answer: yes.", True), ("Answer: no.", False))]
    data = tmp_path / "kto.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = KTOJobConfig(base_model=str(tiny_model), dataset=str(data), method=method, max_steps=4, batch_size=4,
                       learning_rate=2e-2, warmup_ratio=0.0, logging_steps=1, save_steps=100, eval_split=0.0,
                       sample_prompts=[], max_length=64, num_virtual_tokens=4, device="cpu", dtype="fp32")
    sink = ListSink()
    result = dpo.train_kto(cfg, JobContext(tmp_path / "run", sink=sink, dataset_path=data,
                                           base_model_path=str(tiny_model)))
    assert result["status"] == "completed" and result["adapter"] is True
    assert [e for e in sink.events if e["event"] == "metrics" and "loss" in e["values"]]
    assert methods.adapter_type(result["final_dir"]) == {"ia3": "IA3", "prompt": "PROMPT_TUNING"}[method]
