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


def aesthetic_loss(images: Tensor, scorer: Scorer, reduction: str = "mean") -> Tensor:
    """``10 − f(images)`` for ``[0, 1]`` RGB images B×3×H×W of any size.

    Args:
        images: B×3×H×W, values in ``[0, 1]``.
        scorer: the aesthetic model ``f`` (generic or a personal profile).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (B values in ``[0, 9]``).
    """
    check_image(images, "images")
    return reduce_loss(MAX_SCORE - scorer(images), reduction)


class AestheticLoss(nn.Module):
    """:func:`aesthetic_loss` as a module, built from a scorer, a profile path or a shipped name.

    Attributes:
        lower_better: ``True``.
        score_range: ``(0, 9)``: the loss of a score in ``[1, 10]``.

    Args:
        scorer: a :class:`~persaes.core.scorer.Scorer`, a profile/weights path, or ``"generic"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        device: where a scorer loaded from a name or path goes (``"auto"``: CUDA when present).
    """

    lower_better = True
    score_range = (0.0, MAX_SCORE - 1.0)

    def __init__(self, scorer: Scorer | str | os.PathLike[str] = "generic", reduction: str = "mean",
                 device: str | torch.device = "auto") -> None:
        super().__init__()
        self.scorer = scorer if isinstance(scorer, Scorer) else load_scorer(scorer, device=device)
        self.reduction = reduction

    def forward(self, images: Tensor) -> Tensor:
        """Return the reduced loss ``10 − f(images)`` of ``[0, 1]`` RGB images B×3×H×W."""
        return aesthetic_loss(images.to(self.scorer.device), self.scorer, self.reduction)
