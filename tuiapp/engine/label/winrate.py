"""Win-rates from preference labels: wins/ties/losses per pair of models and Bradley-Terry
strengths with bootstrap 95% intervals. No Textual, no torch; numpy is imported when used.

Bradley-Terry: P(i beats j) = p_i / (p_i + p_j). Fitted with Hunter's MM iteration, a tie (or a
"both bad") counting half a win to each side. A small symmetric prior (PRIOR half-wins between
every pair) keeps a model that won every comparison finite and the fit defined when some pairs
were never compared. Strengths are reported as log p with mean 0 ("score"), so 0 is average and
a gap of d between two models means P(win) = 1 / (1 + e^-d).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

PRIOR = 0.1  # pseudo half-wins each way per pair of models
# outcome of one comparison for the first model: 1 win, 0.5 tie / both bad, 0 loss
OUTCOMES = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}


def win_matrix(models: Sequence[str], comparisons: Iterable[tuple[str, str, float]]):
    """W[i, j] = wins of model i over model j (ties as half a win each)."""
    import numpy as np

    index = {m: k for k, m in enumerate(models)}
    W = np.zeros((len(models), len(models)))
    for first, second, outcome in comparisons:
        i, j = index[first], index[second]
        W[i, j] += outcome
        W[j, i] += 1.0 - outcome
    return W


def fit_bradley_terry(W, iters: int = 500, tol: float = 1e-10):
    """Log-strengths (mean 0) from a win matrix W, or a stack of them (shape [..., m, m]).

    Vectorised over leading axes so a bootstrap fits all its resamples at once."""
    import numpy as np

    W = np.asarray(W, dtype=float)
    m = W.shape[-1]
    off = 1.0 - np.eye(m)
    W = W + PRIOR * off
    N = W + np.swapaxes(W, -1, -2)  # comparisons between i and j
    wins = W.sum(axis=-1)
    p = np.ones(W.shape[:-1])
    for _ in range(iters):
        denom = (N / (p[..., :, None] + p[..., None, :])).sum(axis=-1)
        new = wins / denom
        new = new / np.exp(np.log(new).mean(axis=-1, keepdims=True))  # geometric mean 1
        if np.max(np.abs(new - p)) < tol:
            p = new
            break
        p = new
    return np.log(p)


def bootstrap(models: Sequence[str], comparisons: Sequence[tuple[str, str, float]],
              n_boot: int = 1000, seed: int = 0) -> tuple[list[float], list[float]]:
    """2.5% and 97.5% quantiles of each model's score over `n_boot` resamples of the comparisons
    (drawn with replacement, seeded)."""
    import numpy as np

    if not comparisons:
        return [0.0] * len(models), [0.0] * len(models)
    index = {m: k for k, m in enumerate(models)}
    # Resampling n comparisons = one multinomial draw over the distinct (i, j, outcome) kinds.
    kinds: dict[tuple[int, int, float], int] = {}
    for first, second, outcome in comparisons:
        key = (index[first], index[second], outcome)
        kinds[key] = kinds.get(key, 0) + 1
    keys = list(kinds)
    probs = np.array([kinds[k] for k in keys], dtype=float)
    probs /= probs.sum()
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(comparisons), probs, size=n_boot)  # [n_boot, kinds]
    m = len(models)
    W = np.zeros((n_boot, m, m))
    for col, (i, j, outcome) in enumerate(keys):
        W[:, i, j] += counts[:, col] * outcome
        W[:, j, i] += counts[:, col] * (1.0 - outcome)
    scores = fit_bradley_terry(W, iters=200, tol=1e-6)
    low, high = np.quantile(scores, [0.025, 0.975], axis=0)
    return [float(x) for x in low], [float(x) for x in high]


def pair_table(comparisons: Sequence[tuple[str, str, float, str]]) -> list[dict[str, Any]]:
    """Wins/ties/losses per unordered pair of models, from the first model's point of view
    (pairs ordered by name). `comparisons` rows: (first, second, outcome, choice)."""
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for first, second, outcome, choice in comparisons:
        a, b = sorted((first, second))
        row = table.setdefault((a, b), {"a": a, "b": b, "wins": 0, "ties": 0, "losses": 0,
                                        "both_bad": 0, "n": 0})
        row["n"] += 1
        if choice == "both_bad":
            row["both_bad"] += 1
            continue
        won = outcome if first == a else 1.0 - outcome
        if won == 1.0:
            row["wins"] += 1
        elif won == 0.0:
            row["losses"] += 1
        else:
            row["ties"] += 1
    for row in table.values():
        # ties and both-bad count half: the share of judgements that went to `a`
        row["win_rate"] = (row["wins"] + 0.5 * (row["ties"] + row["both_bad"])) / row["n"]
    return [table[k] for k in sorted(table)]


def summarize(comparisons: Sequence[tuple[str, str, str]], n_boot: int = 1000,
              seed: int = 0) -> dict[str, Any]:
    """From (model of candidate a, model of candidate b, choice) triples — choices a, b, tie,
    both_bad; skips are ignored — the pair table and the strengths with 95% intervals.

    Returns {"n", "models", "pairs": [...], "strengths": [{"model", "score", "low", "high",
    "p_win_vs_avg"}] (strongest first)}."""
    import math

    rows = [(a, b, OUTCOMES[c], c) for a, b, c in comparisons if c in OUTCOMES and a != b]
    models = sorted({r[0] for r in rows} | {r[1] for r in rows})
    result: dict[str, Any] = {"n": len(rows), "models": models, "pairs": pair_table(rows),
                              "strengths": []}
    if len(models) < 2:
        return result
    triples = [(a, b, o) for a, b, o, _ in rows]
    scores = fit_bradley_terry(win_matrix(models, triples))
    low, high = bootstrap(models, triples, n_boot=n_boot, seed=seed)
    strengths = [
        {"model": m, "score": float(scores[k]), "low": low[k], "high": high[k],
         "p_win_vs_avg": 1.0 / (1.0 + math.exp(-float(scores[k])))}
        for k, m in enumerate(models)
    ]
    result["strengths"] = sorted(strengths, key=lambda s: -s["score"])
    return result
