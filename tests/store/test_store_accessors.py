"""Every accessor round-trips typed rows; JSON columns come back as dicts/lists."""

from __future__ import annotations

import dataclasses
import datetime
import math
from pathlib import Path

import pytest

from store import (
    DatasetVersion,
    Evaluation,
    ExportRow,
    Generation,
    Metric,
    ModelRow,
    NotFound,
    Run,
    Store,
)

CONFIG = {
    "lr": 2e-4,
    "lora": {"r": 8, "targets": ["q_proj", "v_proj"]},
    "packing": False,
    "max_steps": None,
    "name": "ünïcode ✓",
}


def test_meta_round_trips_any_json_value(store):
    assert store.get_meta("missing") is None
    assert store.get_meta("missing", "dflt") == "dflt"
    for key, value in [("flag", True), ("n", 3), ("s", "x"), ("d", {"a": [1, 2]}), ("z", None)]:
        store.set_meta(key, value)
        assert store.get_meta(key, "absent") == value
    store.set_meta("n", 4)  # overwrite, not a second row
    assert store.get_meta("n") == 4


def test_models_round_trip_and_lookup(store):
    base = store.add_model("tiny", "hf", Path("/m/tiny"), meta={"params": 1000})
    assert isinstance(base, ModelRow)
    assert (base.name, base.kind, base.path, base.meta) == (
        "tiny",
        "hf",
        "/m/tiny",
        {"params": 1000},
    )
    adapter = store.add_model("sft-1", "adapter", "/r/1/adapter", base_model_id=base.id)
    gguf = store.add_model("q4", "gguf", "/e/q4.gguf", base_model_id=base.id)
    assert store.get_model(adapter.id) == adapter
    assert adapter.base_model_id == base.id
    assert [m.id for m in store.list_models()] == [base.id, adapter.id, gguf.id]
    assert store.list_models(kind="gguf") == [gguf]
    assert store.find_model("/r/1/adapter") == adapter
    assert store.find_model("/nowhere") is None
    with pytest.raises(ValueError, match="Unknown model kind 'onnx'"):
        store.add_model("x", "onnx", "/x")
    with pytest.raises(ValueError, match="no base model with id 99"):
        store.add_model("x", "adapter", "/x", base_model_id=99)
    with pytest.raises(NotFound, match="No model with id 42"):
        store.get_model(42)


def test_rows_are_frozen(store):
    model = store.add_model("tiny", "hf", "/m")
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.name = "other"  # type: ignore[misc]


def test_dataset_version_round_trip_and_idempotent_import(store):
    stats = {"rows": 3, "tokens": {"p50": 12.5, "max": 40}, "roles": ["user", "assistant"]}
    lineage = {"from_task_set": "set1", "label_event_ids": [3, 4]}
    dv = store.add_dataset_version(
        "demo/sft",
        "/d/sft.jsonl",
        "h1",
        "messages",
        "sft",
        3,
        stats=stats,
        source="import",
        lineage=lineage,
    )
    assert isinstance(dv, DatasetVersion)
    assert (dv.stats, dv.lineage, dv.source, dv.rows) == (stats, lineage, "import", 3)
    again = store.add_dataset_version("demo/sft", "/elsewhere.jsonl", "h1", "messages", "sft", 99)
    assert again == dv  # same bytes, same name: the first row, unchanged
    v2 = store.add_dataset_version("demo/sft", "/d/sft.jsonl", "h2", "messages", "sft", 4)
    other = store.add_dataset_version("other", "/d/sft.jsonl", "h1", "messages", "sft", 3)
    assert len({dv.id, v2.id, other.id}) == 3
    assert store.list_dataset_versions(name="demo/sft") == [dv, v2]
    assert store.list_dataset_versions(kind="preference") == []
    assert len(store.list_dataset_versions()) == 3
    updated = store.update_dataset_stats(dv.id, {"rows": 3, "tokens": {"max": 41}})
    assert updated.stats == {"rows": 3, "tokens": {"max": 41}}
    assert store.get_dataset_version(dv.id) == updated
    assert store.counts()["dataset_versions"] == 3


def test_run_round_trip_with_json_config_and_environment(store):
    base = store.add_model("tiny", "hf", "/m")
    dv = store.add_dataset_version("d", "/d", "h", "messages", "sft", 1)
    env = {"torch": "2.13", "device": "cpu", "versions": {"trl": "1.0"}}
    run = store.create_run(
        "sft",
        CONFIG,
        base_model_id=base.id,
        dataset_version_id=dv.id,
        seed=7,
        environment=env,
        output_dir=Path("/runs/1"),
        name="first",
    )
    assert isinstance(run, Run)
    assert run.config == CONFIG and run.environment == env
    assert (run.status, run.seed, run.output_dir, run.name) == ("queued", 7, "/runs/1", "first")
    assert run.started_at is None and run.finished_at is None and not run.finished
    assert store.get_run(run.id) == run


