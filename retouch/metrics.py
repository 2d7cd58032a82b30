"""Per-image quality metrics and the hand-made taste features of a simulated user."""

from __future__ import annotations

import torch
from kornia.color import rgb_to_grayscale
from kornia.metrics import psnr as _kornia_psnr
from kornia.metrics import ssim as _kornia_ssim
from torch import Tensor

from .color import check_image
from .dehaze import dark_channel

__all__ = ["TASTE_FEATURES", "colourfulness", "psnr", "ssim", "taste_features"]

#: Names of the columns of :func:`taste_features`.
TASTE_FEATURES: tuple[str, ...] = ("luminance", "colourfulness", "contrast", "warmth", "haze")

# Added under square roots so that their gradient stays finite at 0 (a flat or grey image).
_SQRT_EPS = 1e-12


def _check_pair(a: Tensor, b: Tensor) -> None:
    check_image(a, "a")
    check_image(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def _safe_sqrt(x: Tensor) -> Tensor:
    r""":math:`\sqrt{x}` for :math:`x \ge 0`, exactly 0 at 0, with a finite gradient there."""
    return torch.sqrt(x + _SQRT_EPS) - _SQRT_EPS**0.5


def psnr(a: Tensor, b: Tensor) -> Tensor:
    r"""PSNR in dB of each image pair (peak value 1), via :func:`kornia.metrics.psnr`.

    Args:
        a, b: :math:`(B, 3, H, W)` in :math:`[0, 1]`.

    Returns:
        :math:`(B,)`; ``inf`` for identical images.

    Example:
        >>> psnr(torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.1))
        tensor([20., 20.])
    """
    _check_pair(a, b)
    return torch.stack([_kornia_psnr(x.unsqueeze(0), y.unsqueeze(0), 1.0) for x, y in zip(a, b)])


def ssim(a: Tensor, b: Tensor, window_size: int = 11) -> Tensor:
    r"""Mean SSIM of each image pair, via :func:`kornia.metrics.ssim` (Gaussian window, peak value 1).

    The window shrinks to the largest odd size the image can be reflect-padded for (``2 * min(H, W) - 1``).

    Args:
        a, b: :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        window_size: odd Gaussian window side.

    Returns:
        :math:`(B,)` in :math:`[-1, 1]`; 1 for identical images.

    Example:
        >>> image = torch.rand(2, 3, 16, 16)
        >>> ssim(image, image)
        tensor([1., 1.])
    """
    _check_pair(a, b)
    if window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be a positive odd int, got {window_size}")
    window = min(window_size, 2 * min(a.shape[-2:]) - 1)
    return _kornia_ssim(a, b, window, max_val=1.0).mean(dim=(1, 2, 3))


def colourfulness(image: Tensor) -> Tensor:
    r"""Hasler-Süsstrunk colourfulness.

    :math:`\sqrt{\sigma_{rg}^2 + \sigma_{yb}^2} + 0.3\sqrt{\mu_{rg}^2 + \mu_{yb}^2}` with :math:`rg = R - G` and
    :math:`yb = (R + G) / 2 - B`, on values in :math:`[0, 1]` (the paper's values are 255 times larger).

    Args:
        image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.

    Returns:
        :math:`(B,)`, non-negative; 0 for grey images.

    Example:
        >>> colourfulness(torch.rand(1, 1, 4, 4).expand(1, 3, 4, 4))
        tensor([0.])
    """
    check_image(image)
    red, green, blue = image.flatten(2).unbind(dim=1)
    rg = red - green
    yb = 0.5 * (red + green) - blue
    spread = _safe_sqrt(rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False))
    offset = _safe_sqrt(rg.mean(dim=1).square() + yb.mean(dim=1).square())
    return spread + 0.3 * offset


def taste_features(image: Tensor, patch: int = 15) -> Tensor:
    r"""Taste features of a simulated user, one row per image, columns named in :data:`TASTE_FEATURES`.

    ``[mean luma, colourfulness, RMS contrast (std of luma), warmth (mean R - mean B), haze (mean dark channel)]``;
    luma uses :func:`kornia.color.rgb_to_grayscale`, the dark channel :func:`~retouch.dehaze.dark_channel` with
    ``patch``. Differentiable, with finite gradients even for flat images.

    Args:
        image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        patch: dark-channel window side (odd).

    Returns:
        :math:`(B, 5)`.

    Example:
        >>> taste_features(torch.full((1, 3, 8, 8), 0.5))
        tensor([[0.5000, 0.0000, 0.0000, 0.0000, 0.5000]])
    """
    check_image(image)
    luma = rgb_to_grayscale(image).flatten(1)
    channel_means = image.mean(dim=(2, 3))
    return torch.stack(
        [
            luma.mean(dim=1),
            colourfulness(image),
            _safe_sqrt(luma.var(dim=1, unbiased=False)),
            channel_means[:, 0] - channel_means[:, 2],
            dark_channel(image, patch).mean(dim=(1, 2, 3)),
        ],
        dim=1,
    )
