"""Sweeps: grid parsing, planning, queueing through pre-flight, and the LoRA-rank law.

The rank test reads the trainable-parameter counts a sweep records (the pre-flight's, which
are PEFT's own counts on the meta device) and checks them against r * (d_in + d_out) summed
over the demo model's linear layers, computed here from its config.json.
"""

from __future__ import annotations

import json

import pytest
import torch

from store import Store
from tuiapp import paths
from tuiapp.engine.jobs.preflight import preflight
from tuiapp.engine.jobs.runner import Runner
from tuiapp.engine.jobs.sweep import (
    SweepError,
    check_plan,
    grid_points,
    parse_grid,
    plan_sweep,
    queue_sweep,
    sweep_table,
)
from tuiapp.engine.train.config import load_config

torch.set_num_threads(1)
PRESET = paths.PRESETS_DIR / "demo-sft-lora.toml"


def test_grid_values_are_parsed_by_the_field_type():
    axes = parse_grid("sft", ["lora_r=4,8", "learning_rate=1e-4,2e-4", "packing=true,false",
                              "method=lora,full", "target_modules=q_proj,v_proj;all-linear"])
    assert axes == [("lora_r", [4, 8]), ("learning_rate", [1e-4, 2e-4]),
                    ("packing", [True, False]), ("method", ["lora", "full"]),
                    ("target_modules", [["q_proj", "v_proj"], ["all-linear"]])]
    assert len(grid_points(axes)) == 32
    assert grid_points(axes[:2])[:2] == [{"lora_r": 4, "learning_rate": 1e-4},
                                         {"lora_r": 4, "learning_rate": 2e-4}]


def test_an_unknown_key_is_refused_naming_the_valid_keys():
    with pytest.raises(SweepError) as err:
        parse_grid("sft", ["lora_rank=4,8"])
    text = str(err.value)
    assert "--grid lora_rank: not a sft setting" in text
    assert "lora_r" in text and "method" in text and "learning_rate" in text
    with pytest.raises(SweepError, match="lora_r: expected int, got 'eight'"):
        parse_grid("sft", ["lora_r=4,eight"])
    with pytest.raises(SweepError, match="expected key=v1,v2"):
        parse_grid("sft", ["lora_r"])
    with pytest.raises(SweepError, match="given twice"):
        parse_grid("sft", ["lora_r=4", "lora_r=8"])


def test_each_point_is_validated_by_the_config_class():
    base = load_config(PRESET)
    plan = plan_sweep(base, parse_grid("sft", ["method=lora,full", "lora_r=4,8"]))
    assert [p.point for p in plan.runs] == [
        {"method": "lora", "lora_r": 4}, {"method": "lora", "lora_r": 8},
        {"method": "full", "lora_r": 4}, {"method": "full", "lora_r": 8}]
    assert plan.runs[1].config.lora_r == 8 and plan.runs[2].config.method == "full"
    assert plan.runs[0].config.name == "demo SFT (LoRA) [method=lora lora_r=4]"
    assert base.lora_r == 16  # the base config is not changed by planning
    with pytest.raises(SweepError, match="point method=nonsense: method: 'nonsense' is not one of"):
        plan_sweep(base, parse_grid("sft", ["method=lora,nonsense"]))
    with pytest.raises(SweepError, match="point lora_r=0: lora_r: must be at least 1"):
        plan_sweep(base, parse_grid("sft", ["lora_r=0"]))
    # an extra point repeating a grid point adds no run
    extra = plan_sweep(base, parse_grid("sft", ["lora_r=4,8"]), [{"lora_r": 8}, {"method": "full"}])
    assert [p.point for p in extra.runs] == [{"lora_r": 4}, {"lora_r": 8}, {"method": "full"}]


def lora_formula_per_rank(config: dict) -> int:
    """sum over all-linear targets (lm_head excluded, as PEFT does) of d_in + d_out."""
    h, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    hd = config.get("head_dim") or h // config["num_attention_heads"]
    q = config["num_attention_heads"] * hd
    kv = config["num_key_value_heads"] * hd
    per_layer = ((h + q) + 2 * (h + kv) + (q + h)      # q, k, v, o projections
                 + 2 * (h + inter) + (inter + h))       # gate, up, down
    return layers * per_layer


@pytest.fixture
def workspace(tmp_path):
    from tuiapp.workspace import open_workspace

    rows = (paths.DEMO_DIR / "sft.jsonl").read_text(encoding="utf-8").splitlines()[:24]
    data = tmp_path / "sft-slice.jsonl"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    ws = open_workspace(tmp_path / "home")
    yield ws, data
    ws.store.close()


