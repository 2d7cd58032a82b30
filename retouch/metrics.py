"""Per-image quality metrics and the hand-made taste features of a simulated user."""

from __future__ import annotations

import math

import torch
from kornia.color import rgb_to_grayscale, rgb_to_lab
from kornia.metrics import psnr as _kornia_psnr
from kornia.metrics import ssim as _kornia_ssim
from torch import Tensor

from .color import check_image
from .dehaze import dark_channel

__all__ = [
    "TASTE_FEATURES",
    "ciede2000",
    "clipped_share",
    "colourfulness",
    "delta_e",
    "near_neutral_mask",
    "neutral_cast",
    "neutral_chroma",
    "new_clipping",
    "psnr",
    "soft_clipped_share",
    "ssim",
    "taste_features",
]

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
        a: first images, :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        b: second images, :math:`(B, 3, H, W)` in :math:`[0, 1]`.

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
        a: first images, :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        b: second images, :math:`(B, 3, H, W)` in :math:`[0, 1]`.
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


def ciede2000(lab1: Tensor, lab2: Tensor) -> Tensor:
    r"""CIEDE2000 colour difference :math:`\Delta E_{00}` of CIELAB colours (Sharma, Wu & Dalal, 2005).

    The parametric factors are ``kL = kC = kH = 1``.

    Args:
        lab1: first colours, :math:`(..., 3)` CIELAB ``(L*, a*, b*)``.
        lab2: second colours, :math:`(..., 3)` CIELAB ``(L*, a*, b*)``, broadcastable with ``lab1``.

    Returns:
        :math:`(...)` non-negative differences.

    Example:
        >>> round(float(ciede2000(torch.tensor([50.0, 2.6772, -79.7751]), torch.tensor([50.0, 0.0, -82.7485]))), 4)
        2.0425
    """
    if lab1.shape[-1] != 3 or lab2.shape[-1] != 3:
        raise ValueError(f"expected (..., 3) CIELAB colours, got {tuple(lab1.shape)} and {tuple(lab2.shape)}")
    (l1, a1, b1), (l2, a2, b2) = lab1.unbind(-1), lab2.unbind(-1)
    c_mean7 = ((torch.hypot(a1, b1) + torch.hypot(a2, b2)) / 2) ** 7
    g = 0.5 * (1 - torch.sqrt(c_mean7 / (c_mean7 + 25.0**7)))
    a1p, a2p = a1 * (1 + g), a2 * (1 + g)
    c1p, c2p = torch.hypot(a1p, b1), torch.hypot(a2p, b2)
    h1p = torch.atan2(b1, a1p) % (2 * math.pi)
    h2p = torch.atan2(b2, a2p) % (2 * math.pi)
    chroma_zero = (c1p * c2p) == 0
    dh = h2p - h1p
    dh = torch.where(dh > math.pi, dh - 2 * math.pi, torch.where(dh < -math.pi, dh + 2 * math.pi, dh))
    dh = torch.where(chroma_zero, torch.zeros_like(dh), dh)
    d_l, d_c = l2 - l1, c2p - c1p
    d_h = 2 * torch.sqrt(c1p * c2p) * torch.sin(dh / 2)
    l_mean, c_mean = (l1 + l2) / 2, (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_mean = torch.where((h1p - h2p).abs() > math.pi,
                         torch.where(h_sum < 2 * math.pi, h_sum + 2 * math.pi, h_sum - 2 * math.pi), h_sum) / 2
    h_mean = torch.where(chroma_zero, h_sum, h_mean)
    t = (1 - 0.17 * torch.cos(h_mean - math.radians(30)) + 0.24 * torch.cos(2 * h_mean)
         + 0.32 * torch.cos(3 * h_mean + math.radians(6)) - 0.20 * torch.cos(4 * h_mean - math.radians(63)))
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / torch.sqrt(20 + (l_mean - 50) ** 2)
    s_c = 1 + 0.045 * c_mean
    s_h = 1 + 0.015 * c_mean * t
    c_mean7p = c_mean**7
    r_c = 2 * torch.sqrt(c_mean7p / (c_mean7p + 25.0**7))
    d_theta = math.radians(30) * torch.exp(-(((torch.rad2deg(h_mean) - 275) / 25) ** 2))
    r_t = -torch.sin(2 * d_theta) * r_c
    return torch.sqrt((d_l / s_l) ** 2 + (d_c / s_c) ** 2 + (d_h / s_h) ** 2 + r_t * (d_c / s_c) * (d_h / s_h))


def delta_e(a: Tensor, b: Tensor) -> Tensor:
    r"""Mean CIEDE2000 :math:`\Delta E_{00}` between each pair of sRGB images (via :func:`kornia.color.rgb_to_lab`).

    Args:
        a: first sRGB images, :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        b: second sRGB images, :math:`(B, 3, H, W)` in :math:`[0, 1]`.

    Returns:
        :math:`(B,)`; 0 for identical images, about 2.3 for a just noticeable difference.

    Example:
        >>> image = torch.rand(2, 3, 8, 8)
        >>> delta_e(image, image)
        tensor([0., 0.])
    """
    _check_pair(a, b)
    lab_a, lab_b = rgb_to_lab(a).permute(0, 2, 3, 1), rgb_to_lab(b).permute(0, 2, 3, 1)
    return ciede2000(lab_a, lab_b).flatten(1).mean(dim=1)


#: A channel at or above this is a clipped highlight, all channels at or below 1 − this a crushed shadow.
CLIP_LEVEL = 254.5 / 255
#: Half the width of :func:`soft_clipped_share`'s ramp, which rises from 252 to 255 in 8 bits.
CLIP_WIDTH = 1.5 / 255
#: Half the width of :func:`new_clipping`'s wider ramp, which rises from 247 to 255 in 8 bits.
NEAR_CLIP_WIDTH = 4.0 / 255
#: Pixels of the original whose CIELAB chroma is below this (and L* in [20, 95]) count as near-neutral.
NEUTRAL_CHROMA = 5.0
#: Photos with fewer near-neutral pixels than this share have no near-neutral *region* to keep neutral: their
#: mean chroma would be that of a handful of pixels (one OASIS photo has 2 of 200,000).
NEUTRAL_AREA = 0.001


def clipped_share(image: Tensor) -> Tensor:
    r"""Share of pixels with a clipped highlight (any channel at 255 in 8 bits) or a crushed shadow (all at 0).

    Args:
        image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.

    Returns:
        :math:`(B,)` in :math:`[0, 1]`.

    Example:
        >>> clipped_share(torch.tensor([0.0, 0.5, 1.0, 0.3]).view(1, 1, 1, 4).expand(1, 3, 1, 4))
        tensor([0.5000])
    """
    check_image(image)
    brightest = image.amax(dim=1)
    return ((brightest >= CLIP_LEVEL) | (brightest <= 1.0 - CLIP_LEVEL)).flatten(1).float().mean(dim=1)


def neutral_chroma(image: Tensor, reference: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Mean CIELAB chroma of ``image`` over the pixels that are near-neutral in ``reference``.

    Near-neutral: chroma below :data:`NEUTRAL_CHROMA` and :math:`L^*` in :math:`[20, 95]` in ``reference``
    (whites and greys, not black or blown out). A retouch that keeps them neutral keeps this low; it is
    the ΔE of those pixels from grey in chroma.

    Args:
        image: images whose chroma is measured, :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        reference: images that pick the near-neutral pixels, :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        mask: ``near_neutral_mask(reference)`` when it is already at hand, else computed.

    Returns:
        :math:`(B,)`; NaN where ``reference`` has no near-neutral pixel.

    Example:
        >>> grey = torch.full((1, 3, 4, 4), 0.5)
        >>> warm = grey * torch.tensor([1.1, 1.0, 0.9]).view(1, 3, 1, 1)
        >>> bool(neutral_chroma(grey, grey) < 0.01), bool(neutral_chroma(warm, grey) > 5)
        (True, True)
    """
    _check_pair(image, reference)
    mask = near_neutral_mask(reference) if mask is None else mask
    count = mask.flatten(1).sum(dim=1)
    total = (_chroma(image) * mask).flatten(1).sum(dim=1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, math.nan))


def near_neutral_mask(image: Tensor) -> Tensor:
    r"""Mark the pixels of ``image`` that are near-neutral.

    Near-neutral: CIELAB chroma below :data:`NEUTRAL_CHROMA` and :math:`L^*` in :math:`[20, 95]`.

    Args:
        image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.

    Returns:
        :math:`(B, H, W)` boolean.

    Example:
        >>> image = torch.tensor([[0.5, 0.5, 0.5], [0.9, 0.2, 0.1]]).T.reshape(1, 3, 1, 2)
        >>> near_neutral_mask(image)
        tensor([[[ True, False]]])
    """
    check_image(image)
    lab = rgb_to_lab(image)
    return (_chroma(image, lab) < NEUTRAL_CHROMA) & (lab[:, 0] >= 20) & (lab[:, 0] <= 95)


def _chroma(image: Tensor, lab: Tensor | None = None) -> Tensor:
    """CIELAB chroma, :math:`(B, H, W)`, with a finite gradient at grey."""
    lab = rgb_to_lab(image) if lab is None else lab
    return _safe_sqrt(lab[:, 1].square() + lab[:, 2].square())


def soft_clipped_share(image: Tensor, width: float = CLIP_WIDTH) -> Tensor:
    r"""Compute a differentiable :func:`clipped_share`.

    A pixel counts by a sigmoid of its brightest channel that rises from about 0 at :math:`1 - 2\,\text{width}`
    to about 1 at 1 (and the mirror image for crushed shadows). The default ramp, 252 to 255 in 8 bits, counts a
    near-white pixel (which :func:`clipped_share` does not count) as almost unclipped, so an edit that pushes it to
    white pays almost a whole pixel.

    Args:
        image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        width: half the width of the ramp (a pixel ``width`` short of white counts 0.5).

    Returns:
        :math:`(B,)` in :math:`(0, 1)`.

    Example:
        >>> image = torch.tensor([0.0, 0.5, 1.0, 0.3]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
        >>> round(float(soft_clipped_share(image)), 2)
        0.49
    """
    return _soft_clipped(image, width).sum(dim=1)


def _soft_clipped(image: Tensor, width: float = CLIP_WIDTH) -> Tensor:
    """The soft shares of clipped highlights and of crushed shadows, :math:`(B, 2)`."""
    check_image(image)
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    brightest = image.amax(dim=1)
    high = torch.sigmoid((brightest - 1.0 + width) * (4.0 / width))
    low = torch.sigmoid((width - brightest) * (4.0 / width))
    return torch.stack([high.flatten(1).mean(dim=1), low.flatten(1).mean(dim=1)], dim=1)


def new_clipping(edited: Tensor, source: Tensor) -> Tensor:
    r"""Measure how much more of ``edited`` is clipped than of ``source``.

    The measure is :math:`\max(0, h(\text{edited}) - h(\text{source})) + \max(0, l(\text{edited}) -
    l(\text{source}))` with :math:`h` and :math:`l` the soft shares of clipped highlights and crushed shadows
    (:func:`soft_clipped_share` is their sum): highlights an edit clips are not paid for by shadows it lifts.
    Each share's rise is the larger of its rise on :func:`soft_clipped_share`'s ramp (252 to 255 in 8 bits: what
    :func:`clipped_share` counts) and on the wider :data:`NEAR_CLIP_WIDTH` one (247 to 255), which also charges
    pushing near-whites toward white before they clip. The wider ramp alone counts a near-white about half
    clipped already, and a retouch that pushed a photo's near-whites to white clipped 0.8 percentage points
    more of it than that measured (benchmarks/README.md, §3). Differentiable in ``edited``.

    Args:
        edited: retouched images, :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        source: the originals, :math:`(B, 3, H, W)` in :math:`[0, 1]`.

    Returns:
        :math:`(B,)` in :math:`[0, 1)`; 0 when the edit clips nothing new.

    Example:
        >>> photo = torch.full((1, 3, 4, 4), 0.6)
        >>> round(float(new_clipping(photo * 0.5, photo)), 6), bool(new_clipping(photo * 2, photo) > 0.9)
        (0.0, True)
        >>> half = torch.cat([torch.zeros(1, 3, 2, 4), torch.full((1, 3, 2, 4), 0.8)], dim=2)  # crushed shadows
        >>> bool(new_clipping(half + 0.3, half) > 0.45)   # lifted shadows do not pay for clipped highlights
        True
    """
    _check_pair(edited, source)
    rises = [_soft_clipped(edited, width) - _soft_clipped(source, width) for width in (CLIP_WIDTH, NEAR_CLIP_WIDTH)]
    return torch.maximum(*rises).clamp_min(0.0).sum(dim=1)


def neutral_cast(edited: Tensor, source: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Measure how far ``source``'s near-neutral pixels (:func:`near_neutral_mask`) are cast in ``edited``.

    The measure is the mean of :math:`\max(0, C^*_\text{edited} - \text{NEUTRAL\_CHROMA})` over them (CIELAB
    chroma units, ΔE from grey beyond the near-neutral limit). Differentiable in ``edited``.

    Args:
        edited: retouched images, :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        source: the originals, whose near-neutral pixels are measured, :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        mask: ``near_neutral_mask(source)`` when it is already at hand (an edit fitted over many steps), else
            computed.

    Returns:
        :math:`(B,)`, non-negative; 0 where ``source`` has no near-neutral pixel.

    Example:
        >>> grey = torch.full((1, 3, 4, 4), 0.5)
        >>> warm = grey * torch.tensor([1.2, 1.0, 0.8]).view(1, 3, 1, 1)
        >>> neutral_cast(grey * 1.1, grey), bool(neutral_cast(warm, grey) > 5)
        (tensor([0.]), True)
    """
    _check_pair(edited, source)
    mask = (near_neutral_mask(source.detach()) if mask is None else mask).float()
    excess = (_chroma(edited) - NEUTRAL_CHROMA).clamp_min(0.0)
    return (excess * mask).flatten(1).sum(dim=1) / mask.flatten(1).sum(dim=1).clamp_min(1.0)


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
