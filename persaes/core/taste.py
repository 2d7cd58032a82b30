"""A profile's taste part: what a person's answers say beyond the generic model.

The answers are explained by a pairwise logistic model whose offset is the generic model:
``P(a ≻ b) = σ(β·(s(a) − s(b)))``, where ``s`` is the score of the generic head's distribution
*tilted* by ``δ(x)`` (logit ``i`` gains ``δ(x)·(i − 5.5)/4.5``, so the output stays a
distribution over 1..10 and the score rises with ``δ``), and

``δ(x) = w_style · style(x) + w_content · content(x)``:

* ``style(x)``: the head's standardised :func:`persaes.core.model.image_statistics` (tone,
  clipping, saturation, colourfulness, haze, colour cast, sharpness). Content-free, and it
  responds to an edit of one photo the way it differs between photos, so a taste learned
  from answers on different photos reaches ``persaes retouch --profile``.
* ``content(x)``: the pooled deepest backbone map, centred on the answered photos and scaled
  by one number (their root-mean-square deviation).

How far the answers move the profile is their own decision: the L2 strengths of the two
parts (``inf`` for a part left out, both ``inf`` for the generic model itself) are chosen by
k-fold cross-validation of the held-out answers' log-likelihood; among equally good
strengths the strongest wins. Consistent answers pick weak regularisation and carry the
profile as far as they say; coin flips pick the generic model.

Example:
    >>> logits = torch.zeros(4, 10)
    >>> style = torch.tensor([[1.0], [0.5], [-0.5], [-1.0]])
    >>> w = fit_taste(logits, style, torch.zeros(4, 0), torch.tensor([[0, 1], [1, 2], [2, 3]]), 1.0, math.inf)
    >>> bool(w.style[0] > 0), w.content.numel()
    (True, 0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from persaes.io.preferences import expand_transitive

#: Logit ``i`` (score ``i + 1``) gains ``δ·TILT[i]``.
TILT = (torch.arange(10, dtype=torch.float32) - 4.5) / 4.5
#: Candidate L2 strengths of the style part (summed log-likelihood scale), weakest first.
STYLE_L2 = (0.1, 1.0, 10.0, 100.0, math.inf)
#: Candidate L2 strengths of the content part, weakest first.
CONTENT_L2 = (1.0, 10.0, 100.0, 1000.0, math.inf)
FOLDS = 5
#: The generic model is kept while its cross-validated loss is within this share of a standard error of the best.
SE_SHARE = 0.5
#: Albums of up to this many answered photos are cross-validated leaving one photo out.
LEAVE_ONE_OUT = 20
#: Fewer answers than this leave the profile at the generic model.
MIN_ANSWERS = 6


def tilt(logits: Tensor, delta: Tensor) -> Tensor:
    """Tilt B×10 ``logits`` by ``delta`` (B): logit ``i`` gains ``delta·(i − 4.5)/4.5``."""
    return logits + delta[:, None] * TILT.to(logits)


class TastePart(nn.Module):
    """``δ(x) = style · s + content · (z3 − content_mean) / content_scale``, the tilt a profile adds.

    Args:
        stats: length of the (already standardised) style statistics ``s``.
        content: channels of the pooled deepest map ``z3``.

    Shapes:
        ``stats``: B×stats, ``z3``: B×content. Output: B.

    Example:
        >>> TastePart(21, 1280)(torch.rand(2, 21), torch.rand(2, 1280))
        tensor([0., 0.], grad_fn=<AddBackward0>)
    """

    def __init__(self, stats: int, content: int) -> None:
        super().__init__()
        self.style = nn.Parameter(torch.zeros(stats))
        self.content = nn.Parameter(torch.zeros(content))
        self.register_buffer("content_mean", torch.zeros(content))
        self.register_buffer("content_scale", torch.ones(content))

    def content_features(self, z3: Tensor) -> Tensor:
        """Return the content features ``(z3 − content_mean) / content_scale`` of B×content ``z3``."""
        return (z3 - self.content_mean) / self.content_scale

    def forward(self, stats: Tensor, z3: Tensor) -> Tensor:
        """Return the tilt ``δ`` (B) of B×stats ``stats`` and B×content ``z3``."""
        return stats @ self.style + self.content_features(z3) @ self.content


@dataclass(frozen=True)
class TasteWeights:
    """A fitted taste part: ``style`` and ``content`` weights, the logistic scale ``beta``."""

    style: Tensor
    content: Tensor
    beta: float


@dataclass(frozen=True)
class TasteChoice:
    """The strengths :func:`choose_strength` picked and the cross-validated loss of each pair of them."""

    style_l2: float
    content_l2: float
    losses: dict[tuple[float, float], float]


def _scores(logits: Tensor, delta: Tensor) -> Tensor:
    bins = torch.arange(1, 11, dtype=logits.dtype, device=logits.device)
    return torch.softmax(tilt(logits, delta), dim=1) @ bins


def fit_taste(logits: Tensor, style: Tensor, content: Tensor, pairs: Tensor, style_l2: float, content_l2: float,
              beta: float | None = None, steps: int = 60) -> TasteWeights:
    """Fit the taste part's weights to ``pairs`` (M×2 rows, the first preferred) at the given strengths.

    Args:
        logits: the generic head's logits of the N photos, N×10.
        style: their standardised statistics, N×S.
        content: their content features, N×C.
        pairs: M×2 LongTensor of rows.
        style_l2: L2 strength of the style part (``math.inf``: that part stays zero).
        content_l2: L2 strength of the content part (``math.inf``: that part stays zero).
        beta: the logistic scale on score differences while the weights are fitted; default:
            one over the standard deviation of the generic scores of the N photos, so that the
            generic model is an offset of unit scale (a free scale would let answers against
            the generic model shrink it to zero before the taste part can learn anything).
        steps: most L-BFGS iterations of the fit.

    Returns:
        The weights (zeros for a part left out) and the scale that then fits the pairs best
        (:func:`calibrate`; 0 when the fitted scores do not order them better than chance).
    """
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"pairs must be M×2, got shape {tuple(pairs.shape)}")
    if beta is None:
        beta = default_beta(logits)
    parts = [(x, l2) for x, l2 in ((style, style_l2), (content, content_l2))]
    weights = [torch.zeros(x.shape[1], requires_grad=math.isfinite(l2) and x.shape[1] > 0) for x, l2 in parts]
    free = [w for w in weights if w.requires_grad]
    if free and len(pairs):
        optimizer = torch.optim.LBFGS(free, lr=1.0, max_iter=steps, tolerance_grad=1e-4, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            optimizer.zero_grad()
            s = _scores(logits, parts[0][0] @ weights[0] + parts[1][0] @ weights[1])
            loss = F.softplus(-beta * (s[pairs[:, 0]] - s[pairs[:, 1]])).sum()
            loss = loss + sum(0.5 * l2 * (w ** 2).sum() for (_, l2), w in zip(parts, weights) if w.requires_grad)
            loss.backward()
            return loss

        with torch.enable_grad():
            optimizer.step(closure)
    style_w, content_w = weights[0].detach(), weights[1].detach()
    s = _scores(logits, style @ style_w + content @ content_w)
    return TasteWeights(style_w, content_w, calibrate(s[pairs[:, 0]] - s[pairs[:, 1]], beta))


def calibrate(diff: Tensor, beta: float) -> float:
    """Return the logistic scale of least loss on score differences ``diff`` (winner minus loser).

    The scale is chosen from 0 and a geometric grid of ``beta``·10^[-2, 2]: with it, a candidate whose
    scores order held-out answers no better than chance predicts them at about 1/2, not confidently wrong.
    """
    grid = torch.cat([torch.zeros(1), beta * torch.logspace(-2, 2, 41)]).to(diff)
    losses = F.softplus(-grid[:, None] * diff[None]).sum(1)
    return float(grid[int(losses.argmin())])


def default_beta(logits: Tensor) -> float:
    """One over the standard deviation of the scores of ``logits`` (N×10)."""
    return 1.0 / float(_scores(logits, logits.new_zeros(len(logits))).std().clamp_min(1e-3)) if len(logits) > 1 else 1.0


def pair_log_loss(logits: Tensor, style: Tensor, content: Tensor, weights: TasteWeights, pairs: Tensor) -> float:
    """Mean negative log-likelihood of ``pairs`` under fitted ``weights``."""
    s = _scores(logits, style @ weights.style + content @ weights.content)
    return float(F.softplus(-weights.beta * (s[pairs[:, 0]] - s[pairs[:, 1]])).mean())


def expanded_pairs(answered: Tensor) -> Tensor:
    """M×2 answered rows plus their one-step transitive pairs (contradictions dropped)."""
    expansion = expand_transitive([tuple(p) for p in answered.tolist()])
    return torch.tensor(expansion.answered + expansion.inferred, dtype=torch.long).view(-1, 2)


def photo_folds(answered: Tensor, folds: int, seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """Return cross-validation folds that hold out *photos*, as (training mask, test rows) pairs.

    The photos of ``answered`` (M×2 rows) fall in ``folds`` seeded groups (one group per photo up to
    :data:`LEAVE_ONE_OUT` photos); each fold trains on the answers about none of a group's photos and
    tests on the answers about at least one. (Folds of answers would test on photos the fit has
    seen: with ten photos, any ranking of them is fitted perfectly.) Folds with no training or
    no test answer are left out.
    """
    photos = answered.unique()
    if len(photos) <= LEAVE_ONE_OUT:
        folds = len(photos)
    groups = photos[torch.randperm(len(photos), generator=torch.Generator().manual_seed(seed))].chunk(folds)
    out = []
    for group in groups:
        touched = torch.isin(answered, group).any(dim=1)
        if touched.any() and not touched.all():
            out.append((~touched, touched.nonzero().squeeze(1)))
    return out


def choose_strength(logits: Tensor, style: Tensor, content: Tensor, answered: Tensor, seed: int = 0,
                    style_grid: Sequence[float] | None = None, content_grid: Sequence[float] | None = None,
                    folds: int | None = None) -> TasteChoice:
    """Choose the L2 strengths of the taste part whose fits predict held-out answers best.

    The choice is cross-validated k-fold over photos (:func:`photo_folds`), each fold's training answers
    expanded by one-step transitivity; the out-of-fold score differences share one logistic scale
    (:func:`calibrate`). The style strength is chosen first (no content part), then the content strength
    beside it; then the generic model (both ``inf``) is kept unless the best beats it by more than
    :data:`SE_SHARE` of a standard error, so answers no better than chance keep the generic model.
    ``(inf, inf)`` with fewer than :data:`MIN_ANSWERS` answers or with answers about no more
    photos than there are style statistics: any order of so few photos is fitted by the
    statistics alone, and on real people's ratings of ten photos (benchmarks/README.md §1) such a
    fit ranks new photos worse than the generic model. ``None`` grids are :data:`STYLE_L2` and
    :data:`CONTENT_L2`; a grid of one value fixes that strength.
    """
    style_grid = STYLE_L2 if style_grid is None else tuple(style_grid)
    content_grid = CONTENT_L2 if content_grid is None else tuple(content_grid)
    if len(style_grid) == 1 and len(content_grid) == 1:
        return TasteChoice(style_grid[0], content_grid[0], {})
    photos = len(answered.unique())
    folds = photo_folds(answered, folds or FOLDS, seed)
    if len(answered) < MIN_ANSWERS or photos <= style.shape[1] or not folds:
        return TasteChoice(max(style_grid), max(content_grid), {})
    beta = default_beta(logits)
    losses: dict[tuple[float, float], float] = {}
    errors: dict[tuple[float, float], float] = {}

    def cv_loss(strength: tuple[float, float]) -> float:
        # out-of-fold score differences of the held-out answers, then one scale for all of them
        if strength not in losses:
            diffs = []
            for keep, held in folds:
                fitted = fit_taste(logits, style, content, expanded_pairs(answered[keep]), *strength, beta)
                s = _scores(logits, style @ fitted.style + content @ fitted.content)
                diffs.append(s[answered[held, 0]] - s[answered[held, 1]])
            diff = torch.cat(diffs)
            per_pair = F.softplus(-calibrate(diff, beta) * diff)
            losses[strength] = float(per_pair.mean())
            # answers about few photos are not independent: count at most one per photo
            errors[strength] = float(per_pair.std()) / math.sqrt(min(len(per_pair), photos))
        return losses[strength]

    style_l2 = min(((l2, max(content_grid)) for l2 in style_grid), key=cv_loss)[0]
    strength = min(((style_l2, l2) for l2 in content_grid), key=cv_loss)
    weakest = (max(style_grid), max(content_grid))
    if cv_loss(weakest) <= losses[strength] + SE_SHARE * errors[strength]:
        strength = weakest  # the answers do not beat the generic model clearly enough
    return TasteChoice(strength[0], strength[1], losses)
