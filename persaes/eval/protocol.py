"""Parts of the personal-taste evaluation protocol (``shared/docs/protocol.md`` §1).

Pure functions over a participant's ratings, so each step is tested on its own and the
benchmark script only wires them together:

* :func:`split_ratings` — X training images at random, the rest for testing;
* :func:`draw_pairs` — up to 100 random training pairs, the higher-rated wins, ties dropped;
* :func:`spearman` and :func:`pairwise_accuracy` — the two reported measures.

Example::

    >>> round(spearman(torch.tensor([1.0, 2, 3]), torch.tensor([10.0, 20, 35])), 6)
    1.0
"""

from __future__ import annotations

import csv
import math
import os
import random
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from persaes.io.preferences import sample_pairs


def split_ratings(ratings: Mapping[str, float], x: int, seed: int) -> tuple[list[str], list[str]]:
    """Split a participant's rated images into ``x`` training and the rest testing (seeded).

    Raises:
        ValueError: fewer than ``x + 2`` rated images.
    """
    images = sorted(ratings)
    if len(images) < x + 2:
        raise ValueError(f"{len(images)} rated images cannot give {x} training and 2 test images")
    random.Random(seed).shuffle(images)
    return sorted(images[:x]), sorted(images[x:])


def draw_pairs(ratings: Mapping[str, float], train: Sequence[str], n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` random distinct training pairs as (winner, loser) by rating; ties are discarded.

    With few training images all distinct pairs are used (45 for 10 images).
    """
    pairs = sample_pairs(list(train), n, seed)
    out = []
    for a, b in pairs:
        if ratings[a] > ratings[b]:
            out.append((a, b))
        elif ratings[b] > ratings[a]:
            out.append((b, a))
    return out


def _ranks(values: Tensor) -> Tensor:
    """Average ranks (ties share the mean of their positions), 1-based, float64."""
    values = values.double()
    order = torch.argsort(values, stable=True)
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=torch.float64)
    unique, inverse = torch.unique(values, return_inverse=True)
    sums = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, ranks)
    counts = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(ranks))
    return (sums / counts)[inverse]


def spearman(pred: Tensor, truth: Tensor) -> float:
    """Spearman ρ (Pearson correlation of average ranks); NaN when either side is constant."""
    if pred.shape != truth.shape or pred.ndim != 1:
        raise ValueError(f"need two vectors of one length, got {tuple(pred.shape)} and {tuple(truth.shape)}")
    a, b = _ranks(pred), _ranks(truth)
    a, b = a - a.mean(), b - b.mean()
    denom = float(a.norm() * b.norm())
    return float((a * b).sum()) / denom if denom > 0 else math.nan


def pairwise_accuracy(pred: Tensor, truth: Tensor) -> float:
    """Share of pairs with different ``truth`` values that ``pred`` orders the same way.

    A tie in ``pred`` counts one half; NaN when no such pair exists.
    """
    dt = truth[:, None] - truth[None, :]
    dp = pred[:, None] - pred[None, :]
    mask = dt > 0
    total = int(mask.sum())
    if total == 0:
        return math.nan
    agree = (dp[mask] > 0).double().sum() + 0.5 * (dp[mask] == 0).double().sum()
    return float(agree) / total


def heldout_photos(images_csv: str | os.PathLike[str], n: int = 120, seed: int = 0) -> list[str]:
    """The fixed, seeded set of Pixabay photos held out from all training (protocol §2, §3).

    Args:
        images_csv: an image table with ``image`` and ``source`` columns (OASIS format).
        n: how many to hold out.
        seed: the seed of the draw.

    Returns:
        Sorted image names.
    """
    with open(images_csv, newline="", encoding="utf-8-sig") as handle:
        pixabay = sorted(row["image"] for row in csv.DictReader(handle) if row.get("source") == "Pixabay")
    random.Random(seed).shuffle(pixabay)
    return sorted(pixabay[:n])
