"""Losses of the method: EMD on score histograms and pairwise ranking losses.

* :func:`emd_loss` — Earth Mover's Distance between 10-bin distributions (the generic stage),
  ``EMD_r(p, q) = (mean_k |CDF_p(k) − CDF_q(k)|^r)^(1/r)``, ``r = 2`` by default.
* :func:`hinge_pair_loss` — ``max(0, f(x₂) − f(x₁) + margin)`` for pairs where x₁ is preferred
  (the personal stage, margin 0.1), and its alternatives :func:`exp_pair_loss`
  ``exp(f(x₂) − f(x₁))`` and :func:`logistic_pair_loss` ``log(1 + exp(f(x₂) − f(x₁)))``.

Example::

    >>> p = torch.tensor([[1.0, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    >>> q = torch.tensor([[0.0, 0, 0, 0, 0, 0, 0, 0, 0, 1]])
    >>> round(float(emd_loss(p, q)), 4)  # CDFs differ by 1 on 9 of 10 bins: sqrt(9/10)
    0.9487
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

_REDUCTIONS = ("mean", "sum", "none")


def reduce_loss(values: Tensor, reduction: str) -> Tensor:
    """Reduce per-item loss ``values`` by ``reduction``: ``"mean"``, ``"sum"`` or ``"none"``."""
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def emd_loss(p: Tensor, q: Tensor, r: float = 2.0, reduction: str = "mean") -> Tensor:
    """Earth Mover's Distance between batched histograms, vectorised with ``cumsum``.

    Args:
        p: predicted distributions, B×N (rows sum to 1).
        q: target distributions, B×N (rows sum to 1).
        r: the norm's order (the paper uses 2).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (B values).

    Returns:
        Non-negative distance; 0 for identical histograms.
    """
    if p.shape != q.shape or p.ndim != 2:
        raise ValueError(f"p and q must both be B×N, got {tuple(p.shape)} and {tuple(q.shape)}")
    if r <= 0:
        raise ValueError(f"r must be positive, got {r}")
    diff = (torch.cumsum(p, dim=1) - torch.cumsum(q, dim=1)).abs()
    # (x + eps)^(1/r) keeps the gradient finite when p == q.
    per_item = (diff.pow(r).mean(dim=1) + 1e-12).pow(1.0 / r)
    return reduce_loss(per_item, reduction)


def _check_pair(preferred: Tensor, other: Tensor) -> Tensor:
    if preferred.shape != other.shape:
        raise ValueError(f"score tensors differ in shape: {tuple(preferred.shape)} vs {tuple(other.shape)}")
    return other - preferred


def hinge_pair_loss(preferred: Tensor, other: Tensor, margin: float = 0.1, reduction: str = "mean") -> Tensor:
    """``max(0, f(x₂) − f(x₁) + margin)`` where ``preferred = f(x₁)``, ``other = f(x₂)`` (shape B).

    Example:
        >>> hinge_pair_loss(torch.tensor([6.0, 5.0]), torch.tensor([5.0, 5.05]), reduction="none")
        tensor([0.0000, 0.1500])
    """
    _check_pair(preferred, other)
    target = torch.ones_like(preferred)
    return reduce_loss(F.margin_ranking_loss(preferred, other, target, margin=margin, reduction="none"), reduction)


def exp_pair_loss(preferred: Tensor, other: Tensor, reduction: str = "mean") -> Tensor:
    """``exp(f(x₂) − f(x₁))`` (shape B): the exponential pairwise alternative."""
    return reduce_loss(torch.exp(_check_pair(preferred, other)), reduction)


def logistic_pair_loss(preferred: Tensor, other: Tensor, reduction: str = "mean") -> Tensor:
    """``log(1 + exp(f(x₂) − f(x₁)))`` (shape B): the logistic (RankNet) alternative."""
    return reduce_loss(torch.nn.functional.softplus(_check_pair(preferred, other)), reduction)


PAIR_LOSSES: dict[str, Callable[..., Tensor]] = {
    "hinge": hinge_pair_loss,
    "exp": exp_pair_loss,
    "logistic": logistic_pair_loss,
}
