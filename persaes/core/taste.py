"""A profile's taste part: what a person's answers say beyond the generic model.

The answers are explained by a pairwise logistic model whose offset is the generic model:
``P(a ≻ b) = σ(β·(s(a) − s(b)))``, where ``s`` is the score of the generic head's logits, weighed
by ``γ`` (1: the generic model as it is; 0: none of it), *tilted* by ``δ(x)`` (logit ``i`` gains
``δ(x)·(i − 5.5)/4.5``, so the output stays a distribution over 1..10 and the score rises with
``δ``), and

``δ(x) = w_style · style(x) + w_content · content(x)``:

* ``style(x)``: the head's standardised :func:`persaes.core.model.image_statistics` (tone,
  clipping, saturation, colourfulness, haze, colour cast, sharpness). Content-free, and it
  responds to an edit of one photo the way it differs between photos, so a taste learned
  from answers on different photos reaches ``persaes retouch --profile``.
* ``content(x)``: the pooled deepest backbone map, each channel standardised over the
  answered photos.

How far the answers move the profile is their own decision: the generic weight ``γ`` and the
L2 strengths of the two parts (``inf`` for a part left out; ``γ = 1`` and both ``inf`` is the
generic model itself) are those the answers give the most evidence for (:func:`log_evidence`, a
Laplace approximation of the marginal likelihood); among equally good candidates the one
closest to the generic model wins. Consistent answers pick weak regularisation, and a smaller
``γ`` where they go against the generic model, and carry the profile as far as they say; coin
flips pick the generic model.

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
STYLE_L2 = (0.1, 1.0, math.inf)
#: Style strengths offered only beside less of the generic model (``γ < 1``), where the style part
#: replaces part of its ranking. Beside the whole generic model (``γ = 1``), 10 was chosen for 26 of
#: 100 real people and cost their held-out ranking 0.017 (benchmarks/README.md §1); replacing it,
#: it carries tastes against the generic model's bias from 30 answers (§5).
REPLACING_STYLE_L2 = (10.0,)
#: Candidate weights ``γ`` of the generic model's logits in a profile, the generic model (1) first. A
#: consistent taste against the generic model's bias (high contrast, 30 answers at 10 % noise:
#: benchmarks/README.md §5) is explained best with less of the generic model, whose differences
#: between photos are then noise the taste part has to outweigh.
GENERIC_WEIGHT = (1.0, 0.5, 0.25, 0.0)
#: Candidate L2 strengths of the content part (per-channel standardised features), weakest first.
#: Not below 100: with a thousand standardised channels, 1 or 10 let 30 answers (§5 of
#: benchmarks/README.md: high-contrast from active questions, muted at 20 % noise) be fitted by
#: content alone, and held-out pairs fell to the generic model's accuracy or below.
CONTENT_L2 = (100.0, 300.0, 1000.0, 3000.0, math.inf)
#: Fewer answers than this leave the profile at the generic model.
MIN_ANSWERS = 6


def tilt(logits: Tensor, delta: Tensor) -> Tensor:
    """Tilt B×10 ``logits`` by ``delta`` (B): logit ``i`` gains ``delta·(i − 4.5)/4.5``."""
    return logits + delta[:, None] * TILT.to(logits)


class TastePart(nn.Module):
    """``δ(x) = style · s + content · (z3 − content_mean) / content_scale``, the tilt a profile adds.

    The profile's logits are :meth:`tilted`: the generic logits weighed by ``generic_weight`` (a
    buffer; 1 in profiles saved before it existed), tilted by ``δ``.

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
        self.register_buffer("generic_weight", torch.ones(()))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        state_dict.setdefault(prefix + "generic_weight", torch.ones(()))  # profiles saved before γ existed
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def content_features(self, z3: Tensor) -> Tensor:
        """Return the content features ``(z3 − content_mean) / content_scale`` of B×content ``z3``."""
        return (z3 - self.content_mean) / self.content_scale

    def forward(self, stats: Tensor, z3: Tensor) -> Tensor:
        """Return the tilt ``δ`` (B) of B×stats ``stats`` and B×content ``z3``."""
        return stats @ self.style + self.content_features(z3) @ self.content

    def tilted(self, logits: Tensor, stats: Tensor, z3: Tensor) -> Tensor:
        """Return the profile's B×10 logits: generic ``logits`` × ``generic_weight``, tilted by ``δ``."""
        return tilt(self.generic_weight * logits, self(stats, z3))


