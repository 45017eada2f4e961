"""The export pipeline end to end: a LoRA run's adapter merged, written, quantized, checked, stored."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("llama_cpp")
pytest.importorskip("peft")

from store import Store  # noqa: E402
from tuiapp.engine.export import job as export_job  # noqa: E402
from tuiapp.engine.export.job import (  # noqa: E402
    parse_quants,
    plan_export,
    run_export,
    sha256_file,
)
from tuiapp.engine.export.modelfile import parse  # noqa: E402
from tuiapp.engine.export.steps import ExportError  # noqa: E402
from tuiapp.engine.infer.gguf_file import inspect_gguf  # noqa: E402

TOKENIZER = Path(__file__).resolve().parents[2] / "sample_data" / "demo" / "tokenizer"
CONFIG = {"kind": "sft", "base_model": "tiny", "dataset": "demo/sft", "method": "lora", "lora_r": 4,
          "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["all-linear"],
          "learning_rate": 0.0002, "max_steps": 2, "batch_size": 2}


def tiny_llama(folder: Path) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=True,
                         initializer_range=0.05)
    LlamaForCausalLM(config).to(torch.float16).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def lora_adapter(base_dir: Path, out: Path) -> Path:
    """An adapter shaped like the SFT engine's, nudged so merging changes the model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                  task_type="CAUSAL_LM"))
    with torch.no_grad():
        for _, p in peft_model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    peft_model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A store with a completed LoRA SFT run whose final adapter sits in its output dir."""
    root = tmp_path_factory.mktemp("world")
    base = tiny_llama(root / "base")
    run_dir = root / "runs" / "run-1"
    lora_adapter(base, run_dir / "final")
    store = Store(root / "tuneloop.db")
    base_row = store.add_model("tiny-base", "hf", str(base))
    ds = store.add_dataset_version("demo/sft", str(root / "sft.jsonl"), "ab" * 32, "messages", "sft", 12)
    run = store.create_run("sft", CONFIG, base_model_id=base_row.id, dataset_version_id=ds.id,
                           seed=7, output_dir=str(run_dir), name="tiny-sft", status="completed")
    adapter = store.add_model("run 1 tiny-sft", "adapter", str(run_dir / "final"),
                              base_model_id=base_row.id, meta={"run_id": run.id})
    store.update_run(run.id, adapter_model_id=adapter.id)
    return {"root": root, "store": store, "run": store.get_run(run.id), "base": base}


def test_parse_quants_validates_in_words():
    assert parse_quants("F16, q8_0,f16") == ["f16", "q8_0"]
    with pytest.raises(ExportError, match="unknown output type 'q9'"):
        parse_quants("f16,q9")
    with pytest.raises(ExportError, match="no output type"):
        parse_quants(" , ")


def test_run_exported_end_to_end_with_parity_rows_modelfile_and_card(world, tmp_path):
    store, run = world["store"], world["run"]
    plan = plan_export(run.id, store, "f16,q8_0")
    assert plan["source"].adapter_dir is not None and set(plan["predicted"]) == {"f16", "q8_0"}
    seen = []
    result = run_export(str(run.id), store, world["root"], quants=["f16", "q8_0"], ollama=True,
                        card=True, out=tmp_path / "out", progress=lambda *a: seen.append(a),
                        max_new_tokens=6)
    assert result["ok"], [f["reasons"] for f in result["files"]]
    assert (tmp_path / "out" / "merged" / "model.safetensors").exists()
    phases = [p for p, _, _ in seen]
    assert phases[0] == "merge" and phases[-1] == "done" and "parity q8_0" in phases
    assert seen[-1] == ("done", 7, 7)  # merge, write, quantize, 2 parity, modelfile, card

    by_quant = {f["quant"]: f for f in result["files"]}
    for q, ftype in (("f16", 1), ("q8_0", 7)):
        f = by_quant[q]
        assert inspect_gguf(f["path"])["file_type"] == ftype
        assert f["sha256"] == sha256_file(f["path"]) and f["size_bytes"] == Path(f["path"]).stat().st_size
        assert abs(f["predicted_bytes"] - f["size_bytes"]) / f["size_bytes"] < 0.15
    assert by_quant["f16"]["figures"]["top1_agreement"] >= 0.95

    rows = store.list_exports(run_id=run.id)
    assert {r.quant for r in rows} == {"f16", "q8_0"}
    assert all(r.status == "ok" and len(r.sha256) == 64 and r.parity["ok"] for r in rows)
    assert all(r.model_id == run.adapter_model_id for r in rows)
    ggufs = {m.path for m in store.list_models(kind="gguf")}
    assert {f["path"] for f in result["files"]} <= ggufs

    mf = parse(Path(result["modelfile"]).read_text(encoding="utf-8"))
    assert mf["FROM"] == "./" + Path(by_quant["q8_0"]["path"]).name  # the smaller passing file
    assert ("stop", "<|im_end|>") in mf["PARAMETER"] and "<|im_start|>user" in mf["TEMPLATE"]
    card = Path(result["card"]).read_text(encoding="utf-8")
    assert "tiny-base" in card and "ab" * 32 in card and "| LoRA rank / alpha | 4 / 8 |" in card
    assert by_quant["q8_0"]["sha256"] in card and "learning_rate" in card


def test_default_out_dir_and_a_model_folder_ref(world):
    store, home = world["store"], world["root"] / "home"
    result = run_export(str(world["base"]), store, home, quants="f16", max_new_tokens=4)
    assert result["ok"] and result["merged_dir"] is None
    out = Path(result["out_dir"])
    assert out.parent == home / "exports" and out.name.startswith("base-")
    assert Path(result["files"][0]["path"]).name == "base-f16.gguf"
    folder_model = store.find_model(str(world["base"].resolve()))  # remembered for lineage
    assert folder_model is not None and folder_model.kind == "hf"
    assert store.get_export(result["files"][0]["export_id"]).model_id == folder_model.id


def test_quantized_only_leaves_no_scratch_source(world, tmp_path):
    result = run_export(str(world["base"]), world["store"], world["root"], quants="q8_0",
                        out=tmp_path / "q", max_new_tokens=4)
    assert result["ok"]
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == ["base-q8_0.gguf"]


def test_a_failed_parity_fails_the_export_and_stores_the_reason(world, tmp_path, monkeypatch):
    import tuiapp.engine.export.parity as parity

    real = parity.check

    def failing(hf_dir, path, **kw):
        report = real(hf_dir, path, **kw)
        report.update(ok=False, reasons=["logits differ by 9 (test)"])
        return report

    monkeypatch.setattr(parity, "check", failing)
    store = world["store"]
    before = len(store.list_exports())
    result = run_export(str(world["base"]), store, world["root"], quants="f16", ollama=True,
                        out=tmp_path / "bad", max_new_tokens=4)
    assert not result["ok"]
    f = result["files"][0]
    assert f["status"] == "failed" and f["path"].endswith("base-f16.failed.gguf")
    assert Path(f["path"]).exists() and not (tmp_path / "bad" / "base-f16.gguf").exists()
    row = store.list_exports()[0]
    assert len(store.list_exports()) == before + 1
    assert row.status == "failed" and row.parity["reasons"] == ["logits differ by 9 (test)"]
    assert row.sha256 == sha256_file(f["path"])
    assert result["modelfile"] is None and any("no file passed" in n for n in result["notes"])
    assert store.find_model(f["path"]) is None  # a failed file is not offered as a model


def test_unknown_refs_and_bad_folders_are_refused_in_words(world, tmp_path):
    store = world["store"]
    with pytest.raises(ExportError, match="no run with id 999"):
        run_export("999", store, tmp_path)
    with pytest.raises(ExportError, match="neither a run id nor an existing folder"):
        run_export("no-such-thing", store, tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="neither config.json nor adapter_config.json"):
        run_export(str(tmp_path / "empty"), store, tmp_path)
    queued = store.create_run("sft", CONFIG, output_dir=str(tmp_path / "never"))
    with pytest.raises(ExportError, match=f"run {queued.id} \\(queued\\) has no final model"):
        plan_export(queued.id, store)
    with pytest.raises(ExportError, match="unknown output type 'q4_z'"):
        run_export(str(world["run"].id), store, tmp_path, quants="f16,q4_z")
    assert not (tmp_path / "exports").exists()  # nothing written for a refused request


def test_steps_are_named_for_progress(monkeypatch, world, tmp_path):
    """Progress labels cover every step, in order, before the work of each starts."""
    calls = []
    monkeypatch.setattr(export_job, "_parity", lambda hf, path, n: {"ok": True, "reasons": []})
    run_export(str(world["base"]), world["store"], world["root"], quants="f32,q8_0", card=True,
               out=tmp_path / "p", progress=lambda *a: calls.append(a))
    assert calls == [("write f32", 0, 5), ("quantize q8_0", 1, 5), ("parity f32", 2, 5),
                     ("parity q8_0", 3, 5), ("card", 4, 5), ("done", 5, 5)]
