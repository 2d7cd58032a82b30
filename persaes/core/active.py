"""Active questions: the next pair to ask is chosen from the answers so far.

The answers are modelled as in :mod:`persaes.core.taste`, linearised: ``P(a ≻ b) = σ(β·Δscore +
w·Δφ)`` with the generic score as offset and ``φ`` the photo's style statistics and the leading
principal components of its content features. After each answer the model is refitted (a
few Newton steps on a ridge-penalised logistic loss), and its Laplace posterior covariance
``Σ`` gives, for a pair, the variance ``Δφᵀ Σ Δφ`` of its outcome's log-odds: how little the
answers so far say about it. Each question shows the album's least-asked photo (so every
photo is seen early) beside, on alternate questions, the partner of largest variance or a
random partner. Choosing only the largest variance asks about outliers again and again and
learned slower than random pairs on the simulated tastes of protocol §5; the alternation
keeps random pairs' coverage (benchmarks/README.md §5).

Example:
    >>> chooser = ActivePairs(["a", "b", "c"], torch.tensor([5.0, 5.5, 6.0]), torch.randn(3, 4))
    >>> chooser.next_pair([("a", "b"), ("b", "c")]) in {("a", "c"), ("c", "a")}
    True
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from persaes.core.features import FeatureCache, Features, extract_features
from persaes.core.model import AttentionHead, distribution_to_score

#: Principal components of the content features among the answer model's inputs.
CONTENT_COMPONENTS = 16
L2 = 1.0


class ActivePairs:
    """Chooses the next question about album photos ``keys``.

    Args:
        keys: the album keys, in the order of the rows below.
        scores: the generic model's scores of the photos, N.
        features: the answer model's inputs, N×D (standardised).
        l2: the ridge strength of the answer model.
        seed: the seed of the random choices.
    """

    def __init__(self, keys: Sequence[str], scores: Tensor, features: Tensor, l2: float = L2, seed: int = 0) -> None:
        if len(keys) < 2 or scores.shape != (len(keys),) or features.ndim != 2 or len(features) != len(keys):
            raise ValueError(f"need at least 2 keys with one score and one feature row each, got {len(keys)} keys, "
                             f"scores {tuple(scores.shape)}, features {tuple(features.shape)}")
        self.keys = list(keys)
        self.index = {key: i for i, key in enumerate(self.keys)}
        self.offset = scores.double() / float(scores.double().std().clamp_min(1e-3))
        self.features = features.double()
        self.l2 = l2
        self.seed = seed

    @staticmethod
    @torch.no_grad()
    def from_features(keys: Sequence[str], head: AttentionHead, feats: Features, seed: int = 0) -> "ActivePairs":
        """A chooser over photos with cached ``feats`` and the (generic) ``head``'s scores."""
        head.eval()
        z1, z2, z3, stats, thumb = feats.take(torch.arange(len(feats)))
        scores = distribution_to_score(head(z1, z2, z3, stats, thumb))
        content = (z3 - z3.mean(0)) / z3.std(0).clamp_min(1e-3) if len(z3) > 1 else z3 * 0
        k = min(CONTENT_COMPONENTS, len(keys) - 1, content.shape[1])
        _, _, v = torch.linalg.svd(content, full_matrices=False)
        pcs = content @ v[:k].T
        pcs = pcs / pcs.std(0).clamp_min(1e-6) if len(pcs) > 1 else pcs
        return ActivePairs(keys, scores, torch.cat([head.standardized_stats(stats), pcs], dim=1), seed=seed)

    @staticmethod
    def for_photos(keys: Sequence[str], files: Sequence[str | os.PathLike[str]], seed: int = 0,
                   device: str = "auto") -> "ActivePairs":
        """Build a chooser over photo ``files`` (album keys ``keys``) with the shipped generic model's features.

        The features come from the feature cache where present; unreadable files are left out.
        """
        from persaes.core.scorer import load_scorer

        model = load_scorer("generic", device=device).model
        cache = FeatureCache.default(model.spec.name, "pretrained")
        feats, ok, _ = extract_features(model, list(files), cache)
        return ActivePairs.from_features([keys[i] for i in ok], model.head, feats, seed)

    def _posterior(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and covariance of the answer model's weights after answers ``rows`` (M×2, winner first)."""
        dim = self.features.shape[1]
        w = torch.zeros(dim, dtype=torch.float64)
        eye = torch.eye(dim, dtype=torch.float64)
        if not len(rows):
            return w, eye / self.l2
        d = self.features[rows[:, 0]] - self.features[rows[:, 1]]
        base = self.offset[rows[:, 0]] - self.offset[rows[:, 1]]
        for _ in range(8):
            p = torch.sigmoid(base + d @ w)
            grad = d.T @ (p - 1) + self.l2 * w
            hess = (d * (p * (1 - p))[:, None]).T @ d + self.l2 * eye
            w = w - torch.linalg.solve(hess, grad)
        p = torch.sigmoid(base + d @ w)
        hess = (d * (p * (1 - p))[:, None]).T @ d + self.l2 * eye
        return w, torch.linalg.inv(hess)

    def next_pair(self, answered: Iterable[tuple[str, str]],
                  asked: Iterable[Iterable[str]] = ()) -> tuple[str, str] | None:
        """The next question: a pair of album keys never answered nor in ``asked`` (None when none is left).

        Args:
            answered: the answers so far as (winner, loser) keys; keys outside the album are ignored.
            asked: further pairs not to ask (unordered).
        """
        answered = [(a, b) for a, b in answered if a in self.index and b in self.index]
        taken = {frozenset(pair) for pair in answered} | {frozenset(pair) for pair in asked}
        n = len(self.keys)
        if len(taken) >= n * (n - 1) // 2:
            return None
        rows = torch.tensor([(self.index[a], self.index[b]) for a, b in answered], dtype=torch.long).view(-1, 2)
        _, cov = self._posterior(rows)
        rng = random.Random(self.seed * 1_000_003 + len(answered))
        asked_count = torch.zeros(n, dtype=torch.long)
        for pair in taken:
            for key in pair:
                if key in self.index:
                    asked_count[self.index[key]] += 1
        order = sorted(range(n), key=lambda i: (int(asked_count[i]), rng.random()))
        for i in order:
            partners = [j for j in range(n) if j != i and frozenset((self.keys[i], self.keys[j])) not in taken]
            if partners:
                break
        if len(answered) % 2:
            d = self.features[i] - self.features[torch.tensor(partners, dtype=torch.long)]
            j = partners[int(((d @ cov) * d).sum(1).argmax())]
        else:
            j = rng.choice(partners)
        first, second = self.keys[i], self.keys[j]
        return (first, second) if rng.random() < 0.5 else (second, first)
