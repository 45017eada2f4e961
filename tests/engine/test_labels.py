"""Label tasks, repeats, agreement, stats and export to a preference dataset version — on a real
store, with a scripted generator standing in for the models."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import pytest

from store import Store
from store.errors import DuplicateLabel
from tuiapp.engine import data
from tuiapp.engine.label import tasks as labels


@dataclass
class Answer:
    text: str
    meta: dict = field(default_factory=dict)


class ScriptedGenerator:
    """`complete` like Generator's: stores each answer and returns its generation id."""

    def __init__(self, store):
        self.store = store
        self.calls: list[tuple[str, str]] = []

    def complete(self, ref, prompt, params=None, system=None):
        self.calls.append((ref, prompt))
        text = f"{ref} says {prompt.upper()}"
        row = self.store.add_generation(ref, prompt, text)
        return Answer(text, {"generation_id": row.id})


@pytest.fixture
def store():
    s = Store(":memory:")
    yield s
    s.close()


PROMPTS = [{"prompt": f"question {i}", "system": "be brief" if i == 0 else None} for i in range(4)]


def test_new_tasks_pairs_every_model_once_per_prompt(store):
    gen = ScriptedGenerator(store)
    progress = []
    tasks = labels.new_tasks(store, gen, ["base", "sft", "dpo"], PROMPTS, n=2,
                             progress=lambda d, t: progress.append((d, t)))
    assert len(tasks) == 2 * 3  # two prompts x three pairs
    assert progress[-1] == (6, 6)
    assert len(gen.calls) == 2 * 3  # each model answers each prompt once, shared by pairs
    first = tasks[0]
    assert first.task_set == "base vs sft vs dpo"
    assert [c["model_ref"] for c in first.candidates] == ["base", "sft"]
    assert first.candidates[0]["output"] == "base says QUESTION 0"
    assert first.candidates[0]["generation_id"] is not None
    assert first.system == "be brief" and first.source == "generated"
    # sides drawn once, seeded: the same seed gives the same sides
    sides = [labels.display_swapped(t) for t in tasks]
    again = labels.new_tasks(store, ScriptedGenerator(store), ["base", "sft", "dpo"], PROMPTS,
                             n=2, task_set="again")
    assert [labels.display_swapped(t) for t in again] == sides
    assert set(sides) == {True, False}


def test_bad_refs_and_prompts_are_refused_in_words(store, tmp_path):
    with pytest.raises(labels.LabelsError, match="two or more different"):
        labels.new_tasks(store, ScriptedGenerator(store), ["base"], PROMPTS)
    with pytest.raises(labels.LabelsError, match="no such file"):
        labels.load_prompts(tmp_path / "missing.jsonl", store)