@dataclass(frozen=True)
class TasteWeights:
    """A fitted taste part: its ``style`` and ``content`` weights."""

    style: Tensor
    content: Tensor


@dataclass(frozen=True)
class TasteChoice:
    """The generic weight and strengths :func:`choose_strength` picked.

    ``evidence`` holds the :func:`log_evidence` of each ``(generic_weight, style_l2, content_l2)`` it scored.
    """

    generic_weight: float
    style_l2: float
    content_l2: float
    evidence: dict[tuple[float, float, float], float]


def _scores(logits: Tensor, delta: Tensor) -> Tensor:
    return _scores_and_slopes(logits, delta)[0]


def _scores_and_slopes(logits: Tensor, delta: Tensor) -> tuple[Tensor, Tensor]:
    """Each photo's score of its tilted ``logits`` and the slope of that score in δ (both B).

    The slope is the covariance of the bins and :data:`TILT` under the tilted distribution.
    """
    p = torch.softmax(tilt(logits, delta), dim=1)
    bins = torch.arange(1, 11, dtype=logits.dtype, device=logits.device)
    t = TILT.to(logits)
    scores = p @ bins
    return scores, p @ (bins * t) - scores * (p @ t)


def _free_columns(style: Tensor, content: Tensor, style_l2: float,
                  content_l2: float) -> tuple[Tensor, Tensor, list[int]]:
    """Return the columns a fit moves, their L2 strengths (float64) and how many columns of each part there are.

    Style's columns come first, then content's; a part at strength ``inf`` has none (its weights stay zero).
    """
    sizes = [x.shape[1] if math.isfinite(l2) else 0 for x, l2 in ((style, style_l2), (content, content_l2))]
    x = torch.cat([style[:, :sizes[0]], content[:, :sizes[1]]], dim=1)
    precision = torch.cat([torch.full((sizes[0],), style_l2, dtype=torch.float64),
                           torch.full((sizes[1],), content_l2, dtype=torch.float64)])
    return x, precision, sizes


def fit_taste(logits: Tensor, style: Tensor, content: Tensor, pairs: Tensor, style_l2: float, content_l2: float,
              beta: float | None = None, steps: int = 60, generic_weight: float = 1.0) -> TasteWeights:
    """Fit the taste part's weights to ``pairs`` (M×2 rows, the first preferred) at the given strengths.

    Args:
        logits: the generic head's logits of the N photos, N×10.
        style: their standardised statistics, N×S.
        content: their content features, N×C.
        pairs: M×2 LongTensor of rows.
        style_l2: L2 strength of the style part (``math.inf``: that part stays zero).
        content_l2: L2 strength of the content part (``math.inf``: that part stays zero).
        beta: the logistic scale on score differences; default :func:`default_beta`, one over the
            standard deviation of the generic scores of the N photos, so that the generic model is
            an offset of unit scale (a free scale would let answers against the generic model
            shrink it to zero before the taste part can learn anything).
        steps: most L-BFGS iterations of the fit.
        generic_weight: ``γ``, the weight of ``logits`` in the profile.

    Returns:
        The weights that maximise the answers' likelihood plus the Gaussian prior of the strengths
        (zeros for a part left out).
    """
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"pairs must be M×2, got shape {tuple(pairs.shape)}")
    if beta is None:
        beta = default_beta(logits)
    logits = generic_weight * logits
    x, precision, sizes = _free_columns(style, content, style_l2, content_l2)
    precision = precision.to(x.dtype)
    weights = torch.zeros(sum(sizes), requires_grad=True)
    if sum(sizes) and len(pairs):
        optimizer = torch.optim.LBFGS([weights], lr=1.0, max_iter=steps, tolerance_grad=1e-4,
                                      line_search_fn="strong_wolfe")
        first, second = pairs[:, 0], pairs[:, 1]

        def closure() -> Tensor:
            # the objective and its gradient in closed form: each score's slope in δ times x
            w = weights.detach()
            scores, slopes = _scores_and_slopes(logits, x @ w)
            margin = beta * (scores[first] - scores[second])
            pull = beta * torch.sigmoid(-margin)  # minus the likelihood's slope in each pair's score difference
            ds = torch.zeros_like(scores).index_add_(0, first, -pull).index_add_(0, second, pull)
            weights.grad = x.T @ (ds * slopes) + precision * w
            return F.softplus(-margin).sum() + 0.5 * (precision * w ** 2).sum()

        optimizer.step(closure)
    style_w, content_w = weights.detach().split(sizes)
    return TasteWeights(style_w if sizes[0] else torch.zeros(style.shape[1]),
                        content_w if sizes[1] else torch.zeros(content.shape[1]))


