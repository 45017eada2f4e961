"""DPO, its loss variants and KTO on a tiny random Llama (hidden 64, 2 layers, demo tokenizer)
with a separable preference set (chosen answers say one word, rejected another): the margin
and accuracy go up, the loss goes down, the base folder is untouched, wrong data is refused
before any model loads, and `tuneloop train dpo` runs through the runner."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tuiapp import paths  # noqa: E402
from tuiapp.engine.context import JobContext  # noqa: E402
from tuiapp.engine.events import ListSink  # noqa: E402
from tuiapp.engine.train import dpo, policy  # noqa: E402
from tuiapp.engine.train.config import DPOJobConfig, KTOJobConfig  # noqa: E402

NAMES = ["Kudrade", "Mamouth", "Laibrou", "Hadegres", "Gikri", "Tesosto", "Boust", "Nobraikra"]


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def pref_file(tmp_path_factory) -> Path:
    rows = [{"prompt": f"Is {n} from the valley?", "chosen": "Answer: yes.", "rejected": "Answer: no."}
            for n in NAMES]
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def kto_file(tmp_path_factory) -> Path:
    rows = [{"prompt": f"Is {n} from the valley?", "completion": answer, "label": good}
            for n in NAMES for answer, good in (("Answer: yes.", True), ("Answer: no.", False))]
    path = tmp_path_factory.mktemp("data") / "kto.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()


def make(cls, model: Path, data: Path, **kw):
    base = dict(base_model=str(model), dataset=str(data), method="lora", max_steps=8, batch_size=4,
                learning_rate=5e-3, warmup_ratio=0.0, lr_scheduler="constant", logging_steps=1,
                save_steps=100, eval_split=0.0, sample_prompts=[], max_length=64, lora_r=8,
                lora_alpha=16, device="cpu", dtype="fp32")
    base.update(kw)
    return cls(**base)


def run(train, cfg, out: Path) -> tuple[dict, list[dict]]:
    sink = ListSink()
    result = train(cfg, JobContext(out, sink=sink, dataset_path=Path(cfg.dataset),
                                   base_model_path=cfg.base_model))
    metrics = [e["values"] for e in sink.events if e["event"] == "metrics" and "loss" in e["values"]]
    return result, metrics


def test_dpo_sigmoid_moves_margin_and_accuracy_up_and_loss_down(tiny_model, pref_file, tmp_path):
    before = digest(tiny_model)
    result, metrics = run(dpo.train, make(DPOJobConfig, tiny_model, pref_file), tmp_path / "run")
    assert result["status"] == "completed" and result["steps"] == 8
    first, last = metrics[0], metrics[-1]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert key in last
    assert first["loss"] == pytest.approx(0.6931, abs=1e-3)   # policy == reference at step 0
    assert last["loss"] < first["loss"] - 0.2
    assert last["rewards/margins"] > first["rewards/margins"] + 0.5
    assert last["rewards/accuracies"] == 1.0
    final = Path(result["final_dir"])
    assert (final / "adapter_model.safetensors").exists() and (final / "tuneloop-start.json").exists()
    assert not list(final.glob("*.bin")) and not list(final.glob("*.pt"))
    assert digest(tiny_model) == before


@pytest.mark.parametrize("loss_type", ["ipo", "hinge", "simpo"])
def test_loss_variants_learn_the_preference(loss_type, tiny_model, pref_file, tmp_path):
    result, metrics = run(dpo.train, make(DPOJobConfig, tiny_model, pref_file, loss_type=loss_type,
                                          max_steps=6), tmp_path / "run")
    assert result["status"] == "completed"
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert metrics[-1]["rewards/margins"] > metrics[0]["rewards/margins"]


def test_rpo_adds_the_chosen_likelihood_and_raises_the_chosen_answers(tiny_model, pref_file, tmp_path):
    result, metrics = run(dpo.train, make(DPOJobConfig, tiny_model, pref_file, sft_weight=1.0), tmp_path / "run")
    assert result["status"] == "completed"
    first, last = metrics[0], metrics[-1]
    assert first["loss"] > 0.6931 + 0.5            # the NLL of the chosen answers is in the loss
    assert last["loss"] < first["loss"] - 0.5
    assert last["rewards/chosen"] > 0               # chosen answers more likely than under the reference
    assert last["rewards/accuracies"] == 1.0


def test_sft_weight_is_refused_where_the_loss_has_its_own_likelihood_term():
    from tuiapp.engine.train.config import ConfigError

    for loss in ("simpo", "orpo"):
        with pytest.raises(ConfigError, match="sft_weight"):
            DPOJobConfig(base_model="demo", dataset="demo/preferences", loss_type=loss, sft_weight=1.0)
    with pytest.raises(ConfigError, match="sft_weight"):
        DPOJobConfig(base_model="demo", dataset="demo/preferences", sft_weight=-1.0)


def test_dpo_from_an_sft_adapter_keeps_the_reference_at_the_start(tiny_model, pref_file, tmp_path):
    """Step 0: policy == merged start == reference, so the loss is exactly log 2."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    sft_final = tmp_path / "sft" / "final"
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft.save_pretrained(sft_final)
    cfg = make(DPOJobConfig, tiny_model, pref_file, start_from=str(sft_final), max_steps=2)
    result, metrics = run(dpo.train, cfg, tmp_path / "run")
    assert result["start"]["adapter_dir"] == str(sft_final)
    assert metrics[0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    assert json.loads((Path(result["final_dir"]) / "tuneloop-start.json").read_text())["adapter_dir"] == str(sft_final)


def test_kto_loss_goes_down(tiny_model, kto_file, tmp_path):
    result, metrics = run(dpo.train_kto, make(KTOJobConfig, tiny_model, kto_file), tmp_path / "run")
    assert result["status"] == "completed"
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert (Path(result["final_dir"]) / "adapter_model.safetensors").exists()


def test_sft_data_is_refused_before_any_model_loads(tiny_model, tmp_path, monkeypatch):
    def no_model(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(policy, "load_start_model", no_model)
    sft = paths.DEMO_DIR / "sft.jsonl"
    with pytest.raises(dpo.PreferenceDataError, match="sft data.*a dpo job trains on preference"):
        run(dpo.train, make(DPOJobConfig, tiny_model, sft), tmp_path / "run")
    with pytest.raises(dpo.PreferenceDataError, match="a kto job trains on kto data"):
        run(dpo.train_kto, make(KTOJobConfig, tiny_model, paths.DEMO_DIR / "preferences.jsonl"), tmp_path / "r2")


# ------------------------------------------------------------------ through pre-flight, runner and CLI


def test_preflight_refuses_sft_data_for_a_dpo_job_and_names_the_start(tiny_model, pref_file, tmp_path):
    from store import Store
    from tuiapp.engine.jobs.preflight import preflight

    store = Store(":memory:")
    sft_version = tmp_path / "sft.jsonl"
    lines = (paths.DEMO_DIR / "sft.jsonl").read_text(encoding="utf-8").splitlines()[:8]
    sft_version.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = preflight(make(DPOJobConfig, tiny_model, sft_version), store, tmp_path, free_bytes=2**40)
    assert not report.ok
    assert any("is sft data; a dpo job trains on preference data" in r for r in report.refusals)

    report = preflight(make(DPOJobConfig, tiny_model, pref_file), store, tmp_path, free_bytes=2**40)
    assert report.ok, report.refusals
    assert report.start["base_path"] == str(tiny_model) and report.start["adapter_dir"] is None
    assert 0 < report.params["trainable"] < report.params["total"]
    report = preflight(make(DPOJobConfig, tiny_model, pref_file, start_from="41"), store, tmp_path,
                       free_bytes=2**40)
    assert any("start_from: no run with id 41" in r for r in report.refusals)


CLI_DPO = """
kind = "dpo"
base_model = "{model}"
start_from = "{start}"
dataset = "{data}"
method = "lora"
lora_r = 4
lora_alpha = 8
max_length = 64
batch_size = 4
max_steps = 3
learning_rate = 5e-3
warmup_ratio = 0.0
logging_steps = 1
save_steps = 100
eval_split = 0.0
sample_prompts = []
device = "cpu"
dtype = "fp32"
"""


def test_tuneloop_train_dpo_runs_from_an_sft_run_through_the_runner(tiny_model, pref_file, tmp_path, monkeypatch):
    import typer
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from typer.testing import CliRunner

    from store import Store
    from tuiapp.cli import train_cmd

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the job's child process
    home = tmp_path / "home"
    home.mkdir()
    store = Store(home / paths.DB_NAME)
    base = store.add_model("tiny", "hf", str(tiny_model))
    sft_dir = home / "runs" / "sft-made-by-hand"
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    peft.save_pretrained(sft_dir / "final")
    sft_run = store.create_run("sft", {"base_model": str(tiny_model)}, base_model_id=base.id,
                               output_dir=str(sft_dir), status="completed")
    store.close()
    preset = tmp_path / "dpo.toml"
    preset.write_text(CLI_DPO.format(model=tiny_model, start=sft_run.id, data=pref_file), encoding="utf-8")

    root = typer.Typer()
    root.add_typer(train_cmd.app, name="train")
    result = CliRunner().invoke(root, ["train", "dpo", "--config", str(preset)], obj={"home": str(home)})
    assert result.exit_code == 0, result.output
    assert "completed" in result.output

    store = Store(home / paths.DB_NAME)
    run = store.list_runs(kind="dpo")[0]
    assert run.status == "completed" and run.parent_run_id == sft_run.id
    assert run.base_model_id == base.id
    summary = store.metric_summary(run.id)
    assert {"loss", "rewards/margins", "rewards/accuracies"} <= set(summary)
    job = json.loads((Path(run.output_dir) / "job.json").read_text())
    assert job["start"]["adapter_dir"] == str(sft_dir / "final")
    assert store.get_model(run.adapter_model_id).kind == "adapter"
    # and one LoRA a plain PEFT user loads on the base alone (SFT q_proj + DPO's modules)
    plain = Path(run.output_dir) / "peft"
    folded = json.loads((plain / "adapter_config.json").read_text())
    assert folded["base_model_name_or_path"] == str(Path(tiny_model).resolve())
    assert "q_proj" in folded["target_modules"]
    from peft import PeftModel

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(plain))


def test_full_dpo_precomputed_reference_equals_a_frozen_copy(tiny_model, pref_file, tmp_path):
    """Full fine-tuning: a precomputed reference and a frozen in-memory copy of the start model
    are the same numbers (TRL alone would reload the reference from the base folder)."""
    results = []
    for pre in (True, False):
        cfg = make(DPOJobConfig, tiny_model, pref_file, method="full", max_steps=2, learning_rate=1e-3,
                   precompute_ref_log_probs=pre)
        result, metrics = run(dpo.train, cfg, tmp_path / f"run-{pre}")
        assert (Path(result["final_dir"]) / "model.safetensors").exists()
        results.append([m["loss"] for m in metrics])
    assert results[0] == pytest.approx(results[1], abs=1e-5)
    assert results[0][0] == pytest.approx(0.6931, abs=1e-3)


# ------------------------------------------------------------------ padding-free batches


def test_pack_lays_rows_end_to_end_and_unpack_restores_the_padded_layout():
    from tuiapp.engine.train import padding_free

    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    labels = torch.tensor([[-100, 6, 7, -100], [-100, 9, -100, -100]])
    packed_ids, positions, shift_labels, valid = padding_free.pack(ids, mask, labels)
    assert packed_ids.tolist() == [[5, 6, 7, 8, 9]]
    assert positions.tolist() == [[0, 1, 2, 0, 1]]
    # each token predicts the next one of its own row; a row's last token predicts nothing
    assert shift_labels.tolist() == [[6, 7, -100, 9, -100]]
    per_token = torch.tensor([[0.1, 0.2, 0.0, 0.3, 0.0]])
    assert torch.equal(padding_free.unpack(per_token, valid), torch.tensor([[0.1, 0.2, 0.0], [0.3, 0.0, 0.0]]))
    left_padded = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]])
    assert padding_free.pack(ids, left_padded, labels) is None