def test_load_prompts_reads_jsonl_and_conversations(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [{"prompt": "plain"},
            {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"},
                          {"role": "assistant", "content": "hello"}]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert labels.load_prompts(path) == [{"prompt": "plain", "system": None},
                                         {"prompt": "hi", "system": "sys"}]
    assert len(labels.load_prompts(path, n=1)) == 1


def test_feeder_stays_ahead_and_waits_for_the_labeller(store):
    got, done = [], threading.Event()
    feeder = labels.TaskFeeder(store, ScriptedGenerator(store), ["base", "sft"], PROMPTS,
                               ahead=2, on_task=got.append, on_done=lambda n: done.set()).start()
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert len(got) == 2 and feeder.total == 4  # it waits: two ahead and no more
    feeder.consumed(2)
    assert done.wait(5)
    assert [t.prompt for t in got] == [p["prompt"] for p in PROMPTS]
    feeder.stop(wait=1)


def test_feeder_reports_a_failing_model(store):
    class Broken:
        def complete(self, *a, **k):
            raise RuntimeError("no such model folder")

    errors = []
    feeder = labels.TaskFeeder(store, Broken(), ["base", "sft"], PROMPTS, on_error=errors.append)
    feeder.start()
    feeder._thread.join(5)
    assert errors == ["no such model folder"]


def make_tasks(store, n=6, task_set="s"):
    cands = lambda i: [{"model_ref": "base", "output": f"base {i}"},  # noqa: E731
                       {"model_ref": "sft", "output": f"sft {i}"}]
    return [store.create_label_task(f"p{i}", cands(i), task_set=task_set,
                                    meta={"show_swapped": bool(i % 2)}) for i in range(n)]


def test_duplicate_label_refused_until_undone(store):
    (task,) = make_tasks(store, 1)
    first = store.add_label(task.id, "a")
    with pytest.raises(DuplicateLabel):
        store.add_label(task.id, "b")
    store.undo_label(first.id)
    assert store.add_label(task.id, "b").choice == "b"
    assert [e.kind for e in store.label_events(task.id)] == ["label", "undo", "label"]


def test_repeats_measure_agreement_and_stay_out_of_counts(store):
    t = make_tasks(store, 3)
    store.add_label(t[0].id, "a", swapped=False)
    store.add_label(t[1].id, "b", swapped=True)
    store.add_label(t[2].id, "skip")
    r0 = labels.make_repeat(store, t[0], shown_swapped=True)
    r1 = labels.make_repeat(store, t[1], shown_swapped=False)
    assert labels.is_repeat(r0) and labels.display_swapped(r0) is True
    store.add_label(r0.id, "a", swapped=True)   # agrees (candidate order)
    store.add_label(r1.id, "a", swapped=False)  # disagrees
    ag = labels.agreement(store, "s")
    assert (ag["pairs"], ag["agree"], ag["rate"], ag["noise"]) == (2, 1, 0.5, 0.5)
    st = labels.stats(store, "s", n_boot=50)
    assert (st["tasks"], st["labelled"], st["remaining"], st["repeats"]) == (3, 3, 0, 2)
    assert st["by_choice"] == {"a": 1, "b": 1, "skip": 1}
    assert st["win_rates"]["pairs"][0]["n"] == 2  # repeats and skips are not comparisons


def test_stats_pace_from_elapsed_times(store):
    t = make_tasks(store, 3)
    for task, ms in zip(t, (1000, 2000, 3000), strict=True):
        store.add_label(task.id, "a", elapsed_ms=ms)
    st = labels.stats(store, "s", n_boot=10)
    assert st["median_ms"] == 2000 and st["labels_per_minute"] == pytest.approx(30.0)
    assert any("30.0 labels/min" in line for line in labels.summary_lines(st))


def label_world(store):
    t = make_tasks(store, 6)
    store.add_label(t[0].id, "a")
    store.add_label(t[1].id, "b", swapped=True)
    store.add_label(t[2].id, "tie")
    store.add_label(t[3].id, "skip")
    store.add_label(t[4].id, "both_bad")
    store.add_label(t[5].id, "b", edited="a much better answer")
    store.add_label(labels.make_repeat(store, t[0], True).id, "b")  # repeats never exported
    return t


def test_export_is_a_content_hashed_preference_version(store, tmp_path):
    t = label_world(store)
    version = labels.export(store, "s", home=tmp_path)
    assert version.kind == "preference" and version.rows == 4 and version.source == "labels"
    assert version.name == "labels/s"
    path = tmp_path / "datasets" / f"labels-{version.content_hash[:16]}.jsonl"
    assert version.path == str(path) and data.content_hash(path) == version.content_hash
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["task_id"] for r in rows] == [t[0].id, t[1].id, t[4].id, t[5].id]
    a, b, bad, edited = rows
    assert a["chosen"][0]["content"] == "base 0" and a["rejected"][0]["content"] == "sft 0"
    assert b["chosen"][0]["content"] == "sft 1" and b["chosen_model"] == "sft"
    assert bad["both_bad"] is True and a["both_bad"] is False
    # an edit is chosen against the answer it was written from (the better of the two)
    assert edited["chosen"][0]["content"] == "a much better answer"
    assert edited["rejected"][0]["content"] == "sft 5" and edited["edited"] is True
    assert a["prompt"] == [{"role": "user", "content": "p0"}]
    report = data.validate(path, kind="preference")
    assert report.ok and report.rows == 4
    lin = version.lineage
    assert lin["task_set"] == "s" and lin["models"] == ["base", "sft"]
    assert lin["task_ids"] == [r["task_id"] for r in rows]
    assert lin["label_event_ids"] == [r["label_event_id"] for r in rows]
    assert lin["left_out"] == {"tie": 1, "skip": 1}
    assert version.stats == {"rows": 4, "both_bad": 1, "edited": 1}


def test_export_again_is_idempotent_and_new_labels_make_a_new_version(store, tmp_path):
    t = label_world(store)
    first = labels.export(store, "s", home=tmp_path)
    before = (tmp_path / "datasets" / f"labels-{first.content_hash[:16]}.jsonl").read_bytes()
    assert labels.export(store, "s", home=tmp_path).id == first.id
    store.undo_label(store.live_label(t[2].id).id)
    store.add_label(t[2].id, "a")
    out = tmp_path / "copy.jsonl"
    second = labels.export(store, "s", out=out, home=tmp_path)
    assert second.id != first.id and second.rows == 5
    assert second.content_hash != first.content_hash
    assert out.read_bytes() == (tmp_path / "datasets" / f"labels-{second.content_hash[:16]}.jsonl").read_bytes()
    # the first version's file is untouched: versions are immutable
    assert (tmp_path / "datasets" / f"labels-{first.content_hash[:16]}.jsonl").read_bytes() == before
    assert [v.id for v in store.list_dataset_versions(name="labels/s")] == [first.id, second.id]


def test_export_with_nothing_to_export_says_so(store, tmp_path):
    t = make_tasks(store, 2)
    store.add_label(t[0].id, "tie")
    with pytest.raises(labels.LabelsError, match="no labels to export"):
        labels.export(store, "s", home=tmp_path)


def test_a_rewrite_is_never_a_win_for_the_rewritten_model(store, tmp_path):
    """Issue 23: `e` on A saved as "your rewrite beats A" counted as a win for A's model."""
    t = make_tasks(store, 4)
    store.add_label(t[0].id, "a")  # base beats sft
    store.add_label(t[1].id, "b")  # sft beats base
    st = labels.stats(store, "s", n_boot=20)
    before = st["win_rates"]["pairs"][0]
    store.add_label(t[2].id, "a", edited="the person's answer")  # rewrite of base's answer
    store.add_label(t[3].id, "b", swapped=True, edited="another one")  # rewrite of sft's
    st = labels.stats(store, "s", n_boot=20)
    (row,) = st["win_rates"]["pairs"]
    assert (row["a"], row["b"]) == ("base", "sft")
    assert (row["wins"], row["losses"], row["n"]) == (before["wins"], before["losses"], 2) == (1, 1, 2)
    assert [s["score"] for s in st["win_rates"]["strengths"]] == pytest.approx([0.0, 0.0])
    assert st["rewritten"] == {"base": 1, "sft": 1}
    # sft's answer was shown as A (swapped): both rewrites were pressed as `e` (rewrite A)
    assert st["by_key"] == {"A": 1, "B": 1, "rewrite A": 2}
    assert any("rewrites" in line and "base 1" in line for line in labels.summary_lines(st))
    assert labels.comparisons(store, "s") == [("base", "sft", "a"), ("base", "sft", "b")]
    # in the export the rewrite is chosen and the answer it replaced rejected
    rows, _ = labels.export_rows(store, "s")
    by_task = {r["task_id"]: r for r in rows}
    r2, r3 = by_task[t[2].id], by_task[t[3].id]
    assert (r2["chosen"][0]["content"], r2["rejected"][0]["content"]) == ("the person's answer", "base 2")
    assert (r2["chosen_model"], r2["rejected_model"]) == ("edited", "base")
    assert (r3["chosen"][0]["content"], r3["rejected"][0]["content"]) == ("another one", "sft 3")


def test_one_run_has_one_ref_in_tasks_and_win_rates(store):
    """Issue 23: tasks made with `base,1` stored `1`, blind A/B stored `run:1`."""
    gen = ScriptedGenerator(store)
    with pytest.raises(labels.LabelsError):
        labels.pairs_of(["1", "run:1"])  # the same run twice
    (task,) = labels.new_tasks(store, gen, ["base", "1"], PROMPTS[1:2])
    assert task.task_set == "base vs run:1" and task.meta["pair"] == ["base", "run:1"]
    assert [c["model_ref"] for c in task.candidates] == ["base", "run:1"]
    blind = store.create_label_task("p", [{"model_ref": "run:1", "output": "x"},
                                          {"model_ref": "base", "output": "y"}], task_set="blind")
    store.add_label(task.id, "b")
    store.add_label(blind.id, "a")
    st = labels.stats(store, None, n_boot=10)
    assert st["win_rates"]["models"] == ["base", "run:1"]
    (row,) = st["win_rates"]["pairs"]
    assert (row["losses"], row["n"]) == (2, 2)