def default_beta(logits: Tensor) -> float:
    """One over the standard deviation of the scores of ``logits`` (N×10)."""
    return 1.0 / float(_scores(logits, logits.new_zeros(len(logits))).std().clamp_min(1e-3)) if len(logits) > 1 else 1.0


def log_evidence(logits: Tensor, style: Tensor, content: Tensor, answered: Tensor, style_l2: float,
                 content_l2: float, beta: float | None = None, generic_weight: float = 1.0) -> float:
    """Laplace approximation of ``log p(answers | γ, strengths)``, the evidence for ``(γ, style_l2, content_l2)``.

    Each part's weights have the prior ``N(0, I / l2)``. At the weights :func:`fit_taste` finds on the
    ``answered`` rows (M×2, the first preferred), with ``J`` the M×D Jacobian of ``β·(s(a) − s(b))``
    in the free weights, ``p`` the fitted probabilities and ``Λ`` the strengths,

    ``log p ≈ −NLL − ½ Σ l2·‖w‖² − ½ log det(I + S J Λ⁻¹ Jᵀ S)``, ``S = diag(√(p(1 − p)))``

    (the Gauss–Newton Hessian, through the determinant lemma so that the matrix is M×M whatever D
    is). With both strengths ``inf`` it is the log-likelihood of the weighed generic model, the
    limit of the others as the strengths grow. ``beta`` defaults to :func:`default_beta` of the
    unweighed ``logits``.

    Example:
        >>> logits = torch.zeros(4, 10)
        >>> style = torch.tensor([[1.0], [0.5], [-0.5], [-1.0]])
        >>> answered = torch.tensor([[0, 1], [1, 2], [2, 3], [0, 3]])
        >>> log_evidence(logits, style, torch.zeros(4, 0), answered, 1.0, math.inf) > log_evidence(
        ...     logits, style, torch.zeros(4, 0), answered, math.inf, math.inf)
        True
    """
    beta = default_beta(logits) if beta is None else beta
    fitted = fit_taste(logits, style, content, answered, style_l2, content_l2, beta, generic_weight=generic_weight)
    logits = generic_weight * logits
    s, slopes = _scores_and_slopes(logits, style @ fitted.style + content @ fitted.content)
    margin = beta * (s[answered[:, 0]] - s[answered[:, 1]])
    log_p = -float(F.softplus(-margin).sum())
    x, precision, sizes = _free_columns(style, content, style_l2, content_l2)
    if not sum(sizes):
        return log_p
    w = torch.cat([fitted.style[:sizes[0]], fitted.content[:sizes[1]]]).double()
    log_p -= 0.5 * float((precision * w ** 2).sum())
    grad = slopes.double()[:, None] * x.double()
    p = torch.sigmoid(margin).double()
    jac = (p * (1 - p)).sqrt()[:, None] * beta * (grad[answered[:, 0]] - grad[answered[:, 1]])
    inner = torch.eye(len(answered), dtype=torch.float64) + (jac / precision) @ jac.T
    return log_p - 0.5 * float(torch.logdet(inner))


def expanded_pairs(answered: Tensor) -> Tensor:
    """M×2 answered rows plus their one-step transitive pairs (contradictions dropped)."""
    expansion = expand_transitive([tuple(p) for p in answered.tolist()])
    return torch.tensor(expansion.answered + expansion.inferred, dtype=torch.long).view(-1, 2)


