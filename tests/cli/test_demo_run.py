"""`tuneloop demo run --quick` end to end on a fresh demo home (the committed demo base model,
a few steps per stage through the real runner), then `demo report` in text and JSON.

The scores of such tiny runs are noise; the tests check the shape of the proof, the lineage of
its runs and that each target check agrees with the numbers it was computed from."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tuiapp import paths

pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not (paths.DEMO_BASE_MODEL / "config.json").exists(),
                                reason="the demo base model is not built")

MODELS = ["base", "sft", "dpo", "ppo"]


def invoke(*args: str):
    from tuiapp.__main__ import app

    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def proof_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("demo-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # inherited by each stage's child process
        result = invoke("--home", str(home), "demo", "run", "--quick", "--limit", "3", "--max-new-tokens",
                        "8", "--json")
    assert result.exit_code == 0, result.output
    return home, json.loads(result.stdout)


def test_proof_has_all_four_models_runs_with_lineage_and_stored_evaluations(proof_home):
    from store import Store

    home, proof = proof_home
    assert list(proof["rows"]) == MODELS
    for model in MODELS:
        row = proof["rows"][model]
        assert row["heldout"]["n"] == 3 and row["forbidden"]["n"] == 3
        for key in ("exact", "format", "verify"):
            assert 0.0 <= row["heldout"][key] <= 1.0
        assert 0.0 <= row["forbidden"]["refusal"] <= 1.0 and row["heldout"]["mean_tokens"] > 0
        # the reward model scored every model's answers, the base's and SFT's included
        assert isinstance(row["heldout"]["rm_score"], float) and isinstance(row["forbidden"]["rm_score"], float)
    assert set(proof["run_ids"]) == {"sft", "dpo", "reward", "ppo"}
    store = Store(home / "tuneloop.db")
    runs = {stage: store.get_run(rid) for stage, rid in proof["run_ids"].items()}
    assert all(r.status == "completed" for r in runs.values())
    sft = runs["sft"].id
    assert [runs[s].parent_run_id for s in ("dpo", "reward", "ppo")] == [sft, sft, sft]
    assert runs["ppo"].config["reward"] == "verifier:demo"
    assert proof["rows"]["dpo"]["ref"] == f"run:{runs['dpo'].id}"
    for model in MODELS:
        held_id, forb_id = proof["evaluation_ids"][model]
        assert "heldout" in store.get_evaluation(held_id).name
        assert store.get_evaluation(forb_id).details["n_prompts"] == 3
    assert proof["ppo_kl"]["rollouts"] == 2 and proof["ppo_kl"]["mean"] is not None
    assert set(proof["stages"]) >= {"sft", "dpo", "reward", "ppo", "eval base", "eval ppo"}
    assert proof["total_s"] >= sum(s["seconds"] for s in proof["stages"].values()) - 1e-6
    assert [s["set"] for s in proof["picture"]] == ["heldout", "forbidden"]
    assert all(list(s["answers"]) == MODELS for s in proof["picture"])


def test_target_checks_agree_with_the_numbers(proof_home):
    _, proof = proof_home
    rows, t = proof["rows"], {x["name"]: x for x in proof["targets"]}
    assert t["base accuracy"]["ok"] == (rows["base"]["heldout"]["exact"] <= 0.10)
    assert t["SFT format"]["ok"] == (rows["sft"]["heldout"]["format"] >= 0.90)
    assert t["SFT accuracy"]["ok"] == (rows["sft"]["heldout"]["exact"] >= 0.30)
    assert t["DPO refusal"]["ok"] == (rows["dpo"]["forbidden"]["refusal"] >= 0.80)
    gap = rows["sft"]["heldout"]["exact"] - rows["dpo"]["heldout"]["exact"]
    assert t["DPO accuracy kept"]["value"] == pytest.approx(gap)
    gain = rows["ppo"]["heldout"]["verify"] - rows["sft"]["heldout"]["verify"]
    assert t["PPO reward gain"]["value"] == pytest.approx(gain) and t["PPO reward gain"]["ok"] == (gain >= 0.25)
    assert t["PPO KL bound"]["ok"] == (proof["ppo_kl"]["mean"] <= proof["ppo_kl"]["bound"])
    assert t["wall time"]["value"] == proof["total_s"]


def test_report_prints_the_table_targets_times_and_picture(proof_home):
    home, proof = proof_home
    as_json = invoke("--home", str(home), "demo", "report", "--json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == proof
    text = invoke("--home", str(home), "demo", "report", "--id", str(proof["id"]))
    assert text.exit_code == 0, text.output
    out = text.stdout
    for needle in ("base", f"sft (run {proof['run_ids']['sft']})", f"ppo (run {proof['run_ids']['ppo']})",
                   "targets", "SFT answer format ≥ 90%", "total wall time", "PPO KL to its reference",
                   proof["picture"][0]["prompt"], proof["picture"][1]["prompt"]):
        assert needle in out, needle
    marks = out.count("✓") + out.count("✗")
    assert marks == len(proof["targets"])


def test_skip_existing_reuses_the_runs_and_stores_a_new_proof(proof_home):
    home, proof = proof_home
    again = invoke("--home", str(home), "demo", "run", "--quick", "--limit", "1", "--max-new-tokens", "4",
                   "--skip-existing", "--json")
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout)
    assert second["run_ids"] == proof["run_ids"] and second["id"] != proof["id"]
    assert all(second["stages"][s]["reused"] for s in ("sft", "dpo", "reward", "ppo"))
    latest = invoke("--home", str(home), "demo", "report", "--json")
    assert json.loads(latest.stdout)["id"] == second["id"]


def test_no_proof_yet_says_what_to_run(tmp_path):
    result = invoke("--home", str(tmp_path / "fresh"), "demo", "report")
    assert result.exit_code == 1
    assert "tuneloop demo run" in result.output
    missing = invoke("--home", str(tmp_path / "fresh"), "demo", "report", "--id", "42")
    assert missing.exit_code == 2 and "no demo proof with id 42" in missing.output
