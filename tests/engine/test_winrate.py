"""Bradley-Terry with bootstrap intervals: recovers a known ranking, counts pairs exactly."""

from __future__ import annotations

import math
import random

from tuiapp.engine.label import winrate


def simulate(strengths: dict[str, float], n: int, seed: int = 1) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    models = list(strengths)
    out = []
    for _ in range(n):
        a, b = rng.sample(models, 2)
        p = 1 / (1 + math.exp(strengths[b] - strengths[a]))
        u = rng.random()
        out.append((a, b, "tie" if abs(u - p) < 0.03 else ("a" if u < p else "b")))
    return out


def test_recovers_known_ranking_and_gaps():
    truth = {"base": -1.0, "sft": 0.0, "dpo": 0.6, "big": 1.5}
    result = winrate.summarize(simulate(truth, 4000), n_boot=300, seed=0)
    order = [s["model"] for s in result["strengths"]]
    assert order == ["big", "dpo", "sft", "base"]
    by = {s["model"]: s for s in result["strengths"]}
    mean_truth = sum(truth.values()) / len(truth)
    for model, value in truth.items():
        assert abs(by[model]["score"] - (value - mean_truth)) < 0.2
        # the truth lies inside the bootstrap 95% interval, which is narrow at this n
        assert by[model]["low"] <= value - mean_truth + 0.05
        assert by[model]["high"] >= value - mean_truth - 0.05
        assert by[model]["high"] - by[model]["low"] < 0.5


def test_intervals_shrink_with_more_data_and_are_seeded():
    truth = {"x": 0.0, "y": 1.0}
    small = winrate.summarize(simulate(truth, 40), n_boot=400, seed=3)
    large = winrate.summarize(simulate(truth, 2000), n_boot=400, seed=3)
    width = lambda r: {s["model"]: s["high"] - s["low"] for s in r["strengths"]}  # noqa: E731
    assert width(large)["y"] < width(small)["y"] / 3
    again = winrate.summarize(simulate(truth, 40), n_boot=400, seed=3)
    assert again == small


def test_pair_table_counts_wins_ties_losses_and_both_bad():
    comps = [("a1", "b1", "a"), ("b1", "a1", "a"), ("a1", "b1", "tie"), ("a1", "b1", "both_bad"),
             ("a1", "b1", "skip"), ("a1", "b1", "a")]
    result = winrate.summarize(comps, n_boot=50)
    (row,) = result["pairs"]
    assert (row["a"], row["b"]) == ("a1", "b1")
    assert (row["wins"], row["ties"], row["losses"], row["both_bad"], row["n"]) == (2, 1, 1, 1, 5)
    assert row["win_rate"] == (2 + 0.5 * 2) / 5
    assert result["n"] == 5  # the skip is not a comparison


def test_a_model_that_always_wins_stays_finite():
    comps = [("good", "bad", "a")] * 30
    result = winrate.summarize(comps, n_boot=100)
    top, bottom = result["strengths"]
    assert top["model"] == "good" and math.isfinite(top["score"]) and top["score"] > 1
    assert bottom["score"] == -top["score"]


def test_fewer_than_two_models_has_no_strengths():
    assert winrate.summarize([], n_boot=10)["strengths"] == []