def choose_strength(logits: Tensor, style: Tensor, content: Tensor, answered: Tensor,
                    style_grid: Sequence[float] | None = None,
                    content_grid: Sequence[float] | None = None,
                    weight_grid: Sequence[float] | None = None) -> TasteChoice:
    """Choose the generic weight and L2 strengths of the taste part that the answers give the most evidence for.

    Candidates are scored by :func:`log_evidence` of the ``answered`` rows (M×2, the first
    preferred; not their transitive expansion, whose pairs are not independent answers): first
    the style strength (each beside each generic weight, the content part left out), then the
    generic weight and the content strength together beside that style strength; among equally
    good candidates the one closest to the generic model wins. Consistent answers give most
    evidence to weak strengths, and to less of the generic model where they go against it, and
    carry the profile as far as they say. With the default grids, less of the generic model
    (``γ < 1``) comes only with a style part, which then replaces part of the generic model's
    ranking (and may also be :data:`REPLACING_STYLE_L2`): without one, a smaller ``γ`` is mostly
    a wider logistic scale for noisy answers, and on real people (benchmarks/README.md §1) it
    cost held-out ranking. The generic model (``γ = 1``, both strengths ``inf``) is kept when no
    candidate beats answers that carry no information (every pair at ½): coin flips are
    explained better by a fit that undoes the generic model's confidence than by the generic
    model, but not better than by chance. It is also kept with fewer than :data:`MIN_ANSWERS`
    answers or answers about no more photos than there are style statistics (any order of so
    few photos is fitted by the statistics alone, and on real people's ratings of ten photos,
    §1, such a fit ranks new photos worse than the generic model). ``None`` grids are
    :data:`STYLE_L2`, :data:`CONTENT_L2` and :data:`GENERIC_WEIGHT`; a grid of one value fixes
    that choice (all fixed: nothing is searched). A candidate with no generic model and no taste
    part (``γ = 0``, both ``inf``, possible only with fixed grids), which ranks nothing, is never
    chosen.
    """
    defaults = style_grid is None and weight_grid is None
    style_grid = tuple(sorted(STYLE_L2 if style_grid is None else style_grid, reverse=True))
    content_grid = tuple(sorted(CONTENT_L2 if content_grid is None else content_grid, reverse=True))
    weight_grid = tuple(sorted(GENERIC_WEIGHT if weight_grid is None else weight_grid, reverse=True))
    # the generic model unless a grid is fixed
    closest = TasteChoice(weight_grid[0], style_grid[0], content_grid[0], {})
    if len(style_grid) == 1 and len(content_grid) == 1 and len(weight_grid) == 1:
        return closest
    if len(answered) < MIN_ANSWERS or len(answered.unique()) <= style.shape[1]:
        return closest
    beta = default_beta(logits)
    evidence: dict[tuple[float, float, float], float] = {}

    def score(candidate: tuple[float, float, float]) -> float:
        weight, style_l2, content_l2 = candidate
        if weight == 0 and math.isinf(style_l2) and math.isinf(content_l2):
            return -math.inf
        if candidate not in evidence:
            evidence[candidate] = log_evidence(logits, style, content, answered, style_l2, content_l2, beta, weight)
        return evidence[candidate]

    # with the default grids, less of the generic model only where a style part replaces its ranking
    candidates = [(w, s) for w in weight_grid for s in style_grid if not defaults or w == 1 or math.isfinite(s)]
    if defaults:
        candidates += [(w, s) for w in weight_grid if w < 1 for s in REPLACING_STYLE_L2]
    candidates.sort(key=lambda c: (-c[0], -c[1]))  # the generic model's side first: it wins ties
    _, style_l2, _ = max(((w, s, content_grid[0]) for w, s in candidates), key=score)
    best = max(((w, style_l2, c) for w, s in candidates if s == style_l2 for c in content_grid), key=score)
    if score(best) <= -len(answered) * math.log(2):
        return TasteChoice(closest.generic_weight, closest.style_l2, closest.content_l2, evidence)
    return TasteChoice(*best, evidence)
