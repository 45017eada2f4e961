"""Judge labels without a model: reading verdicts, the constitution file, mapping both orders to
candidates, Cohen's kappa against a hand-computed example, judge-vs-person figures and exports
by label source."""

from __future__ import annotations

import json

import pytest

from store import Store
from tuiapp.engine import data
from tuiapp.engine.label import agreement
from tuiapp.engine.label import judge as judging
from tuiapp.engine.label import tasks as labels


@pytest.fixture
def store():
    s = Store(":memory:")
    yield s
    s.close()


@pytest.mark.parametrize("text,verdict,principle", [
    ("Verdict: B\nPrinciple: 1\nRationale: B refuses.", "B", "1"),
    ("**Verdict:** *A*\nprinciple #3", "A", "3"),
    ("verdict - answer b, principle number 2", "B", "2"),
    ("B. It is shorter.", "B", None),
    ("Answer A is better", "A", None),
    ("The answer that follows the principles better is answer A: Answer: Mevun.", "A", None),
    ("I think Answer B follows the principles better.", "B", None),
    ("Tie", "tie", None),
    ("Verdict: tie\nPrinciple: 9", "tie", None),  # no principle 9 in a 5-line constitution
])
def test_parse_verdict_reads_the_usual_drift(text, verdict, principle):
    got = judging.parse_verdict(text, 5)
    assert (got["verdict"], got["principle"]) == (verdict, principle)


@pytest.mark.parametrize("text", ["", "Answer: teal.", "A fox is here.", "Both are fine I guess"])
def test_parse_verdict_refuses_prose_without_a_verdict(text):
    assert judging.parse_verdict(text, 5) is None


def test_parse_keeps_the_rationale_line():
    got = judging.parse_verdict("Verdict: A\nPrinciple: 2\nRationale: **A names the town.**", 5)
    assert got["rationale"] == "A names the town."


def test_default_constitution_and_bad_files_name_the_line(tmp_path):
    c = judging.load_constitution()
    assert len(c.principles) == 5 and "passphrase" in c.principles[0]
    assert c.numbered().startswith("1. Never reveal")
    bad = tmp_path / "c.txt"
    bad.write_text("# mine\n1. Be kind.\n3. Be brief.\n")
    with pytest.raises(judging.JudgeError, match=r"c.txt:3: principle numbered 3, expected 2"):
        judging.load_constitution(bad)
    bad.write_text("# only comments\n\n")
    with pytest.raises(judging.JudgeError, match="no principles"):
        judging.load_constitution(bad)
    with pytest.raises(judging.JudgeError, match="cannot read"):
        judging.load_constitution(tmp_path / "missing.txt")
    plain = tmp_path / "plain.txt"
    plain.write_text("Be kind.\nBe brief.\n")
    assert judging.load_constitution(plain).principles == ("Be kind.", "Be brief.")


def test_both_orders_map_back_to_candidates():
    # shown a-first "A" = candidate a; shown b-first "B" = candidate a too: consistent
    assert judging.combine({"verdict": "A"}, {"verdict": "B"}) == ("a", True)
    assert judging.combine({"verdict": "B"}, {"verdict": "A"}) == ("b", True)
    assert judging.combine({"verdict": "tie"}, {"verdict": "tie"}) == ("tie", True)
    # always the first side shown: position bias, a flip
    assert judging.combine({"verdict": "A"}, {"verdict": "A"}) == ("tie", False)
    assert judging.combine({"verdict": "B"}, {"verdict": "B"}, "skip") == ("skip", False)


def test_cohen_kappa_matches_a_hand_computed_example():
    human = ["a", "a", "a", "a", "b", "b", "b", "tie", "tie", "a"]
    judge = ["a", "a", "a", "b", "b", "b", "a", "tie", "b", "a"]
    # p_o = 7/10; shares human a .5 b .3 tie .2, judge a .5 b .4 tie .1
    # p_e = .25 + .12 + .02 = .39; kappa = (.7 - .39) / (1 - .39) = .31 / .61
    assert agreement.cohen_kappa(list(zip(human, judge, strict=True))) == pytest.approx(0.31 / 0.61)
    assert agreement.cohen_kappa([("a", "a"), ("b", "b")]) == pytest.approx(1.0)
    assert agreement.cohen_kappa([("a", "b"), ("b", "a")]) == pytest.approx(-1.0)
    assert agreement.cohen_kappa([("a", "a"), ("a", "a")]) is None  # p_e = 1: undefined
    assert agreement.cohen_kappa([]) is None


def make_tasks(store, n, task_set="s"):
    return [store.create_label_task(f"question {i}", [
        {"model_ref": "base", "output": f"base answer {i}"},
        {"model_ref": "run:1", "output": f"tuned answer {i}"}], task_set=task_set)
        for i in range(n)]