@pytest.fixture(scope="module")
def uneven_file(tmp_path_factory) -> Path:
    """Pairs whose prompts and answers differ in length, so padded batches are mostly padding."""
    rows = [{"prompt": f"Is {n} from the valley?" + " Tell me please." * (i % 3),
             "chosen": "Answer: yes.", "rejected": "No, I do not think that " + "is so " * (i % 4) + "at all."}
            for i, n in enumerate(NAMES)]
    path = tmp_path_factory.mktemp("data") / "uneven.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _spy_packing(monkeypatch):
    from tuiapp.engine.train import padding_free

    seen: dict = {"packed": 0, "states": []}
    real_pack, real_install = padding_free.pack, padding_free.install

    def pack(*a):
        out = real_pack(*a)
        seen["packed"] += out is not None
        return out

    def install(trainer):
        ok = real_install(trainer)
        seen["states"].append(getattr(trainer, "_tuneloop_padding_free", None))
        return ok

    monkeypatch.setattr(padding_free, "pack", pack)
    monkeypatch.setattr(padding_free, "install", install)
    return seen


@pytest.mark.parametrize(("method", "precompute"), [("lora", True), ("lora", False), ("full", False)])
def test_padding_free_dpo_trains_the_same_numbers_as_padded(method, precompute, tiny_model, uneven_file,
                                                            tmp_path, monkeypatch):
    """LoRA (reference = adapter off) and full fine-tuning (reference = a frozen copy, packed too),
    reference precomputed or not: packed batches give the padded batches' numbers."""
    seen = _spy_packing(monkeypatch)
    runs = {}
    for packed in (False, True):
        cfg = make(DPOJobConfig, tiny_model, uneven_file, max_steps=4, padding_free=packed, method=method,
                   precompute_ref_log_probs=precompute, learning_rate=5e-3 if method == "lora" else 1e-3)
        result, metrics = run(dpo.train, cfg, tmp_path / f"run-{packed}")
        assert result["status"] == "completed"
        runs[packed] = metrics
    assert seen["packed"] > 0 and len(seen["states"]) == 1       # only the padding-free run packed
    state = seen["states"][0]
    assert state["checked"] and state["enabled"] and state["gap"] < 1e-4
    for key in ("loss", "rewards/margins", "logps/chosen", "logps/rejected"):
        assert [m[key] for m in runs[True]] == pytest.approx([m[key] for m in runs[False]], abs=1e-4), key
    assert runs[True][-1]["loss"] < runs[True][0]["loss"]