def test_config_with_paths_and_dataclasses_is_stored_as_plain_json(store):
    @dataclasses.dataclass
    class Lora:
        r: int = 8

    run = store.create_run("sft", {"out": Path("/x/y"), "lora": Lora(), "tags": {"b", "a"}})
    assert store.get_run(run.id).config == {"out": "/x/y", "lora": {"r": 8}, "tags": ["a", "b"]}
    with pytest.raises(ValueError, match="cannot be stored as JSON"):
        store.create_run("sft", {"bad": object()})


def test_update_run_sets_fields_and_stamps_times(store):
    adapter = store.add_model("a", "adapter", "/a")
    run = store.create_run("sft", {})
    running = store.update_run(run.id, status="running", pid=1234)
    assert running.status == "running" and running.pid == 1234 and running.started_at
    done = store.update_run(run.id, status="completed", adapter_model_id=adapter.id, notes="good")
    assert done.finished_at and done.finished and done.started_at == running.started_at
    assert (done.adapter_model_id, done.notes) == (adapter.id, "good")
    when = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    failed = store.update_run(run.id, status="failed", error="OOM in forward", finished_at=when)
    assert failed.error == "OOM in forward"
    assert failed.finished_at.startswith("2025-01-02T03:04:05")
    assert store.update_run(run.id, config={"lr": 1}).config == {"lr": 1}
    assert store.update_run(run.id) == store.get_run(run.id)


def test_run_status_is_validated(store):
    with pytest.raises(ValueError, match="Unknown run status 'done'.*queued, running"):
        store.create_run("sft", {}, status="done")
    run = store.create_run("sft", {})
    with pytest.raises(ValueError, match="Unknown run status 'finished'"):
        store.update_run(run.id, status="finished")
    assert store.get_run(run.id).status == "queued"  # nothing half-written
    with pytest.raises(ValueError, match="cannot set created_at, kind"):
        store.update_run(run.id, kind="dpo", created_at="x")
    with pytest.raises(ValueError, match="Unknown run status"):
        store.list_runs(status="bogus")
    with pytest.raises(NotFound):
        store.update_run(999, status="running")
    for status in ("queued", "running", "completed", "failed", "cancelled", "interrupted"):
        assert store.create_run("sft", {}, status=status).status == status


def test_dangling_references_are_refused_with_names(store):
    with pytest.raises(ValueError, match="no dataset version with id 5"):
        store.create_run("sft", {}, dataset_version_id=5)
    with pytest.raises(ValueError, match="no parent run with id 3"):
        store.create_run("dpo", {}, parent_run_id=3)
    run = store.create_run("sft", {})
    with pytest.raises(ValueError, match="no adapter model with id 8"):
        store.update_run(run.id, adapter_model_id=8)
    with pytest.raises(ValueError, match="no run with id 77"):
        store.log_metrics(77, 1, {"loss": 1.0})
    assert store.counts()["runs"] == 1


def test_list_runs_newest_first_with_filters(store):
    a = store.create_run("sft", {})
    b = store.create_run("dpo", {}, status="running")
    c = store.create_run("sft", {}, status="failed")
    d = store.create_run("ppo", {}, status="running")
    assert [r.id for r in store.list_runs()] == [d.id, c.id, b.id, a.id]
    assert [r.id for r in store.list_runs(status="running")] == [d.id, b.id]
    assert [r.id for r in store.list_runs(kind="sft")] == [c.id, a.id]
    assert [r.id for r in store.list_runs(kind=("sft", "ppo"))] == [d.id, c.id, a.id]
    assert [r.id for r in store.list_runs(status=["running", "failed"], kind="sft")] == [c.id]
    assert [r.id for r in store.list_runs(limit=2)] == [d.id, c.id]


def test_metrics_and_summary(store):
    run = store.create_run("sft", {})
    other = store.create_run("sft", {})
    store.log_metrics(run.id, 1, {"loss": 2.5, "lr": 1e-4, "grad_norm": 3})
    store.log_metrics(run.id, 2, {"loss": 1.5}, t=1_700_000_000.0)
    store.log_metrics(run.id, 3, {"loss": float("nan")})
    store.log_metrics(run.id, 4, {"loss": 1.75})
    store.log_metrics(other.id, 9, {"loss": 0.1})
    loss = store.metrics(run.id, "loss")
    assert all(isinstance(m, Metric) for m in loss)
    assert [m.step for m in loss] == [1, 2, 3, 4]
    assert loss[1].t.startswith("2023-11-14T22:13:20")
    assert loss[2].value is None  # NaN kept as a row, value None
    assert len(store.metrics(run.id)) == 6
    summary = store.metric_summary(run.id)
    assert summary["loss"] == {"last": 1.75, "min": 1.5, "max": 2.5, "count": 4, "last_step": 4}
    assert summary["grad_norm"] == {"last": 3.0, "min": 3.0, "max": 3.0, "count": 1, "last_step": 1}
    assert set(summary) == {"loss", "lr", "grad_norm"}
    assert store.metric_summary(other.id)["loss"]["count"] == 1
    assert store.metric_summary(store.create_run("sft", {}).id) == {}
    with pytest.raises(ValueError, match="metric 'loss' must be a number"):
        store.log_metrics(run.id, 5, {"loss": "low"})
    assert not math.isnan(summary["loss"]["min"])


