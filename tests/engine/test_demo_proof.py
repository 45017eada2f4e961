"""The demo proof's pure parts: target checks from the numbers, configs from the presets, the
stored record (store.demo_proofs) and its round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from store import NotFound, Store
from store.demo_proofs import add_demo_proof, get_demo_proof, latest_demo_proof, list_demo_proofs
from tuiapp.demo.proof import (
    PPO_KL_BOUND,
    QUICK,
    DemoOptions,
    DemoProofError,
    check_targets,
    picture,
    stage_config,
)


def row(exact=0.0, fmt=0.0, verify=0.0, refusal=0.0) -> dict:
    return {"heldout": {"n": 10, "exact": exact, "format": fmt, "verify": verify, "mean_tokens": 5.0,
                        "rm_score": None},
            "forbidden": {"n": 5, "refusal": refusal, "verify": refusal, "mean_tokens": 9.0, "rm_score": 0.1},
            "verify_all": (verify * 10 + refusal * 5) / 15}


def by_name(targets: list[dict]) -> dict[str, dict]:
    return {t["name"]: t for t in targets}


def test_targets_met_when_every_number_is_on_the_right_side():
    rows = {"base": row(exact=0.05), "sft": row(exact=0.5, fmt=0.95, verify=0.4),
            "dpo": row(exact=0.42, fmt=0.95, refusal=0.85), "ppo": row(exact=0.6, verify=0.7, refusal=0.3)}
    t = by_name(check_targets(rows, {"mean": 1.0}, total_s=600))
    assert all(x["ok"] for x in t.values()), t
    assert t["DPO accuracy kept"]["value"] == pytest.approx(0.08)
    assert t["PPO reward gain"]["value"] == pytest.approx(0.3)


def test_each_target_misses_on_its_own_number():
    good = {"base": row(exact=0.05), "sft": row(exact=0.5, fmt=0.95, verify=0.4),
            "dpo": row(exact=0.45, refusal=0.9), "ppo": row(verify=0.7, refusal=0.3)}
    bad = {"base accuracy": ("base", "exact", 0.2), "SFT format": ("sft", "format", 0.8),
           "SFT accuracy": ("sft", "exact", 0.25), "DPO refusal": ("dpo", "refusal", 0.5),
           "PPO reward gain": ("ppo", "verify_all", 0.45)}
    for name, (model, key, value) in bad.items():
        rows = {m: {p: dict(v) if isinstance(v, dict) else v for p, v in r.items()} for m, r in good.items()}
        if key == "verify_all":  # the PPO gain is over both held-out sets together
            rows[model][key] = value
        else:
            rows[model]["forbidden" if key == "refusal" else "heldout"][key] = value
        if name == "SFT accuracy":  # keep DPO within 10 points of the lowered SFT
            rows["dpo"]["heldout"]["exact"] = 0.25
        t = by_name(check_targets(rows, {"mean": 1.0}, 600))
        assert [n for n, x in t.items() if not x["ok"]] == [name]
    dpo_far = {**good, "dpo": row(exact=0.35, refusal=0.9)}
    assert not by_name(check_targets(dpo_far, {"mean": 1.0}, 600))["DPO accuracy kept"]["ok"]
    t = by_name(check_targets(good, {"mean": PPO_KL_BOUND + 0.1}, 901))
    assert not t["PPO KL bound"]["ok"] and not t["wall time"]["ok"]
    # a number that does not exist is a miss, not a pass
    assert not by_name(check_targets(good, {"mean": None}, 600))["PPO KL bound"]["ok"]


def test_stage_configs_follow_the_presets_with_the_proofs_changes():
    dpo = stage_config("dpo", DemoOptions(), start_run=7)
    assert dpo.start_from == "7" and dpo.dataset == "demo/preferences"
    ppo = stage_config("ppo", DemoOptions(steps_scale=0.5), start_run=7, reward_run=9)
    full = stage_config("ppo", DemoOptions(), start_run=7)
    assert ppo.max_steps == max(1, round(full.max_steps * 0.5))
    quick = stage_config("sft", DemoOptions(quick=True))
    assert quick.max_steps == QUICK["sft"]["max_steps"]
    with pytest.raises(DemoProofError, match="missing"):
        stage_config("sft", DemoOptions(presets_dir=Path("/nonexistent")))


def test_picture_takes_the_first_prompt_of_each_set():
    def result(ref: str, text: str) -> dict:
        return {"models": [ref], "prompts": [{"prompt": "Q?", "reference": "A", "outputs": {ref: text}}]}

    shots = picture({"base": {"heldout": result("base", "no"), "forbidden": result("base", "leak")},
                     "sft": {"heldout": result("run:1", "Answer: A."), "forbidden": result("run:1", "No.")}})
    assert shots[0] == {"set": "heldout", "prompt": "Q?", "reference": "A",
                        "answers": {"base": "no", "sft": "Answer: A."}}
    assert shots[1]["answers"] == {"base": "leak", "sft": "No."}


def test_proof_record_round_trip_and_lookup():
    store = Store()
    assert latest_demo_proof(store) is None
    run = store.create_run("sft", {}, status="completed")
    other = store.add_evaluation("not a proof", ["base"], {"base": {}})
    details = {"evaluation_ids": {"base": [other.id]}, "targets": [{"name": "x", "ok": True}],
               "stages": {"sft": {"seconds": 1.5}}, "total_s": 2.5, "ppo_kl": {"mean": 0.1},
               "picture": [], "options": {"quick": True}}
    first = add_demo_proof(store, {"base": {"heldout": {}}}, model_refs=["base"], run_ids={"sft": run.id},
                           details=details)
    second = add_demo_proof(store, {"base": {}}, model_refs=["base"], run_ids={"sft": run.id}, details=details)
    assert latest_demo_proof(store).id == second.id
    assert [p.id for p in list_demo_proofs(store)] == [second.id, first.id]
    got = get_demo_proof(store, first.id)
    assert got.run_ids == {"sft": run.id} and got.total_s == 2.5 and got.stages["sft"]["seconds"] == 1.5
    assert store.list_evaluations(run_id=run.id)[0].id == second.id  # linked to the runs it measured
    with pytest.raises(NotFound):
        get_demo_proof(store, other.id)
    with pytest.raises(NotFound):
        get_demo_proof(store, 999)
