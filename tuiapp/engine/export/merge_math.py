"""Merging whole models tensor by tensor: task arithmetic, TIES, DARE, SLERP.

Why our own code and not mergekit: mergekit is not installed in the kept environment; 0.1.5's
pins do fit torch 2.13 / transformers 5 (transformers<6, peft>=0.18), but it pulls in
``immutables``, ``scipy``, ``pydantic`` and ``datasets`` on top and is driven by a YAML config
and its own loader, while these four methods are a few lines each over tensors already loaded
here. The formulas follow the papers:

* task arithmetic (Ilharco et al. 2023): ``base + sum_i w_i * (theta_i - base)``; a negative
  weight subtracts a task vector, one input with a weight != 1 scales it.
* TIES (Yadav et al. 2023): trim each task vector to its ``density`` largest magnitudes, elect a
  sign per element from the weighted sum, average only the values that agree with it (weighted
  mean over the agreeing inputs), add to the base.
* DARE (Yu et al. 2024): drop each delta element with probability ``1 - density``, rescale the
  rest by ``1 / density``; then sum linearly (dare_linear) or with the TIES sign election
  (dare_ties). The drop mask comes from a seeded generator, so a merge is reproducible.
* SLERP: spherical interpolation between two models' tensors at ``t`` (lerp when the two are
  nearly parallel, where the sphere formula divides by ~0).

Every function takes float32 tensors and returns a float32 tensor of the base's shape.
"""

from __future__ import annotations

import torch


def task_arithmetic(base: torch.Tensor, models: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    out = base.clone()
    for theta, w in zip(models, weights, strict=True):
        out += w * (theta - base)
    return out


def _trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``density`` share of elements with the largest magnitude, zero the rest."""
    if density >= 1.0:
        return delta
    k = int(round(density * delta.numel()))
    if k <= 0:
        return torch.zeros_like(delta)
    flat = delta.abs().flatten()
    threshold = torch.topk(flat, k, largest=True, sorted=False).values.min()
    return torch.where(delta.abs() >= threshold, delta, torch.zeros_like(delta))


def _drop(delta: torch.Tensor, density: float, gen: torch.Generator) -> torch.Tensor:
    if density >= 1.0:
        return delta
    keep = torch.rand(delta.shape, generator=gen) < density
    return torch.where(keep, delta / density, torch.zeros_like(delta))


def _sign_elect(deltas: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """Per element: the weighted deltas of the inputs that agree with the elected sign,
    averaged by the weight of those inputs (the disjoint mean of TIES)."""
    stacked = torch.stack([w * d for d, w in zip(deltas, weights, strict=True)])
    sign = torch.sign(stacked.sum(dim=0))
    agree = (torch.sign(stacked) == sign) & (stacked != 0)
    wts = torch.tensor([abs(w) for w in weights], dtype=stacked.dtype).view(-1, *([1] * deltas[0].dim()))
    total = (agree * wts).sum(dim=0)
    summed = (stacked * agree).sum(dim=0)
    return torch.where(total > 0, summed / total.clamp(min=1e-12), torch.zeros_like(summed))


def ties(base: torch.Tensor, models: list[torch.Tensor], weights: list[float], density: float) -> torch.Tensor:
    deltas = [_trim(theta - base, density) for theta in models]
    return base + _sign_elect(deltas, weights)


def dare(base: torch.Tensor, models: list[torch.Tensor], weights: list[float], density: float,
         gen: torch.Generator, sign_elect: bool) -> torch.Tensor:
    deltas = [_drop(theta - base, density, gen) for theta in models]
    if sign_elect:
        return base + _sign_elect(deltas, weights)
    out = base.clone()
    for d, w in zip(deltas, weights, strict=True):
        out += w * d
    return out


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, eps: float = 1e-8) -> torch.Tensor:
    va, vb = a.flatten(), b.flatten()
    na, nb = va.norm(), vb.norm()
    if na < eps or nb < eps:
        return (1 - t) * a + t * b
    dot = torch.clamp(torch.dot(va / na, vb / nb), -1.0, 1.0)
    if dot.abs() > 0.9995:   # nearly parallel: sin(omega) ~ 0, the straight line is exact enough
        return (1 - t) * a + t * b
    omega = torch.arccos(dot)
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def merge_tensor(method: str, base: torch.Tensor, models: list[torch.Tensor], weights: list[float],
                 density: float, gen: torch.Generator) -> torch.Tensor:
    if method == "task_arithmetic":
        return task_arithmetic(base, models, weights)
    if method == "ties":
        return ties(base, models, weights, density)
    if method in ("dare_linear", "dare_ties"):
        return dare(base, models, weights, density, gen, sign_elect=method == "dare_ties")
    if method == "slerp":
        return slerp(models[0], models[1], weights[1] / (weights[0] + weights[1]))
    raise ValueError(f"unknown full-model merge method {method!r}")