def test_generations_round_trip_newest_first(store):
    run = store.create_run("sft", {})
    g1 = store.add_generation(
        "base", "Hi?", "Hello.", params={"temperature": 0.0}, latency_s=0.25, tokens=3
    )
    g2 = store.add_generation("sft:1", "Hi?", "Hey!", system="Be brief.", run_id=run.id, step=10)
    assert isinstance(g1, Generation)
    assert (g1.params, g1.latency_s, g1.tokens, g1.system) == ({"temperature": 0.0}, 0.25, 3, None)
    assert store.get_generation(g2.id) == g2
    assert (g2.system, g2.run_id, g2.step, g2.params) == ("Be brief.", run.id, 10, {})
    assert store.list_generations() == [g2, g1]
    assert store.list_generations(model_ref="base") == [g1]
    assert store.list_generations(run_id=run.id) == [g2]
    assert store.list_generations(limit=1) == [g2]


def test_evaluations_link_runs(store):
    r1 = store.create_run("sft", {})
    r2 = store.create_run("dpo", {}, parent_run_id=r1.id)
    dv = store.add_dataset_version("eval", "/e", "h", "messages", "sft", 10)
    ev = store.add_evaluation(
        "win-rate dpo vs sft",
        ["sft:1", "dpo:2"],
        {"win_rate": 0.62, "ci": [0.55, 0.69]},
        dataset_version_id=dv.id,
        run_ids=[r2.id, r1.id, r2.id],
        details={"per_prompt": [{"id": 1, "winner": "b"}]},
    )
    assert isinstance(ev, Evaluation)
    assert ev.model_refs == ["sft:1", "dpo:2"]
    assert ev.metrics == {"win_rate": 0.62, "ci": [0.55, 0.69]}
    assert ev.details["per_prompt"][0]["winner"] == "b"
    assert ev.run_ids == (r2.id, r1.id)
    other = store.add_evaluation("loss only", ["sft:1"], {"loss": 1.0}, run_ids=[r1.id])
    assert store.get_evaluation(ev.id) == ev
    assert store.list_evaluations() == [other, ev]
    assert store.list_evaluations(run_id=r2.id) == [ev]
    assert store.list_evaluations(run_id=r1.id) == [other, ev]
    with pytest.raises(ValueError, match="no run with id 50"):
        store.add_evaluation("x", [], {}, run_ids=[50])


def test_exports_round_trip(store):
    run = store.create_run("dpo", {})
    model = store.add_model("merged", "hf", "/e/merged")
    parity = {"max_abs_logit_diff": 0.003, "top1_agree": 1.0, "prompts": 8}
    ex = store.add_export(
        Path("/e/m-q4.gguf"),
        "gguf",
        quant="Q4_K_M",
        size_bytes=123_456,
        sha256="ab" * 32,
        parity=parity,
        run_id=run.id,
        model_id=model.id,
    )
    assert isinstance(ex, ExportRow)
    assert (ex.path, ex.quant, ex.size_bytes, ex.parity, ex.status) == (
        "/e/m-q4.gguf",
        "Q4_K_M",
        123_456,
        parity,
        "ok",
    )
    failed = store.add_export("/e/m.gguf", "gguf", status="failed")
    assert failed.parity == {} and failed.run_id is None
    assert store.list_exports() == [failed, ex]
    assert store.list_exports(run_id=run.id) == [ex]
    assert store.get_export(ex.id) == ex


def test_counts(store, make_task):
    base = store.add_model("tiny", "hf", "/m")
    store.add_dataset_version("d", "/d", "h", "messages", "sft", 1)
    run = store.create_run("sft", {}, base_model_id=base.id)
    store.add_export("/x.gguf", "gguf", run_id=run.id)
    t1, t2 = make_task(), make_task()
    store.add_label(t1.id, "a")
    store.add_label(t2.id, "b")
    store.undo_label()
    assert store.counts() == {
        "runs": 1,
        "dataset_versions": 1,
        "models": 1,
        "labels": 1,
        "exports": 1,
    }


def test_to_dict_is_json_ready(store):
    import json

    run = store.create_run("sft", CONFIG)
    assert json.loads(json.dumps(run.to_dict()))["config"] == CONFIG


def test_file_store_round_trips_across_reopen(db_path):
    with Store(db_path) as s:
        run = s.create_run("sft", CONFIG, seed=1)
        s.log_metrics(run.id, 1, {"loss": 1.0})
    with Store(db_path) as s:
        assert s.get_run(run.id).config == CONFIG
        assert s.metric_summary(run.id)["loss"]["count"] == 1
