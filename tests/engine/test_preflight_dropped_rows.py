"""Pre-flight counts the rows each trainer drops or empties (prompt longer than the budget) and
warns with the count, the lines and the knob, or refuses when no row would be left. The counts
are checked against TRL's own trainers on the tiny model: what pre-flight says is what happens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from tuiapp import paths  # noqa: E402
from tuiapp.engine import data  # noqa: E402
from tuiapp.engine.jobs.preflight import PreflightReport  # noqa: E402
from tuiapp.engine.jobs.preflight_drop import check_dropped_rows  # noqa: E402
from tuiapp.engine.train.config import (  # noqa: E402
    DPOJobConfig,
    GRPOJobConfig,
    KTOJobConfig,
    PPOJobConfig,
    RewardJobConfig,
    SFTJobConfig,
)

LONG = " ".join(["the valley road runs past the mill and the old bridge"] * 12)  # ~130 tokens


@pytest.fixture(scope="module")
def tok():
    """The demo tokenizer (2k BPE vocabulary, ChatML template): tiny, local, real."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(paths.DEMO_TOKENIZER)


def _write(tmp_path: Path, rows: list[dict], name: str = "rows.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _check(config, path: Path, tok) -> PreflightReport:
    rep = data.validate(path)
    assert rep.ok, rep.errors
    report = PreflightReport(kind=config.kind)
    check_dropped_rows(report, config, rep, tok)
    return report


def _pairs(long_at: set[int], n: int = 6) -> list[dict]:
    return [{"prompt": (LONG if i in long_at else f"Is place {i} in the valley?"),
             "chosen": "Yes, it is.", "rejected": "No."} for i in range(n)]


def _cfg(cls, path: Path, **kw):
    return cls(base_model="unused", dataset=str(path), max_length=64, **kw)


def test_dpo_counts_prompts_that_fill_max_length_and_names_lines_and_knob(tmp_path, tok):
    path = _write(tmp_path, _pairs({1, 4}))
    report = _check(_cfg(DPOJobConfig, path), path, tok)
    assert report.ok
    [warning] = [w for w in report.warnings if "dropped" in w]
    assert "2 of 6 rows" in warning and "4 remain" in warning
    assert "lines 2, 5" in warning and "raise max_length (now 64;" in warning
    assert report.tokens["dropped"]["lines"] == [2, 5]


def test_dpo_refuses_when_every_prompt_fills_max_length(tmp_path, tok):
    path = _write(tmp_path, _pairs(set(range(3)), n=3))
    report = _check(_cfg(DPOJobConfig, path), path, tok)
    assert not report.ok
    assert "all 3 rows are dropped by the DPO trainer" in report.refusals[0]
    assert "nothing would be left to train on" in report.refusals[0]
    # the knob says how far to go: the longest prompt's length + 1
    longest = len(tok.apply_chat_template([{"role": "user", "content": LONG}], tokenize=True,
                                          return_dict=True, add_generation_prompt=True)["input_ids"])
    assert f"{longest + 1} keeps the longest prompt" in report.refusals[0]


def test_simpo_and_orpo_keep_the_rows_but_say_they_train_on_nothing(tmp_path, tok):
    path = _write(tmp_path, _pairs({0}))
    for loss_type, trainer in (("simpo", "CPO (simpo)"), ("orpo", "ORPO")):
        report = _check(_cfg(DPOJobConfig, path, loss_type=loss_type), path, tok)
        assert any(f"keep no answer token in the {trainer} trainer" in w and "1 of 6" in w
                   for w in report.warnings), report.warnings


def test_short_prompts_give_no_finding(tmp_path, tok):
    path = _write(tmp_path, _pairs(set()))
    report = _check(_cfg(DPOJobConfig, path), path, tok)
    assert report.ok and not report.warnings and "dropped" not in report.tokens


def test_kto_drops_long_prompts_and_refuses_when_one_label_is_left(tmp_path, tok):
    rows = [{"prompt": LONG if not good else f"Question {i}?", "completion": "An answer.",
             "label": good} for i, good in enumerate([True, False, True, False])]
    path = _write(tmp_path, rows)
    report = _check(_cfg(KTOJobConfig, path), path, tok)
    assert not report.ok
    assert "2 of 4 rows are dropped by the KTO trainer" in report.refusals[0]
    assert "the 2 left are all desirable: KTO needs both labels" in report.refusals[0]

    rows[3]["prompt"] = "Short again?"
    report = _check(_cfg(KTOJobConfig, path := _write(tmp_path, rows, "kto2.jsonl")), path, tok)
    assert report.ok and any("1 of 4 rows" in w and "lines 2" in w for w in report.warnings)


def test_reward_drops_pairs_longer_than_max_length(tmp_path, tok):
    rows = _pairs(set(), n=4)
    rows[2]["rejected"] = LONG  # a short prompt, but one side of the pair is too long
    path = _write(tmp_path, rows)
    report = _check(_cfg(RewardJobConfig, path), path, tok)
    assert report.ok
    assert any("1 of 4 rows" in w and "chosen or rejected is longer than max_length 64" in w
               and "lines 3" in w for w in report.warnings), report.warnings


def test_ppo_and_grpo_warn_but_never_refuse(tmp_path, tok):
    path = _write(tmp_path, [{"prompt": LONG}, {"prompt": LONG + " again"}])
    ppo = _check(_cfg(PPOJobConfig, path, max_new_tokens=24), path, tok)
    assert ppo.ok and any("2 of 2 rows" in w and "start cut by PPO" in w and "40 prompt tokens" in w
                          for w in ppo.warnings), ppo.warnings
    grpo = _check(_cfg(GRPOJobConfig, path, max_completion_length=24), path, tok)
    assert grpo.ok and any("GRPO does not cut prompts" in w and "lower max_completion_length" in w
                           for w in grpo.warnings), grpo.warnings


def test_sft_without_assistant_only_loss_warns_about_prompt_only_rows(tmp_path, tok):
    rows = [{"messages": [{"role": "user", "content": LONG if i == 1 else "Hi"},
                          {"role": "assistant", "content": "Hello there."}]} for i in range(3)]
    path = _write(tmp_path, rows)
    rep = data.validate(path)
    report = PreflightReport(kind="sft", dataset_rows=3)
    report.tokens = data.compute_stats(rep, tokenizer=tok, max_length=64)
    cfg = _cfg(SFTJobConfig, path, assistant_only_loss=False)
    check_dropped_rows(report, cfg, rep, tok)
    assert any("1 of 3 rows" in w and "train on the prompt alone" in w and "lines 2" in w
               for w in report.warnings), report.warnings
    quiet = PreflightReport(kind="sft", dataset_rows=3, tokens=dict(report.tokens))
    check_dropped_rows(quiet, _cfg(SFTJobConfig, path), rep, tok)  # refused in _check_data instead
    assert not quiet.warnings


# ---------------------------------------------------------------- agreement with TRL


# SmolLM2's shape: ChatML with a default system prompt and no {% generation %} markers.
OWN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.mark.parametrize("template", ["generation-markers", "own-template"])
def test_counts_match_what_trls_trainers_keep(tiny_model, tmp_path, template):
    """The DPO and KTO trainers, built on the same rows, keep exactly rows − dropped, with the
    demo template (generation markers) and with a model's own template without them."""
    pytest.importorskip("trl")
    import shutil

    from tuiapp.engine.context import JobContext
    from tuiapp.engine.events import ListSink
    from tuiapp.engine.train import dpo, modeling
    from tuiapp.engine.train.dpo import as_conversation

    folder = tiny_model
    if template == "own-template":
        folder = tmp_path / "own"
        shutil.copytree(tiny_model, folder)
        own = modeling.load_tokenizer(str(folder))
        own.chat_template = OWN_TEMPLATE
        own.save_pretrained(folder)
    tok = modeling.load_tokenizer(str(folder))
    pairs = _write(tmp_path, _pairs({0, 3, 5}, n=8), "pairs.jsonl")
    kto_rows = [{"prompt": LONG if i in (1, 2) else f"Question {i}?", "completion": "An answer.",
                 "label": i % 2 == 0} for i in range(8)]
    kto = _write(tmp_path, kto_rows, "kto.jsonl")
    ctx = JobContext(tmp_path / "out", sink=ListSink())

    for cls, path, build in ((DPOJobConfig, pairs, dpo.build_dpo_trainer),
                             (KTOJobConfig, kto, dpo.build_kto_trainer)):
        cfg = cls(base_model=str(folder), dataset=str(path), max_length=64, batch_size=2,
                  device="cpu", dtype="fp32", eval_split=0.0)
        report = _check(cfg, path, tok)
        assert report.tokens["dropped"]["count"] == (3 if cls is DPOJobConfig else 2)
        rows = [as_conversation(r) for r in data.validate(path).records]
        model, tokenizer, info = dpo._load(cfg, ctx)
        trainer = build(cfg, ctx, model, tokenizer, rows, [], info["device"])
        assert len(trainer.train_dataset) == len(rows) - report.tokens["dropped"]["count"]


def test_preflight_of_a_dpo_job_carries_the_count(tiny_model, tmp_path):
    from store import Store
    from tuiapp.engine.jobs.preflight import preflight

    path = _write(tmp_path, _pairs({2}), "pairs.jsonl")
    cfg = DPOJobConfig(base_model=str(tiny_model), dataset=str(path), max_length=64)
    report = preflight(cfg, Store(":memory:"), tmp_path, free_bytes=2**40)
    assert report.ok, report.refusals
    assert report.tokens["dropped"]["count"] == 1 and report.tokens["dropped"]["lines"] == [3]
    assert any("1 of 6 rows" in w and "dropped by the DPO trainer" in w for w in report.warnings)