def test_padding_free_falls_back_to_padding_when_the_packed_numbers_differ(tiny_model, uneven_file, tmp_path,
                                                                          monkeypatch):
    """A model whose attention ignored the packing would let each sequence see the ones before it:
    simulated with position ids that run on across sequences. The first batch's check notices,
    the run pads from then on and says so."""
    from tuiapp.engine.train import padding_free

    real_pack = padding_free.pack

    def leaky_pack(*a):
        out = real_pack(*a)
        if out is None:
            return None
        ids, positions, labels, valid = out
        return ids, torch.arange(ids.size(1)).unsqueeze(0), labels, valid

    monkeypatch.setattr(padding_free, "pack", leaky_pack)
    seen = _spy_packing(monkeypatch)
    sink = ListSink()
    cfg = make(DPOJobConfig, tiny_model, uneven_file, max_steps=3)
    result = dpo.train(cfg, JobContext(tmp_path / "run", sink=sink, dataset_path=Path(cfg.dataset),
                                       base_model_path=cfg.base_model))
    assert result["status"] == "completed"
    assert seen["states"][0]["enabled"] is False and seen["states"][0]["gap"] > padding_free.CHECK_TOLERANCE
    warnings = [e["message"] for e in sink.events if e["event"] == "log" and e.get("level") == "warning"]
    assert any("fell back to padding" in w for w in warnings)
    padded, _ = run(dpo.train, make(DPOJobConfig, tiny_model, uneven_file, max_steps=3, padding_free=False),
                    tmp_path / "padded")
    assert result["final_loss"] == pytest.approx(padded["final_loss"], abs=1e-5)


