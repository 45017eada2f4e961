"""How far the AI judge agrees with a person: raw agreement and Cohen's kappa over the pairs both
labelled, the judge's position-flip rate, and the pairs they disagree on. No Textual, no numpy.

What is compared (candidate order, so sides shown on screen do not matter):
- a person's "both bad" counts as a tie (neither answer preferred: the judge's vocabulary is
  A / B / tie, and win-rates already score both the same);
- skips on either side, and a person's rewrites (they say "my answer beats this one", not which
  of the two models' answers is better), are left out;
- the judge's label is its stored one: with ``on_inconsistent="tie"`` a position flip is a tie,
  with ``"skip"`` it is left out (the flip rate counts it either way).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

CATEGORIES = ("a", "b", "tie")
_AS_CATEGORY = {"a": "a", "b": "b", "tie": "tie", "both_bad": "tie"}


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's kappa of two raters over (rater 1, rater 2) labels: (p_o - p_e) / (1 - p_e),
    p_o the share agreed, p_e the agreement expected from each rater's own label shares.
    None with no pairs, or when both raters used one and the same label throughout (p_e = 1:
    kappa is 0/0, agreement says nothing about skill there)."""
    n = len(pairs)
    if not n:
        return None
    p_o = sum(x == y for x, y in pairs) / n
    first, second = Counter(x for x, _ in pairs), Counter(y for _, y in pairs)
    p_e = sum(first[k] * second[k] for k in first) / (n * n)
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1.0 - p_e)


def judge_vs_human(store: Any, task_set: str | None = None) -> dict[str, Any]:
    """Figures on the judge's labels in `task_set` (None: all) and its agreement with a person."""
    from tuiapp.engine.label.tasks import is_repeat

    tasks = {t.id: t for t in store.list_label_tasks(task_set) if not is_repeat(t)}
    human = {e.task_id: e for e in store.live_labels(task_set) if e.task_id in tasks}
    judge = {e.task_id: e for e in store.live_labels(task_set, source="judge")
             if e.task_id in tasks}
    flips = sum(1 for e in judge.values() if e.detail.get("consistent") is False)
    # Which side the judge picks as shown, over its A/B verdicts in either order: 50% is no
    # position preference, 100% a judge that always takes the first answer it reads.
    sides = Counter(o.get("verdict") for e in judge.values()
                    for o in e.detail.get("orders", []))
    picked = sides["A"] + sides["B"]
    pairs, disagreements = [], []
    for task_id in sorted(set(human) & set(judge)):
        h, j = human[task_id], judge[task_id]
        if h.edited or h.choice not in _AS_CATEGORY or j.choice not in _AS_CATEGORY:
            continue
        mine, theirs = _AS_CATEGORY[h.choice], _AS_CATEGORY[j.choice]
        pairs.append((mine, theirs))
        if mine != theirs:
            task = tasks[task_id]
            disagreements.append({
                "task_id": task_id, "prompt": task.prompt, "human": h.choice, "judge": j.choice,
                "models": [c["model_ref"] for c in task.candidates[:2]],
                "principle": j.principle, "rationale": j.rationale,
                "consistent": j.detail.get("consistent"),
            })
    agree = sum(x == y for x, y in pairs)
    return {
        "judged": len(judge),
        "by_choice": dict(Counter(e.choice for e in judge.values())),
        "flips": flips,
        "flip_rate": flips / len(judge) if judge else None,
        "first_shown_share": sides["A"] / picked if picked else None,
        "both": len(set(human) & set(judge)),  # pairs a person and the judge both labelled
        "compared": len(pairs),
        "agree": agree,
        "raw_agreement": agree / len(pairs) if pairs else None,
        "kappa": cohen_kappa(pairs),
        "confusion": {f"{x}/{y}": c for (x, y), c in sorted(Counter(pairs).items())},
        "disagreements": disagreements,
    }


def summary_lines(ag: dict[str, Any]) -> list[str]:
    """Plain-text lines for `tuneloop labels stats` (nothing when the judge labelled nothing)."""
    if not ag["judged"]:
        return []
    lines = [f"judge: {ag['judged']} pairs labelled ("
             + ", ".join(f"{k} {v}" for k, v in sorted(ag["by_choice"].items()))
             + f"); position flips {ag['flips']}/{ag['judged']} ({ag['flip_rate']:.0%})"]
    if ag.get("first_shown_share") is not None:
        lines.append(f"judge picks the answer shown first in {ag['first_shown_share']:.0%} of "
                     "its A/B verdicts (50% = no position bias)")
    if ag["compared"]:
        kappa = "undefined" if ag["kappa"] is None else f"{ag['kappa']:+.2f}"
        lines.append(f"judge vs person on {ag['compared']} pairs: agree {ag['agree']}/"
                     f"{ag['compared']} ({ag['raw_agreement']:.0%}), Cohen's kappa {kappa}; "
                     f"{len(ag['disagreements'])} disagreements")
    else:
        lines.append("judge vs person: no pair labelled by both yet")
    return lines
