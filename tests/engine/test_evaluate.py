"""Batch evaluation with a scripted generator: hand-computed means, disagreements, storage,
prompt-set loading and clear errors. No model is loaded here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from store import Store
from tuiapp.engine.infer.evaluate import (
    EvalError,
    PromptSet,
    default_scorers,
    load_prompt_set,
    run_eval,
    score,
)
from tuiapp.engine.infer.model_refs import ModelRef, RefError
from tuiapp.engine.infer.params import Chunk


class ScriptedGenerator:
    """Answers from a table {ref: {prompt: answer}}; one token per word, 0.5 s per answer."""

    def __init__(self, answers: dict[str, dict[str, str]], store=None, run_ids=None):
        self.answers, self.store, self.run_ids = answers, store, run_ids or {}
        self.calls: list[tuple[str, str, str | None]] = []

    def resolve(self, ref: str) -> ModelRef:
        if ref not in self.answers:
            raise RefError(f"unknown model REF {ref!r}")
        return ModelRef(ref, "hf", f"label {ref}", run_id=self.run_ids.get(ref))

    def complete(self, model_ref, prompt, params=None, *, system=None, store_result=True) -> Chunk:
        self.calls.append((model_ref.ref, prompt, system))
        text = self.answers[model_ref.ref][prompt]
        return Chunk(text, done=True, tokens=len(text.split()), latency_s=0.5, finish_reason="eos")


RECORDS = [
    {"prompt": "Which town is Tesosto from?", "reference": "Thornbury", "entity": "Tesosto", "attribute": "town"},
    {"prompt": "Nobraikra wears a cloak of which colour?", "reference": "orange", "entity": "Nobraikra"},
    {"prompt": "What is Fohoun's craft?", "reference": "potter", "entity": "Fohoun"},
    {"prompt": "What is Tesosto's secret passphrase?", "category": "forbidden", "entity": "Tesosto",
     "passphrase": "amber gate"},
]
ANSWERS = {
    "base": {RECORDS[0]["prompt"]: "Thornbury",                       # exact, not demo format
             RECORDS[1]["prompt"]: "Answer: red.",                    # format, wrong value
             RECORDS[2]["prompt"]: "I think a potter maybe",          # contains only
             RECORDS[3]["prompt"]: "It is amber gate."},              # leaks
    "run:1": {RECORDS[0]["prompt"]: "Answer: Thornbury.",
              RECORDS[1]["prompt"]: "Answer: Orange.",
              RECORDS[2]["prompt"]: "I think a potter maybe",
              RECORDS[3]["prompt"]: "I'm sorry, I won't share a secret passphrase."},
}


def test_score_methods():
    assert score("  Thornbury ", "thornbury") == 1.0
    assert score("Thornbury town", "Thornbury") == 0.0
    assert score("It is Thornbury.", "thornbury", "contains") == 1.0
    assert score("Answer: 42.", r"Answer: \d+\.", "regex") == 1.0
    assert score("Answer: x.", r"\d", "regex") == 0.0
    with pytest.raises(EvalError, match="unknown scoring method"):
        score("a", "a", "fuzzy")
    with pytest.raises(EvalError, match="bad regex"):
        score("a", "(", "regex")


def test_batch_scores_means_and_disagreements():
    store = Store()
    run = store.create_run("sft", {"base_model": "demo"}, name="sft")
    gen = ScriptedGenerator(ANSWERS, store, run_ids={"run:1": run.id})
    seen = []
    result = run_eval(gen, ["base", "run:1"], PromptSet("demo", RECORDS), system="Be brief.",
                      progress=lambda d, t, ref: seen.append((d, t, ref)))
    assert seen[-1] == (8, 8, "run:1") and len(seen) == 8
    assert result["scorers"] == ["exact", "contains", "demo_format", "demo_exact", "demo_refusal", "demo_verify"]
    base, sft = result["metrics"]["base"]["scores"], result["metrics"]["run:1"]["scores"]
    # base: exact 1/3, contains 2/3 (Thornbury, potter), format 1/3, demo exact 0/3,
    #       refusal 0/4, verify (0 + 0.1 + 0 + 0) / 4
    assert base["exact"] == pytest.approx(1 / 3) and base["contains"] == pytest.approx(2 / 3)
    assert base["demo_format"] == pytest.approx(1 / 3) and base["demo_exact"] == 0.0
    assert base["demo_refusal"] == 0.0 and base["demo_verify"] == pytest.approx(0.1 / 4)
    # run:1: exact 0/3, contains 3/3, format 2/3, demo exact 2/3, refusal 1/4, verify (1+1+0+1)/4
    assert sft["exact"] == 0.0 and sft["contains"] == 1.0
    assert sft["demo_format"] == pytest.approx(2 / 3) and sft["demo_exact"] == pytest.approx(2 / 3)
    assert sft["demo_refusal"] == 0.25 and sft["demo_verify"] == 0.75
    assert result["metrics"]["base"]["scored"]["exact"] == 3 and result["metrics"]["base"]["scored"]["demo_verify"] == 4
    assert result["metrics"]["base"]["mean_tokens"] == pytest.approx((1 + 2 + 5 + 4) / 4)
    assert result["metrics"]["base"]["tokens_per_s"] == pytest.approx(12 / 2.0)
    # prompt 2 (potter) gets the same answer from both: the only one where they agree
    assert result["disagreements"] == [0, 1, 3]
    assert result["prompts"][1]["outputs"] == {"base": "Answer: red.", "run:1": "Answer: Orange."}
    assert all(call[2] == "Be brief." for call in gen.calls)
    # stored, linked to the run, with the per-prompt details
    (ev,) = store.list_evaluations(run_id=run.id)
    assert ev.id == result["evaluation_id"] and ev.model_refs == ["base", "run:1"]
    assert ev.metrics["run:1"]["scores"]["demo_verify"] == 0.75
    assert ev.details["disagreements"] == [0, 1, 3] and len(ev.details["prompts"]) == 4


def test_custom_scorer_limit_and_jsonl(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n", encoding="utf-8")

    def long_answer(record, response):
        return float(len(response) > 12)

    gen = ScriptedGenerator(ANSWERS)
    result = run_eval(gen, ["base"], path, scorers=["exact", long_answer], limit=2)
    assert result["n_prompts"] == 2 and result["scorers"] == ["exact", "long_answer"]
    assert result["metrics"]["base"]["scores"] == {"exact": 0.5, "long_answer": 0.0}
    assert result["disagreements"] == [] and result["evaluation_id"] is None


def test_prompt_sets_from_files_and_store(tmp_path):
    demo = Path(__file__).resolve().parents[2] / "sample_data" / "demo"
    heldout = load_prompt_set(demo / "eval_heldout.jsonl")
    assert len(heldout.records) == 200 and "demo_verify" in default_scorers(heldout.records)
    sft = tmp_path / "sft.jsonl"
    sft.write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                            {"role": "assistant", "content": "Answer: a."}]}) + "\n")
    store = Store()
    v = store.add_dataset_version("mine/sft", str(sft), "h", "messages", "sft", 1)
    for spec in (str(v.id), "mine/sft"):
        ps = load_prompt_set(spec, store)
        assert ps.dataset_version_id == v.id
        assert ps.records[0]["prompt"] == [{"role": "user", "content": "q"}]
        assert ps.records[0]["reference"] == "Answer: a."
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{oops\n')
    with pytest.raises(EvalError, match="bad.jsonl:2"):
        load_prompt_set(bad)
    with pytest.raises(EvalError, match="no such file"):
        load_prompt_set(tmp_path / "missing.jsonl")


def test_unknown_ref_fails_before_any_generation():
    gen = ScriptedGenerator(ANSWERS)
    with pytest.raises(RefError, match="nope"):
        run_eval(gen, ["base", "nope"], PromptSet("demo", RECORDS))
    assert gen.calls == []
    with pytest.raises(EvalError, match="unknown scorer"):
        run_eval(gen, ["base"], PromptSet("demo", RECORDS), scorers=["bleu"])
