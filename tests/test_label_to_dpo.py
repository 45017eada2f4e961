"""The labelling walk end to end, on a fresh demo workspace: a very short SFT run of the demo
base model, label tasks base vs that run, 20 pairs labelled by keyboard on the real Label
screen, the labels exported as a preference dataset version, and a DPO run from the SFT run on
exactly that version — through the real runner, as `tuneloop train` does. Also: DPO leaves out
pairs labelled "both bad"."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tuiapp import paths

# The screen key, what it means on screen, then in candidate order once the sides are known.
# 21 judgements and one undo: 20 live labels; the tie is left out of the export.
KEYS = ["1", "2", "left", "right", "b", "1", "2", "t", "left", "right", "u",
        "2", "1", "b", "2", "left", "right", "1", "2", "b", "1", "2"]
SCREEN_CHOICE = {"1": "a", "left": "a", "2": "b", "right": "b", "t": "tie", "b": "both_bad"}
N_TASKS = 22


def export_like_rows(flags: list[bool]) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"question {i}"}],
             "chosen": [{"role": "assistant", "content": f"good {i}"}],
             "rejected": [{"role": "assistant", "content": f"bad {i}"}],
             "both_bad": flag, "task_id": i} for i, flag in enumerate(flags)]


def test_dpo_data_leaves_out_pairs_labelled_both_bad(tmp_path):
    from tuiapp.engine.context import JobContext
    from tuiapp.engine.events import ListSink
    from tuiapp.engine.train import dpo

    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in export_like_rows([False, True, False])))
    sink = ListSink()
    ctx = JobContext(output_dir=tmp_path, sink=sink, dataset_path=str(path))
    config = SimpleNamespace(kind="dpo", dataset=str(path))
    rows = dpo.load_records(config, ctx, "preference")
    assert [r["chosen"][0]["content"] for r in rows] == ["good 0", "good 2"]
    assert any("1 pair(s) labelled both bad left out" in e.get("message", "") for e in sink.events)

    path.write_text("".join(json.dumps(r) + "\n" for r in export_like_rows([True, True])))
    with pytest.raises(dpo.PreferenceDataError, match="every pair is labelled both bad"):
        dpo.load_records(config, ctx, "preference")


def test_export_leaves_out_pairs_whose_answers_are_the_same_text():
    from store import Store
    from tuiapp.engine.label import tasks as labels

    store = Store()
    same = store.create_label_task("q1", [{"model_ref": "base", "output": "Paris."},
                                          {"model_ref": "run:1", "output": "Paris. "}])
    differ = store.create_label_task("q2", [{"model_ref": "base", "output": "Rome."},
                                            {"model_ref": "run:1", "output": "Answer: Rome."}])
    store.add_label(same.id, "a")
    store.add_label(differ.id, "b")
    rows, lineage = labels.export_rows(store)
    assert [r["task_id"] for r in rows] == [differ.id]
    assert rows[0]["chosen"][0]["content"] == "Answer: Rome."
    assert lineage["left_out"] == {"identical": 1}


async def label_by_keyboard(store, home: Path, task_set: str) -> list[tuple[int, str]]:
    """Presses KEYS on the real Label screen; returns (task id, choice in candidate order) of
    the labels it should have left live."""
    from tuiapp.app import Settings, TuiApp
    from tuiapp.engine.facade import Engine
    from tuiapp.screens.compare_blind import to_candidate_order

    app = TuiApp(store=store, engine=Engine(store=store, home=home),
                 settings=Settings(home=home, refresh_interval=0, poll_interval=0))

    async def until(predicate, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"the Label screen did not get there: {predicate}"
            await pilot.pause(0.01)

    expected: list[tuple[int, str]] = []
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("f6")
        screen = app.screen
        await until(lambda: getattr(screen, "loaded", False))
        assert screen.task_set == task_set
        screen.repeat_share = 0.0  # every key lands on a new pair: the count stays 20
        for key in KEYS:
            pair, drawn = screen.current, screen.drawn
            await pilot.press(key)
            await until(lambda d=drawn: screen.drawn > d and not screen.saving)
            if key == "u":
                undone, _ = expected.pop()
                assert screen.current.task.id == undone  # the undone pair is back
            else:
                expected.append((pair.task.id,
                                 to_candidate_order(SCREEN_CHOICE[key], pair.swapped)))
                assert f"saved task {pair.task.id}" in str(screen._status_line.content)
    return expected


@pytest.mark.skipif(not (paths.DEMO_BASE_MODEL / "config.json").exists(),
                    reason="the demo base model is not built")
def test_label_twenty_pairs_export_and_train_dpo_on_them(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from tuiapp.demo.proof import DemoOptions, stage_config, train_stage
    from tuiapp.engine.facade import Engine
    from tuiapp.engine.label import tasks as labels
    from tuiapp.workspace import open_workspace

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the training children inherit it
    started = time.perf_counter()
    ws = open_workspace(tmp_path / "home")
    store, home = ws.store, ws.home
    quiet = lambda event: None  # noqa: E731

    # 1. base vs a (very short) SFT run of it
    # (a few steps at a high learning rate: enough for most answers to differ from the base's)
    sft_config = dataclasses.replace(stage_config("sft", DemoOptions(quick=True)), max_steps=6,
                                     learning_rate=5e-3)
    sft, _ = train_stage(store, home, sft_config, "sft", quiet, skip_existing=False)
    sft_ref = f"run:{sft.id}"

    # 2. label tasks: one pair per held-out prompt, short answers
    engine = Engine(store=store, home=home)
    try:
        tasks = labels.new_tasks(store, engine.generator(), ["base", sft_ref],
                                 str(paths.DEMO_DIR / "eval_heldout.jsonl"), n=N_TASKS,
                                 task_set="walk", params={"max_new_tokens": 12})
    finally:
        engine.close_generator()
    assert len(tasks) == N_TASKS
    assert {c["model_ref"] for t in tasks for c in t.candidates} == {"base", sft_ref}

    # 3. twenty labels by keyboard on the real screen
    expected = asyncio.run(label_by_keyboard(store, home, "walk"))
    live = store.live_labels("walk")
    assert [(e.task_id, e.choice) for e in live] == expected and len(live) == 20
    assert sum(e.kind == "undo" for e in store.label_events()) == 1

    # 4. export (the engine call `tuneloop labels export` makes)
    version = Engine(store=store, home=home).export_labels(store, "walk")
    rows = [json.loads(line) for line in Path(version.path).read_text().splitlines()]
    by_id = {t.id: t for t in tasks}
    # a few-step SFT run still answers some prompts exactly like the base: nothing to prefer
    same = {t.id for t in tasks if len({c["output"].strip() for c in t.candidates}) == 1}
    exported = [(t, c) for t, c in expected if c != "tie" and t not in same]
    assert [r["task_id"] for r in rows] == [t for t, _ in exported]
    for row, (task_id, choice) in zip(rows, exported, strict=True):
        a, b = by_id[task_id].candidates
        chosen, rejected = (b, a) if choice == "b" else (a, b)
        assert row["chosen"][0]["content"] == chosen["output"]
        assert row["rejected"][0]["content"] == rejected["output"]
        assert row["both_bad"] == (choice == "both_bad")
    n_both_bad = sum(c == "both_bad" for _, c in exported)
    assert (version.kind, version.rows) == ("preference", len(exported))
    assert len(exported) >= 10 and n_both_bad >= 1, "too few distinct pairs to train on"
    assert version.lineage["task_ids"] == [t for t, _ in exported]
    assert version.lineage["label_event_ids"] == [
        e.id for e in live if e.choice != "tie" and e.task_id not in same]
    assert version.lineage["models"] == sorted(["base", sft_ref])
    n_same = sum(t in same for t, c in expected if c != "tie")
    tied = [t for t, c in expected if c == "tie"]
    assert version.lineage["left_out"] == {k: v for k, v in
                                           {"tie": len(tied), "identical": n_same}.items() if v}

    # 5. DPO from the SFT run on exactly that version
    config = dataclasses.replace(stage_config("dpo", DemoOptions(quick=True), start_run=sft.id),
                                 dataset=str(version.id))
    dpo, _ = train_stage(store, home, config, "dpo", quiet, skip_existing=False)
    assert dpo.status == "completed"
    assert (dpo.dataset_version_id, dpo.parent_run_id) == (version.id, sft.id)
    assert store.metrics(dpo.id, "loss")
    events = [json.loads(line) for line in
              (Path(dpo.output_dir) / "events.jsonl").read_text().splitlines()]
    said = [e.get("message", "") for e in events if e.get("event") == "log"]
    assert (f"{n_both_bad} pair(s) labelled both bad left out: neither answer is one to "
            "prefer") in said
    assert f"{len(exported) - n_both_bad} preference pairs, 0 held out" in said
    print(f"\nlabel → DPO walk: {time.perf_counter() - started:.1f} s, {len(exported)} rows "
          f"exported ({n_same} same-text pairs left out), load average {os.getloadavg()[0]:.1f}")
