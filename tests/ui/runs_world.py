"""Three runs in a store, with fixed times so screens and snapshots are deterministic."""

from __future__ import annotations

from datetime import UTC, datetime

FIXED_NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def add_three_runs(store) -> dict[str, object]:
    base = store.add_model("tiny-base", "hf", "/models/tiny-base")
    data = store.add_dataset_version(
        "demo/sft", "/data/sft.jsonl", "a" * 64, "messages", "sft", 2304, source="demo"
    )
    prefs = store.add_dataset_version(
        "demo/preferences", "/data/preferences.jsonl", "b" * 64, "preference", "preference", 400
    )
    sft = store.create_run(
        "sft",
        {"learning_rate": 0.0002, "lora": {"r": 8, "alpha": 16}, "max_steps": 30},
        base_model_id=base.id,
        dataset_version_id=data.id,
        seed=7,
        name="sft-lora",
        environment={"torch": "2.13.0", "device": "cpu"},
    )
    store.update_run(
        sft.id,
        status="completed",
        started_at="2026-03-01T10:00:00+00:00",
        finished_at="2026-03-01T10:03:07+00:00",
    )
    for step, loss in enumerate((2.5, 1.75, 1.125), 1):
        store.log_metrics(sft.id, step * 10, {"loss": loss, "learning_rate": 0.0002})
    dpo = store.create_run(
        "dpo",
        {"beta": 0.1},
        base_model_id=base.id,
        dataset_version_id=prefs.id,
        parent_run_id=sft.id,
        seed=7,
        name="dpo-beta0.1",
    )
    store.update_run(
        dpo.id,
        status="failed",
        started_at="2026-03-01T11:00:00+00:00",
        finished_at="2026-03-01T11:00:42+00:00",
        error="out of memory in the forward pass: lower per_device_batch_size",
    )
    store.log_metrics(dpo.id, 1, {"loss": 0.6931})
    queued = store.create_run(
        "sft",
        {"learning_rate": 0.0001},
        base_model_id=base.id,
        dataset_version_id=data.id,
        name="sft-queued",
    )
    # created_at is stamped by the store; pin it so the "created" column is stable
    for run_id, created in (
        (sft.id, "2026-03-01T09:59:00+00:00"),
        (dpo.id, "2026-03-01T10:59:00+00:00"),
        (queued.id, "2026-03-01T11:30:00+00:00"),
    ):
        store.db.execute("UPDATE runs SET created_at = ? WHERE id = ?", [created, run_id])
    store.db.execute("UPDATE dataset_versions SET created_at = '2026-02-27T08:00:00+00:00'")
    store.db.execute("UPDATE models SET created_at = '2026-02-27T07:00:00+00:00'")
    return {"base": base, "data": data, "prefs": prefs, "sft": sft, "dpo": dpo, "queued": queued}
