"""The aesthetic loss ``10 − f(x)``: a metric that is also a loss (lower is better).

Use it like any torch loss in an enhancement model's training loop or to optimise edits
of one photo; gradients reach every pixel (no clamps on the path).

Example::

    >>> loss_fn = AestheticLoss("generic", device="cpu")
    >>> net = torch.nn.Conv2d(3, 3, 3, padding=1)                # any enhancement model
    >>> batch = torch.rand(2, 3, 64, 64)
    >>> enhanced = torch.sigmoid(net(batch))                     # B×3×H×W in [0, 1]
    >>> loss = loss_fn(enhanced) + 0.1 * (enhanced - batch).abs().mean()
    >>> loss.backward()
    >>> bool(torch.isfinite(net.weight.grad).all())
    True
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from persaes.core.losses import reduce_loss
from persaes.core.model import SCORE_RANGE
from persaes.core.scorer import Scorer, load_scorer
from retouch.color import check_image

MAX_SCORE = SCORE_RANGE[1]
"""The top of the score range: the loss is ``MAX_SCORE − f(x)``."""


def aesthetic_loss(images: Tensor, scorer: Scorer, reduction: str = "mean", content_grad: bool = True) -> Tensor:
    """``10 − f(images)`` for ``[0, 1]`` RGB images B×3×H×W of any size.

    Args:
        images: B×3×H×W, values in ``[0, 1]``.
        scorer: the aesthetic model ``f`` (generic or a personal profile).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (B values in ``[0, 9]``).
        content_grad: ``False`` keeps the loss's value but lets its gradient reach the images only through the
            content-free image statistics (:meth:`~persaes.core.scorer.Scorer.forward`).
    """
    check_image(images, "images")
    return reduce_loss(MAX_SCORE - scorer(images, content_grad), reduction)


class AestheticLoss(nn.Module):
    """:func:`aesthetic_loss` as a module, built from a scorer, a profile path or a shipped name.

    Attributes:
        lower_better: ``True``.
        score_range: ``(0, 9)``: the loss of a score in ``[1, 10]``.

    Args:
        scorer: a :class:`~persaes.core.scorer.Scorer`, a profile/weights path, or ``"generic"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        device: where a scorer loaded from a name or path goes (``"auto"``: CUDA when present).
        content_grad: ``False``: the backbone's content features count in the value but pass no gradient,
            which then reaches the pixels only through the content-free image statistics (the quality
            branch, and a profile's style part), and costs no backward pass through the backbone. Followed by
            an optimiser, the content features' gradient finds edits that raise the score without looking
            better: fitted this way, the generic retouch of 12 clean held-out photos gains +0.60 instead of
            +0.92 and leaves 4 of them untouched (benchmarks/README.md §2; ``persaes retouch`` keeps the
            full gradient, with which §3's users win more choices).
    """

    lower_better = True
    score_range = (0.0, MAX_SCORE - 1.0)

    def __init__(self, scorer: Scorer | str | os.PathLike[str] = "generic", reduction: str = "mean",
                 device: str | torch.device = "auto", content_grad: bool = True) -> None:
        super().__init__()
        self.scorer = scorer if isinstance(scorer, Scorer) else load_scorer(scorer, device=device)
        self.reduction = reduction
        self.content_grad = content_grad

    def forward(self, images: Tensor) -> Tensor:
        """Return the reduced loss ``10 − f(images)`` of ``[0, 1]`` RGB images B×3×H×W."""
        return aesthetic_loss(images.to(self.scorer.device), self.scorer, self.reduction, self.content_grad)
