"""lineage(run_id): base model, data (with its own lineage), parent chain, exports."""

from __future__ import annotations

import json

import pytest

from store import NotFound


def build_chain(store):
    base = store.add_model("tiny", "hf", "/m/tiny")
    sft_data = store.add_dataset_version("demo/sft", "/d/sft.jsonl", "h1", "messages", "sft", 20)
    sft = store.create_run(
        "sft", {"lr": 2e-4}, base_model_id=base.id, dataset_version_id=sft_data.id
    )
    adapter = store.add_model("sft-adapter", "adapter", "/r/1/adapter", base_model_id=base.id)
    store.update_run(sft.id, status="completed", adapter_model_id=adapter.id)
    prefs = store.add_dataset_version(
        "labels/set1",
        "/d/prefs-v1.jsonl",
        "h2",
        "preference",
        "preference",
        12,
        lineage={"task_set": "set1", "label_event_ids": [1, 2, 3], "from_runs": [sft.id]},
    )
    dpo = store.create_run(
        "dpo",
        {"beta": 0.1},
        base_model_id=base.id,
        dataset_version_id=prefs.id,
        parent_run_id=sft.id,
    )
    ppo = store.create_run("ppo", {"kl": 0.05}, base_model_id=base.id, parent_run_id=dpo.id)
    gguf = store.add_export(
        "/e/ppo-q4.gguf", "gguf", quant="Q4_K_M", run_id=ppo.id, sha256="f" * 64
    )
    return base, sft_data, sft, adapter, prefs, dpo, ppo, gguf


def test_lineage_nests_parents_data_and_exports(store):
    base, sft_data, sft, adapter, prefs, dpo, ppo, gguf = build_chain(store)
    tree = store.lineage(ppo.id)
    assert tree["run"]["id"] == ppo.id and tree["run"]["config"] == {"kl": 0.05}
    assert tree["base_model"]["path"] == "/m/tiny"
    assert tree["dataset_version"] is None
    assert [e["sha256"] for e in tree["exports"]] == ["f" * 64]
    assert tree["ancestors"] == [dpo.id, sft.id]

    parent = tree["parent"]
    assert parent["run"]["kind"] == "dpo"
    assert parent["dataset_version"]["name"] == "labels/set1"
    assert parent["dataset_version"]["lineage"] == {
        "task_set": "set1",
        "label_event_ids": [1, 2, 3],
        "from_runs": [sft.id],
    }
    assert parent["exports"] == []

    grandparent = parent["parent"]
    assert grandparent["run"]["id"] == sft.id
    assert grandparent["dataset_version"]["content_hash"] == "h1"
    assert grandparent["adapter_model"]["id"] == adapter.id
    assert grandparent["parent"] is None
    json.dumps(tree)  # printable by `tuneloop runs show --json`


def test_lineage_of_a_root_run_and_resume_link(store):
    first = store.create_run("sft", {}, status="interrupted")
    resumed = store.create_run("sft", {}, resumed_from=first.id)
    tree = store.lineage(resumed.id)
    assert tree["parent"] is None and tree["ancestors"] == []
    assert tree["resumed_from"]["run"]["status"] == "interrupted"
    assert tree["base_model"] is None and tree["exports"] == []


def test_lineage_survives_a_parent_cycle(store):
    a = store.create_run("sft", {})
    b = store.create_run("dpo", {}, parent_run_id=a.id)
    store.update_run(a.id, parent_run_id=b.id)  # a mistake, but it must not hang
    tree = store.lineage(b.id)
    assert tree["ancestors"] == [a.id]
    assert tree["parent"]["parent"] is None


def test_lineage_of_unknown_run(store):
    with pytest.raises(NotFound, match="No run with id 12"):
        store.lineage(12)