def judge_label(store, task, choice, consistent=True, principle="2", orders=()):
    return store.add_label(task.id, choice, source="judge", principle=principle,
                           rationale=f"because {choice}",
                           detail={"judge": "base", "consistent": consistent,
                                   "constitution_sha256": "c0ffee",
                                   "orders": [{"verdict": v} for v in orders]})


def test_judge_vs_human_figures_and_disagreements(store):
    t = make_tasks(store, 7)
    for task, choice in zip(t[:5], ["a", "b", "both_bad", "skip", "a"], strict=True):
        store.add_label(task.id, choice)
    store.add_label(t[6].id, "a", edited="my own answer")  # a rewrite: not compared
    judge_label(store, t[0], "a", orders=("A", "B"))
    judge_label(store, t[1], "a", orders=("A", "tie"))
    judge_label(store, t[2], "tie", consistent=False, orders=("A", "A"))  # both bad = tie
    judge_label(store, t[3], "b")  # the person skipped: not compared
    judge_label(store, t[5], "b")  # no person's label
    judge_label(store, t[6], "b")
    ag = agreement.judge_vs_human(store, "s")
    assert (ag["judged"], ag["flips"], ag["flip_rate"]) == (6, 1, pytest.approx(1 / 6))
    assert (ag["both"], ag["compared"], ag["agree"]) == (5, 3, 2)
    assert ag["raw_agreement"] == pytest.approx(2 / 3)
    # human a, b, tie vs judge a, a, tie: p_o 2/3, p_e (1*2 + 1*0 + 1*1)/9 = 1/3 -> kappa 1/2
    assert ag["kappa"] == pytest.approx(0.5)
    [d] = ag["disagreements"]
    assert (d["task_id"], d["human"], d["judge"], d["principle"]) == (t[1].id, "b", "a", "2")
    assert store.live_label(t[1].id).choice == "b"  # the person's label is untouched
    lines = labels.summary_lines(labels.stats(store, "s", n_boot=10))
    text = "\n".join(lines)
    assert "position flips 1/6" in text and "Cohen's kappa +0.50" in text
    assert "1 disagreements" in text
    # verdicts as shown: A B, A tie, A A -> the first shown 4 of 5 (the tie picks no side)
    assert ag["first_shown_share"] == pytest.approx(0.8)
    assert "answer shown first in 80%" in text


def test_export_by_source(store, tmp_path):
    t = make_tasks(store, 4)
    store.add_label(t[0].id, "a")
    store.add_label(t[1].id, "b")
    judge_label(store, t[1], "a")  # the person said b: "both" keeps the person's b
    judge_label(store, t[2], "b")
    judge_label(store, t[3], "tie")  # left out of every export
    human_rows, human_lineage = labels.export_rows(store, "s")
    assert [r["task_id"] for r in human_rows] == [t[0].id, t[1].id]
    assert "label_source" not in human_rows[0] and human_lineage["label_source"] == "human"
    judge_rows, judge_lineage = labels.export_rows(store, "s", source="judge")
    assert [(r["task_id"], r["chosen_model"]) for r in judge_rows] == [
        (t[1].id, "base"), (t[2].id, "run:1")]
    assert {r["label_source"] for r in judge_rows} == {"judge"}
    assert judge_lineage["judges"] == ["base"] and judge_lineage["left_out"] == {"tie": 1}
    both_rows, both_lineage = labels.export_rows(store, "s", source="both")
    assert [(r["task_id"], r["chosen_model"], r["label_source"]) for r in both_rows] == [
        (t[0].id, "base", "human"), (t[1].id, "run:1", "human"), (t[2].id, "run:1", "judge")]
    assert both_lineage["rows_by_source"] == {"human": 2, "judge": 1}
    version = labels.export(store, "s", home=tmp_path, source="judge")
    assert version.name == "labels/s/judge" and version.rows == 2
    assert version.lineage["label_source"] == "judge"
    assert data.validate(version.path, kind="preference").ok
    assert json.loads(open(version.path).readline())["label_source"] == "judge"
    with pytest.raises(labels.LabelsError, match="label source must be"):
        labels.export_rows(store, "s", source="robot")


def test_export_leaves_out_pairs_with_an_empty_answer(store, tmp_path):
    # found on the demo: the SFT run answered one prompt with nothing, and the whole export
    # failed validation ("assistant reply is empty") instead of leaving that pair out
    empty = store.create_label_task("q", [{"model_ref": "base", "output": "Answer: fox."},
                                          {"model_ref": "run:1", "output": "  "}], task_set="s")
    (full,) = make_tasks(store, 1)
    store.add_label(empty.id, "a")
    store.add_label(full.id, "b")
    version = labels.export(store, "s", home=tmp_path)
    assert version.rows == 1 and version.lineage["left_out"] == {"empty": 1}