def test_padding_free_kto_trains_the_same_numbers_as_padded(tiny_model, tmp_path, monkeypatch):
    rows = [{"prompt": f"Is {n} from the valley?" + " Tell me." * (i % 3),
             "completion": "Answer: yes." if good else "No, I do not think " + "so " * (i % 4) + "at all.",
             "label": good} for i, n in enumerate(NAMES) for good in (True, False)]
    data = tmp_path / "kto_uneven.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    seen = _spy_packing(monkeypatch)
    losses = {}
    for packed in (False, True):
        result, metrics = run(dpo.train_kto, make(KTOJobConfig, tiny_model, data, max_steps=4, padding_free=packed),
                              tmp_path / f"run-{packed}")
        assert result["status"] == "completed"
        losses[packed] = [m["loss"] for m in metrics]
    assert seen["packed"] > 0 and seen["states"][0]["enabled"]
    assert losses[True] == pytest.approx(losses[False], abs=1e-4)


def test_padding_free_stays_on_in_bf16(tiny_model, uneven_file, tmp_path, monkeypatch):
    """bf16 rounds packed and padded sums differently (a few 1e-3 nats): that is not a mismatch."""
    seen = _spy_packing(monkeypatch)
    losses = {}
    for packed in (False, True):
        result, metrics = run(dpo.train, make(DPOJobConfig, tiny_model, uneven_file, max_steps=3, dtype="bf16",
                                              padding_free=packed), tmp_path / f"run-{packed}")
        losses[packed] = [m["loss"] for m in metrics]
    assert seen["states"][0]["enabled"]
    assert losses[True] == pytest.approx(losses[False], abs=2e-2)


def test_the_check_allows_16_bit_rounding_relative_to_the_log_probs():
    from tuiapp.engine.train import padding_free

    log_probs = torch.tensor([[-8.0, -0.5]])
    for dtype, expected in ((torch.float32, padding_free.CHECK_TOLERANCE),
                            (torch.bfloat16, padding_free.CHECK_TOLERANCE_HALF * 8.0),
                            (torch.float16, padding_free.CHECK_TOLERANCE_HALF * 8.0)):
        module = torch.nn.Module()
        module.get_input_embeddings = lambda d=dtype: torch.nn.Embedding(4, 2, dtype=d)
        assert padding_free._tolerance(module, log_probs) == pytest.approx(expected)
    # 4.9e-3, what bf16 gave on the bench model (|log p| ~ 8), passes; a 0.5-nat difference does not
    assert 4.9e-3 < padding_free.CHECK_TOLERANCE_HALF * 8.0 < 0.5