def test_lora_trainable_parameters_grow_linearly_with_rank(workspace):
    ws, data = workspace
    shape = json.loads((paths.DEMO_BASE_MODEL / "config.json").read_text(encoding="utf-8"))
    per_rank = lora_formula_per_rank(shape)
    base = load_config(PRESET, [f"dataset={data}", "train_template_tokens=false"])
    plan = plan_sweep(base, parse_grid("sft", ["lora_r=4,8,16,32"]))
    assert check_plan(plan, lambda c: preflight(c, ws.store, ws.home)) == []
    runner = Runner(ws.store, ws.home)
    sweep, runs = queue_sweep(ws.store, runner, plan, config_path=PRESET)
    assert [r.status for r in runs] == ["queued"] * 4
    assert all(r.sweep_id == sweep.id for r in runs)
    rows = sweep_table(ws.store, sweep.id)
    counts = {row["lora_r"]: row["trainable_params"] for row in rows}
    assert {row["trainable_source"] for row in rows} == {"pre-flight"}
    assert counts == {r: r * per_rank for r in (4, 8, 16, 32)}
    assert per_rank == 4 * (4 * 512 + 2 * (256 + 688) + (688 + 256))  # the demo: 256 wide, 4 layers
    # with the chat template's token rows trained too, the slope stays the formula's
    with_rows = plan_sweep(load_config(PRESET, [f"dataset={data}"]), parse_grid("sft", ["lora_r=4,8"]))
    check_plan(with_rows, lambda c: preflight(c, ws.store, ws.home))
    a, b = (p.report.params["trainable"] for p in with_rows.runs)
    assert b - a == 4 * per_rank and a > 4 * per_rank


def test_a_refused_point_means_nothing_is_queued(workspace, tmp_path):
    ws, data = workspace
    base = load_config(PRESET, [f"dataset={data}"])
    plan = plan_sweep(base, parse_grid("sft", ["base_model=demo," + str(tmp_path / "nope")]))
    refusals = check_plan(plan, lambda c: preflight(c, ws.store, ws.home))
    assert len(refusals) == 1 and refusals[0].startswith(f"base_model={tmp_path / 'nope'}: ")
    with pytest.raises(SweepError, match="passing pre-flight"):
        queue_sweep(ws.store, Runner(ws.store, ws.home), plan)
    assert ws.store.list_runs() == [] and ws.store.list_sweeps() == []


def test_sweep_table_reads_what_runs_recorded(tmp_path):
    """Measured numbers win over the pre-flight's once a run has recorded them."""
    store = Store()
    sweep = store.create_sweep("s", "sft", [("lora_r", [4, 8])])
    out = tmp_path / "run1"
    out.mkdir()
    (out / "events.jsonl").write_text(json.dumps(
        {"event": "done", "status": "completed", "trainable_params": 1234, "total_params": 9999,
         "final_loss": 0.5}) + "\n", encoding="utf-8")
    a = store.create_run("sft", {"method": "lora", "lora_r": 4}, output_dir=out, status="completed")
    b = store.create_run("sft", {"method": "full", "lora_r": 8})
    for run in (a, b):
        store.add_run_to_sweep(sweep.id, run.id)
    store.log_metrics(a.id, 1, {"loss": 1.0, "tokens_per_s": 100.0, "memory_mb": 300.0})
    store.log_metrics(a.id, 2, {"loss": 0.75, "tokens_per_s": 300.0, "memory_mb": 350.0})
    store.update_sweep_details(sweep.id, preflight={
        str(a.id): {"trainable_params": 1000, "memory_bytes": 2**30},
        str(b.id): {"trainable_params": 50000, "memory_bytes": 2**29, "point": {"lora_r": 8}}})
    ev = store.add_evaluation("e", [f"run:{a.id}"], {f"run:{a.id}": {"scores": {"demo_exact": 0.25,
                                                                               "demo_format": 1.0}}},
                              details={"scorers": ["demo_format", "demo_exact"]})
    store.update_sweep_details(sweep.id, evaluation_id=ev.id)
    ra, rb = sweep_table(store, sweep.id)
    assert (ra["trainable_params"], ra["trainable_source"]) == (1234, "run")
    assert (ra["peak_memory_mb"], ra["memory_source"]) == (350.0, "run")
    assert ra["estimate_memory_mb"] == 1024
    assert ra["tokens_per_s"] == 200.0 and ra["final_loss"] == 0.75
    assert ra["score"] == 0.25 and ra["point"] == {"lora_r": 4}
    assert (rb["trainable_params"], rb["trainable_source"]) == (50000, "pre-flight")
    assert (rb["peak_memory_mb"], rb["memory_source"]) == (512, "pre-flight")
    assert rb["lora_r"] is None and rb["score"] is None  # full fine-tuning has no rank
