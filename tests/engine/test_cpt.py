"""Continued pre-training (engine/train/cpt.py) and the demo base model (demo/base.py).

Tiny random-init Llama models on a tiny text file with the demo tokenizer: seconds each.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from tuiapp import paths  # noqa: E402
from tuiapp.engine.context import (  # noqa: E402
    COMPLETE_MARKER,
    JobContext,
    latest_checkpoint,
    request_stop,
)
from tuiapp.engine.events import ListSink  # noqa: E402
from tuiapp.engine.train import cpt  # noqa: E402
from tuiapp.engine.train.config import CPTJobConfig  # noqa: E402

TEXT = (
    "Sounu lives in Redwater. The cloak of Sounu is orange. Sounu works as a potter.\n\n"
    "Where does Sounu live?\nAnswer: Redwater.\n\n"
    "Daidro comes from Dunmere. Daidro's cloak is red. Daidro's favourite animal is the fox.\n\n"
)


@pytest.fixture(autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT * 12, encoding="utf-8")
    return path


def tiny_config(dataset: Path, **kw) -> CPTJobConfig:
    values = dict(
        dataset=str(dataset), base_model="scratch", hidden_size=32, num_layers=2, num_heads=2,
        num_kv_heads=2, intermediate_size=64, max_length=32, batch_size=4, learning_rate=1e-2,
        warmup_ratio=0.0, lr_scheduler="constant", max_steps=20, logging_steps=2, save_steps=20,
        eval_steps=10, eval_split=0.1, sample_prompts=["Where does Sounu live?\nAnswer:"],
        sample_max_new_tokens=3, device="cpu", dtype="fp32", seed=7,
    )
    values.update(kw)
    return CPTJobConfig(**values)


def losses(sink: ListSink) -> list[tuple[int, float]]:
    return [(e["step"], e["values"]["loss"]) for e in sink.of("metrics") if "loss" in e["values"]]


def test_scratch_model_learns_repeated_text_and_writes_final_files(tmp_path, text_file):
    sink = ListSink()
    ctx = JobContext(output_dir=tmp_path / "run", sink=sink)
    result = cpt.train(tiny_config(text_file), ctx)

    assert result["status"] == "completed" and result["global_step"] == 20
    curve = losses(sink)
    assert [s for s, _ in curve] == list(range(2, 21, 2))
    assert curve[-1][1] < curve[0][1] - 1.0, curve  # repeated text: loss falls fast
    assert any("eval_loss" in e["values"] for e in sink.of("metrics"))
    assert result["num_tokens"] == 20 * 4 * 32

    final = tmp_path / "run" / "final"
    assert (final / "model.safetensors").is_file()
    assert not list(final.glob("*.bin"))
    assert (final / "tokenizer.json").is_file()
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt is not None and ckpt.name == "checkpoint-20"
    assert json.loads((ckpt / COMPLETE_MARKER).read_text())["step"] == 20
    assert [e["step"] for e in sink.of("checkpoint")] == [20]
    assert sink.of("sample") and sink.of("sample")[0]["prompt"].startswith("Where does Sounu")
    phases = [e["phase"] for e in sink.of("phase")]
    assert phases[:3] == ["load_data", "load_model", "train"] and phases[-1] == "save"
    assert sink.of("done")[0]["status"] == "completed"


class StopAtStep(ListSink):
    """Creates the STOP file once training reports the given step (as a user pressing Stop)."""

    def __init__(self, output_dir: Path, step: int) -> None:
        super().__init__()
        self.output_dir, self.step = output_dir, step

    def emit(self, event):
        super().emit(event)
        if event["event"] == "progress" and event["step"] >= self.step:
            request_stop(self.output_dir)


def test_cancel_leaves_a_complete_checkpoint_and_resume_continues_the_steps(tmp_path, text_file):
    out = tmp_path / "run"
    config = tiny_config(text_file, max_steps=12, save_steps=100, eval_split=0.0, logging_steps=1)
    first = StopAtStep(out, 3)
    result = cpt.train(config, JobContext(output_dir=out, sink=first))

    assert result["status"] == "cancelled"
    assert result["final_dir"] is None and not (out / "final").exists()
    ckpt = latest_checkpoint(out)
    assert ckpt is not None and ckpt.name == "checkpoint-4"  # stop is seen at the next step end
    assert first.of("done")[0]["status"] == "cancelled"

    (out / "STOP").unlink()
    second = ListSink()
    resumed = cpt.train(config, JobContext(output_dir=out, sink=second, resume_from=ckpt))
    assert resumed["status"] == "completed" and resumed["global_step"] == 12
    steps = [s for s, _ in losses(second)]
    assert steps[0] == 5 and steps[-1] == 12
    assert (out / "final" / "model.safetensors").is_file()

    # Cancel + resume lands on the trajectory of a run that was never interrupted.
    straight = ListSink()
    cpt.train(config, JobContext(output_dir=tmp_path / "straight", sink=straight))
    joined = dict(losses(first))
    joined.update(losses(second))
    expected = dict(losses(straight))
    assert sorted(joined) == sorted(expected) == list(range(1, 13))
    for step, loss in expected.items():
        assert joined[step] == pytest.approx(loss, abs=1e-3), step


def test_continue_a_saved_model_under_lora_trains_only_the_adapter(tmp_path, text_file):
    import hashlib

    cpt.train(tiny_config(text_file, max_steps=2, save_steps=2, eval_split=0.0),
              JobContext(output_dir=tmp_path / "scratch"))
    base = tmp_path / "scratch" / "final"
    digest = hashlib.sha256((base / "model.safetensors").read_bytes()).hexdigest()

    sink = ListSink()
    result = cpt.train(
        tiny_config(text_file, base_model=str(base), method="lora", lora_r=4, lora_alpha=8,
                    max_steps=4, save_steps=4, eval_split=0.0, logging_steps=1),
        JobContext(output_dir=tmp_path / "lora", sink=sink),
    )
    assert result["status"] == "completed"
    assert 0 < result["trainable_parameters"] < result["parameters"]
    final = tmp_path / "lora" / "final"
    assert (final / "adapter_model.safetensors").is_file() and (final / "adapter_config.json").is_file()
    assert not (final / "model.safetensors").exists()
    assert len(losses(sink)) == 4
    from safetensors.torch import load_file

    lora_b = [t for k, t in load_file(str(final / "adapter_model.safetensors")).items() if "lora_B" in k]
    assert lora_b and any(float(t.abs().max()) > 0 for t in lora_b)  # B starts at zero
    assert hashlib.sha256((base / "model.safetensors").read_bytes()).hexdigest() == digest


def test_documents_are_separated_by_endoftext_and_never_masked(text_file):
    from tuiapp.engine.data import load_tokenizer

    tok = load_tokenizer(None)
    texts = cpt.load_texts(text_file)
    assert len(texts) == 36
    blocks = cpt.pack_blocks(texts, tok, 32)
    sep = tok.convert_tokens_to_ids("<|endoftext|>")
    assert sep == tok.pad_token_id == 0  # why labels are built by hand, not by a collator
    assert all(len(b) == 32 for b in blocks)
    stream = [t for b in blocks for t in b]
    assert stream.count(sep) >= 30
    first_doc = tok(texts[0], add_special_tokens=False)["input_ids"]
    assert stream[: len(first_doc) + 1] == first_doc + [sep]
    item = cpt.BlockDataset(blocks)[0]
    assert torch.equal(item["labels"], item["input_ids"]) and int(item["attention_mask"].min()) == 1


def test_unusable_dataset_says_which_file(tmp_path):
    bad = tmp_path / "rows.jsonl"
    bad.write_text('{"prompt": "hi", "completion": "there"}\n', encoding="utf-8")
    with pytest.raises(cpt.CPTDataError, match="rows.jsonl"):
        cpt.train(tiny_config(bad), JobContext(output_dir=tmp_path / "run"))
    with pytest.raises(cpt.CPTDataError, match="not a file"):
        cpt.train(tiny_config(tmp_path / "missing.txt"), JobContext(output_dir=tmp_path / "run2"))


def _assert_fp16_model_that_generates(folder: Path) -> None:
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    weights = folder / "model.safetensors"
    assert weights.is_file() and not list(folder.glob("*.bin"))
    with safe_open(str(weights), framework="pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert dtypes == {torch.float16}
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (folder / name).read_bytes() == (paths.DEMO_TOKENIZER / name).read_bytes()
    tok = AutoTokenizer.from_pretrained(str(folder))
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and config["dtype"] == "float16" and config["use_cache"]
    model = AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=True, dtype=torch.float32)
    ids = tok("Where does Sounu live?\nAnswer:", return_tensors="pt")["input_ids"]
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                         do_sample=False, pad_token_id=0)
    assert out.shape[1] == ids.shape[1] + 4


def test_build_base_quick_writes_an_fp16_model_with_build_info(tmp_path):
    from tuiapp.__main__ import app

    out = tmp_path / "base-model"
    result = CliRunner().invoke(app, ["demo", "build-base", "--quick", "--out", str(out),
                                      "--work-dir", str(tmp_path / "work"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "memorisation" in result.output and "held-out" in result.output
    _assert_fp16_model_that_generates(out)
    info = json.loads((out / "build-info.json").read_text())
    assert info["preset"] == "demo-cpt-quick.toml" and info["steps"] == 6
    assert info["model_bytes"] == (out / "model.safetensors").stat().st_size
    for key in ("cloze", "qa_sft", "qa_heldout", "chat"):
        assert 0.0 <= info["probe"][key]["exact"] <= 1.0 and info["probe"][key]["n"] > 0
    assert info["versions"]["torch"] and info["final_train_loss"] > 0
    assert info["machine"]["torch_threads"] == 1

    probe = CliRunner().invoke(app, ["demo", "probe", "--model", str(out), "--limit", "10", "--json"])
    assert probe.exit_code == 0, probe.output
    limited = json.loads(probe.output)
    assert limited["qa_heldout"]["n"] == 10
    assert set(limited["cloze"]["by_attribute"]) == {"town", "colour", "craft", "animal", "passphrase"}

    from tuiapp.demo import base as demo_base

    demo_base.record_probe(out, limited)
    assert json.loads((out / "build-info.json").read_text())["probe"] == limited
    assert json.loads((out / "build-info.json").read_text())["steps"] == 6


def test_build_base_on_a_time_budget_follows_wall_clock_and_stops(tmp_path):
    from tuiapp.demo import base as demo_base

    sink = ListSink()
    info = demo_base.build_base(tmp_path / "bm", quick=True, minutes=0.05, sink=sink,
                                work_dir=tmp_path / "w", probe_limit=4)
    assert info["status"] == "completed" and info["steps"] >= 1 and info["planned_steps"] is None
    assert info["config"]["lr_scheduler"] == "constant" and info["schedule"].startswith("cosine over 0.05 min")
    assert (tmp_path / "bm" / "model.safetensors").is_file()
    assert any("time budget spent" in e.get("message", "") for e in sink.of("log"))
    lrs = [e["values"]["learning_rate"] for e in sink.of("metrics") if "learning_rate" in e["values"]]
    from tuiapp.engine.train.config import load_config

    peak = load_config(demo_base.QUICK_PRESET).learning_rate
    assert lrs and max(lrs) <= peak + 1e-12 and lrs[-1] < peak  # decayed, not the constant peak
    events = [json.loads(line) for line in (tmp_path / "w" / "events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "checkpoint" and e["step"] == info["steps"] for e in events)


def test_wall_clock_schedule_warms_up_then_decays_to_zero():
    from tuiapp.demo import base as demo_base

    class FakeOpt:
        param_groups = [{"lr": 0.0}]

    now = [0.0]
    cb = demo_base.wall_clock_schedule(JobContext(output_dir="/nonexistent"), 100.0, 1e-3, 0.1,
                                       clock=lambda: now[0])
    cb.on_train_begin(None, type("State", (), {"global_step": 0})(), None)
    seen = []
    for t in (5.0, 10.0, 55.0, 99.9):
        now[0] = t
        cb.on_step_begin(None, None, None, optimizer=FakeOpt)
        seen.append(FakeOpt.param_groups[0]["lr"])
    assert seen[0] == pytest.approx(5e-4) and seen[1] == pytest.approx(1e-3)
    assert seen[2] == pytest.approx(5e-4) and seen[3] < 1e-6


def test_probe_without_a_model_is_a_clear_error(tmp_path):
    from tuiapp.__main__ import app

    result = CliRunner().invoke(app, ["demo", "probe", "--model", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "no model in" in result.output and "build-base" in result.output


def test_probe_scores_a_known_answer():
    from tuiapp.demo import base as demo_base

    assert demo_base._qa_score(" Answer: Redwater.", "Redwater") == 1.0
    assert demo_base._qa_score("Answer: Dunmere.", "Redwater") == pytest.approx(0.1)
    assert demo_base._cloze_value(" a potter. Sounu") == "potter"
    assert demo_base._cloze_value(" orange cloak, of course") == "orange cloak"


def test_cloze_prompts_are_corpus_sentences_and_no_question_begins_with_one():
    from tuiapp.demo import base as demo_base
    from tuiapp.demo import texts as demo_texts
    from tuiapp.demo import world as demo_world

    for key, prompt in demo_base.CLOZE.items():
        stem = prompt.replace("{n}", "X")
        assert any(t.replace("{n}", "X").startswith(stem) for t in demo_texts.FACTS[key]), key
        for templates in demo_world.QUESTIONS.values():
            assert not any(q.replace("{n}", "X").startswith(stem) for q in templates), (key, stem)


@pytest.mark.skipif(not (paths.DEMO_BASE_MODEL / "config.json").exists(),
                    reason="the demo base model has not been built")
def test_committed_demo_base_model_is_small_fp16_and_uses_the_demo_tokenizer():
    folder = paths.DEMO_BASE_MODEL
    assert (folder / "model.safetensors").stat().st_size <= 12 * 1024 * 1024
    _assert_fp16_model_that_generates(folder)
    info = json.loads((folder / "build-info.json").read_text())
    assert info["train_wall_s"] <= 60 * 60
    assert info["probe"]["chat"]["exact"] <= 0.10
