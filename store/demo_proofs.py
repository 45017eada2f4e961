"""Demo proofs: the record `tuneloop demo run` leaves and `tuneloop demo report` reads.

A proof is one row of the ``evaluations`` table (name ``demo proof``, ``details.kind`` =
``demo_proof``): it already links to the runs it measured (``evaluation_runs``) and holds JSON
for the per-model table, so no new table is needed. Its ``details`` carry the rest — run ids per
stage, the ids of the per-model evaluations, target checks, stage times, PPO's KL and the
one-prompt picture — and :class:`DemoProof` gives them typed names.

    proof = add_demo_proof(store, rows, run_ids=..., details=...)
    latest_demo_proof(store) -> DemoProof | None ; get_demo_proof(store, id) ; list_demo_proofs(store)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from store.errors import NotFound

PROOF_NAME = "demo proof"
PROOF_KIND = "demo_proof"


@dataclass(frozen=True)
class DemoProof:
    id: int
    created_at: str
    rows: dict[str, dict[str, Any]]          # model name (base/sft/dpo/ppo) -> its figures
    run_ids: dict[str, int]                  # stage (sft/dpo/reward/ppo) -> run id
    evaluation_ids: dict[str, list[int]]     # model name -> its stored evaluations
    targets: list[dict[str, Any]]            # {"name", "target", "value", "ok"}
    stages: dict[str, dict[str, Any]]        # stage -> {"seconds", "reused", "run_id"}
    total_s: float
    ppo_kl: dict[str, Any]
    picture: list[dict[str, Any]]            # one prompt each: {"set", "prompt", "answers": {model: text}}
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _from_evaluation(ev: Any) -> DemoProof:
    d = ev.details
    return DemoProof(
        id=ev.id, created_at=ev.created_at, rows=ev.metrics.get("rows", {}),
        run_ids={k: int(v) for k, v in d.get("run_ids", {}).items()},
        evaluation_ids=d.get("evaluation_ids", {}), targets=d.get("targets", []),
        stages=d.get("stages", {}), total_s=float(d.get("total_s", 0.0)), ppo_kl=d.get("ppo_kl", {}),
        picture=d.get("picture", []), options=d.get("options", {}))


def add_demo_proof(store: Any, rows: dict[str, dict[str, Any]], *, model_refs: list[str],
                   run_ids: dict[str, int], details: dict[str, Any]) -> DemoProof:
    """Store a proof; ``details`` holds evaluation_ids, targets, stages, total_s, ppo_kl, picture,
    options (see DemoProof)."""
    ev = store.add_evaluation(PROOF_NAME, model_refs, {"rows": rows}, run_ids=list(run_ids.values()),
                              details={**details, "kind": PROOF_KIND, "run_ids": run_ids})
    return _from_evaluation(ev)


def list_demo_proofs(store: Any) -> list[DemoProof]:
    """Newest first."""
    rows = store._all("SELECT id FROM evaluations WHERE name = ? AND json_extract(details, '$.kind') = ?"
                      " ORDER BY id DESC", [PROOF_NAME, PROOF_KIND])
    return [_from_evaluation(store.get_evaluation(r["id"])) for r in rows]


def latest_demo_proof(store: Any) -> DemoProof | None:
    rows = store._all("SELECT id FROM evaluations WHERE name = ? AND json_extract(details, '$.kind') = ?"
                      " ORDER BY id DESC LIMIT 1", [PROOF_NAME, PROOF_KIND])
    return _from_evaluation(store.get_evaluation(rows[0]["id"])) if rows else None


def get_demo_proof(store: Any, id: int) -> DemoProof:
    ev = store.get_evaluation(id)  # NotFound for an unknown id
    if ev.name != PROOF_NAME or ev.details.get("kind") != PROOF_KIND:
        raise NotFound("demo proof", id)
    return _from_evaluation(ev)
