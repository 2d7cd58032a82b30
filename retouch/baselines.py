"""Classic, non-learned retouching baselines: gray-world colour, auto gamma exposure, dark channel dehazing."""

from __future__ import annotations

import math

import torch
from kornia.color import rgb_to_grayscale, rgb_to_hsv
from torch import Tensor

from .color import check_image, saturation, white_balance
from .dehaze import AIRLIGHT_MIN, dark_channel, dehaze, estimate_airlight, resize_to_fit

__all__ = ["auto_gamma", "dark_channel_dehaze", "gray_world"]

# Keeps gray-world gains finite for a channel (or image) that is all zero.
_MEAN_EPS = 1e-6


def gray_world(image: Tensor, quantile: float = 0.99, max_stretch: float = 2.5) -> Tensor:
    r"""Gray-world white balance followed by a saturation stretch.

    Each channel is scaled so that its mean equals the mean of the three channel means. Then chroma is scaled (with
    :func:`~retouch.color.saturation`, which never leaves the gamut) by ``1 / q``, where ``q`` is the ``quantile``
    of the HSV saturation of the balanced image, limited to :math:`[1, \text{max\_stretch}]`.

    Args:
        image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        quantile: saturation quantile that is stretched to full saturation, in :math:`(0, 1]`.
        max_stretch: largest saturation factor, ``>= 1``.

    Returns:
        :math:`(B, 3, H, W)` in :math:`[0, 1]`.

    Example:
        >>> cast = torch.rand(1, 3, 16, 16) * torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1)
        >>> gray_world(cast).mean(dim=(2, 3)).std().item() < cast.mean(dim=(2, 3)).std().item()
        True
    """
    check_image(image)
    if not 0.0 < quantile <= 1.0 or max_stretch < 1.0:
        raise ValueError(f"need quantile in (0, 1] and max_stretch >= 1, got {quantile} and {max_stretch}")
    means = image.mean(dim=(2, 3))
    gains = (means.mean(dim=1, keepdim=True) + _MEAN_EPS) / (means + _MEAN_EPS)
    balanced = white_balance(image, gains)
    chroma = rgb_to_hsv(balanced)[:, 1].flatten(1)
    rank = max(1, math.ceil(quantile * chroma.shape[1]))
    high = chroma.kthvalue(rank, dim=1).values
    factor = (1.0 / high.clamp_min(_MEAN_EPS)).clamp(1.0, max_stretch)
    return saturation(balanced, factor)


def auto_gamma(image: Tensor, target: float = 0.5, iterations: int = 30) -> Tensor:
    r"""Per-image gamma :math:`x^\gamma` chosen so that the mean luma of the result is ``target``.

    :math:`\gamma \in [1/16, 16]` is found by bisection on :math:`\log_2 \gamma` (the mean luma of :math:`x^\gamma`
    falls as :math:`\gamma` grows), measured on a copy at most 256 pixels on its longer side.

    Args:
        image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        target: desired mean luma in :math:`(0, 1)`.
        iterations: bisection steps.

    Returns:
        :math:`(B, 3, H, W)` in :math:`[0, 1]`.

    Example:
        >>> dark = torch.rand(1, 3, 16, 16) * 0.3
        >>> abs(rgb_to_grayscale(auto_gamma(dark)).mean().item() - 0.5) < 0.01
        True
    """
    check_image(image)
    if not 0.0 < target < 1.0:
        raise ValueError(f"target must be in (0, 1), got {target}")
    with torch.no_grad():
        small = resize_to_fit(image, 256).clamp(0.0, 1.0)
        low = image.new_full((image.shape[0],), -4.0)
        high = image.new_full((image.shape[0],), 4.0)
        for _ in range(iterations):
            middle = (low + high) / 2
            luma = rgb_to_grayscale(small.pow(torch.exp2(middle).view(-1, 1, 1, 1))).mean(dim=(1, 2, 3))
            too_bright = luma > target
            low = torch.where(too_bright, middle, low)
            high = torch.where(too_bright, high, middle)
        gamma = torch.exp2((low + high) / 2)
    return image.pow(gamma.view(-1, 1, 1, 1))


def dark_channel_dehaze(image: Tensor, patch: int = 15, omega: float = 0.95, t_min: float = 0.1) -> Tensor:
    r"""He et al. dark channel prior dehazing with the paper's constants and guided-filter refinement.

    The airlight is estimated with :func:`~retouch.dehaze.estimate_airlight` (floored at
    :data:`~retouch.dehaze.AIRLIGHT_MIN`), then :func:`~retouch.dehaze.dehaze` runs at strength 1.

    Args:
        image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        patch: dark-channel window side (15 in the paper).
        omega: fraction of haze removed (0.95 in the paper).
        t_min: transmission floor :math:`t_0` (0.1 in the paper).

    Returns:
        :math:`(B, 3, H, W)` in :math:`[0, 1]`.

    Example:
        >>> dark_channel_dehaze(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 3, 32, 32])
    """
    check_image(image)
    airlight = estimate_airlight(image, dark_channel(image, patch)).clamp_min(AIRLIGHT_MIN)
    return dehaze(image, 1.0, airlight, t_min, patch=patch, omega=omega)
