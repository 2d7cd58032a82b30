r"""Dark channel prior dehazing (He, Sun & Tang, 2009) with guided-filter refinement, and the learnable :class:`Dehaze`.

Haze model: :math:`I = J t + A (1 - t)`. The transmission is estimated as
:math:`t = 1 - \omega\, s\, \mathrm{dark}(I / A)`, refined by a guided filter with the grey image as guide, and
the scene is recovered as :math:`J = (I - A) / \max(t, t_0) + A`. The strength :math:`s = 0` is the identity,
:math:`s = 1` is the paper's method and :math:`s < 0` adds haze (a blend towards the airlight).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
from kornia.filters import box_blur, guided_blur
from torch import Tensor, nn

from .bands import Stage, upsample_at, upsample_band
from .color import check_image, per_image, soft_bound

__all__ = [
    "AIRLIGHT_MIN",
    "AIRLIGHT_OFFSET_BOUND",
    "DEHAZE_WORK_SIZE",
    "Dehaze",
    "box_filter",
    "clip_straight_through",
    "dark_channel",
    "dehaze",
    "estimate_airlight",
    "guided_filter",
    "recover",
    "resize_to_fit",
    "transmission",
]

#: Lowest airlight used by :class:`Dehaze` and the baseline, so that I / A stays bounded.
AIRLIGHT_MIN = 0.05
#: Largest correction :class:`Dehaze` makes to the estimated airlight, per channel. Errors in the airlight are
#: amplified by 1 / t in the recovered scene, so a fit that used it as a free colour knob damaged photos.
AIRLIGHT_OFFSET_BOUND = 0.05
#: Default longest side of the copy :class:`Dehaze` estimates the transmission on: that of the copy edits are fitted
#: on (``retouch.optimize.EditSettings.work_size``), so that the fitting copy and the full-size photo share the haze
#: estimate and the fitted edit is the one applied. At 512, a strong dehaze fitted on a 256-px copy of a 500×400
#: photo gave that photo an edit 27 dB (PSNR, downscaled) from the one fitted; at 256, 45–47 dB.
DEHAZE_WORK_SIZE = 256
# Lowest transmission floor of :class:`Dehaze` (the sigmoid of a very negative raw value underflows to 0).
_T_MIN_FLOOR = 1e-3


def clip_straight_through(image: Tensor) -> Tensor:
    """Clip values to :math:`[0, 1]` but pass gradients through unchanged (straight-through estimator).

    Values are exactly those of ``image.clamp(0, 1)``; the gradient is that of the identity, so pixels pushed out
    of range keep telling the optimiser which way the parameters move them and gradients stay finite.

    Example:
        >>> clip_straight_through(torch.tensor([-0.5, 0.5, 1.5]))
        tensor([0.0000, 0.5000, 1.0000])
    """
    return image + (image.clamp(0.0, 1.0) - image).detach()


def resize_to_fit(image: Tensor, size: int) -> Tensor:
    """Downscale :math:`(B, C, H, W)` (bilinear, antialiased) so its longer side is at most ``size``; else return it.

    Example:
        >>> resize_to_fit(torch.rand(1, 3, 100, 50), 40).shape
        torch.Size([1, 3, 40, 20])
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    height, width = image.shape[-2:]
    if max(height, width) <= size:
        return image
    scale = size / max(height, width)
    target = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(image, size=target, mode="bilinear", align_corners=False, antialias=True)


def dark_channel(image: Tensor, patch: int = 15) -> Tensor:
    r"""Dark channel: minimum over RGB, then a ``patch x patch`` minimum filter (windows clipped at the border).

    Args:
        image: :math:`(B, 3, H, W)`.
        patch: odd window side.

    Returns:
        :math:`(B, 1, H, W)`.

    Example:
        >>> dark_channel(torch.ones(1, 3, 8, 8), patch=3).shape
        torch.Size([1, 1, 8, 8])
    """
    check_image(image)
    if patch < 1 or patch % 2 == 0:
        raise ValueError(f"patch must be a positive odd int, got {patch}")
    # the window minimum is separable: along rows, then along columns, with 1-D pooling
    # (the same values as a 2-D max_pool2d, about 35 times faster on a CPU)
    negated = -image.amin(dim=1, keepdim=True)
    b, _, h, w = negated.shape
    rows = F.max_pool1d(negated.reshape(b * h, 1, w), patch, stride=1, padding=patch // 2)
    columns = F.max_pool1d(rows.reshape(b, h, w).transpose(1, 2).reshape(b * w, 1, h), patch, stride=1,
                           padding=patch // 2)
    return -columns.reshape(b, w, h).transpose(1, 2)[:, None]


def estimate_airlight(image: Tensor, dark: Tensor, top: float = 0.001) -> Tensor:
    r"""Airlight per image: mean colour of the input over the ``top`` fraction of pixels with the highest dark channel.

    At least one pixel is used.

    Args:
        image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        dark: :math:`(B, 1, H, W)` dark channel of ``image``.
        top: fraction of pixels, in :math:`(0, 1]`.

    Returns:
        :math:`(B, 3)` in :math:`[0, 1]`.

    Example:
        >>> image = torch.rand(2, 3, 16, 16)
        >>> estimate_airlight(image, dark_channel(image)).shape
        torch.Size([2, 3])
    """
    check_image(image)
    if dark.ndim != 4 or dark.shape[1] != 1 or dark.shape[-2:] != image.shape[-2:] or dark.shape[0] != image.shape[0]:
        raise ValueError(f"dark must have shape (B, 1, H, W) matching the image, got {tuple(dark.shape)}")
    if not 0.0 < top <= 1.0:
        raise ValueError(f"top must be in (0, 1], got {top}")
    count = max(1, round(top * dark.shape[-2] * dark.shape[-1]))
    index = dark.flatten(1).topk(count, dim=1).indices
    candidates = image.flatten(2).gather(2, index.unsqueeze(1).expand(-1, 3, -1))
    return candidates.mean(dim=2)


def box_filter(image: Tensor, radius: int) -> Tensor:
    r"""Mean over ``(2 radius + 1)``-square windows with replicated borders, from cumulative sums.

    The cost does not grow with the radius (four additions a pixel), unlike a convolution with a
    ``2 radius + 1``-tap kernel, in the forward and the backward pass alike.

    Args:
        image: :math:`(B, C, H, W)`.
        radius: window radius in pixels, ``>= 0``.

    Returns:
        :math:`(B, C, H, W)`.

    Example:
        >>> box_filter(torch.tensor([[[[0.0, 3.0, 0.0]]]]), 1)
        tensor([[[[1., 1., 1.]]]])
    """
    if image.ndim != 4:
        raise ValueError(f"image must be (B, C, H, W), got {tuple(image.shape)}")
    if radius < 0:
        raise ValueError(f"radius must be non-negative, got {radius}")
    size = 2 * radius + 1
    for dim, pad in ((-1, (radius, radius, 0, 0)), (-2, (0, 0, radius, radius))):
        length = image.shape[dim]
        sums = F.pad(F.pad(image, pad, mode="replicate").cumsum(dim), (1, 0, 0, 0) if dim == -1 else (0, 0, 1, 0))
        image = (sums.narrow(dim, size, length) - sums.narrow(dim, 0, length)) / size
    return image


def guided_filter(guide: Tensor, src: Tensor, radius: int, eps: float, subsample: int = 1) -> Tensor:
    r"""Guided filter (He et al.) with a grey guide, ``(2 radius + 1)``-square windows and replicated borders.

    At full resolution the window means are :func:`box_filter`'s (cost independent of the radius). With
    ``subsample > 1`` it is the fast guided filter (He & Sun, 2015) of :func:`kornia.filters.guided_blur`: the
    linear coefficients are computed on copies subsampled by that factor and upsampled, then applied to the
    full-size guide.

    Args:
        guide: :math:`(B, 1, H, W)` guidance image.
        src: :math:`(B, C, H, W)` image to filter.
        radius: window radius in pixels, ``>= 0`` (0 returns ``src`` unchanged up to rounding).
        eps: regularisation, ``> 0``; larger smooths more.
        subsample: subsampling factor of the fast guided filter, ``>= 1``.

    Returns:
        :math:`(B, C, H, W)`.

    Example:
        >>> guide = torch.rand(1, 1, 16, 16)
        >>> guided_filter(guide, torch.ones(1, 1, 16, 16), radius=2, eps=1e-3).mean().item()  # doctest: +ELLIPSIS
        1.0...
    """
    if guide.ndim != 4 or src.ndim != 4 or guide.shape[-2:] != src.shape[-2:] or guide.shape[0] != src.shape[0]:
        raise ValueError(
            f"guide and src must be (B, C, H, W) with the same B, H, W, got {tuple(guide.shape)} and {tuple(src.shape)}"
        )
    if guide.shape[1] != 1:
        raise ValueError(f"guide must have one channel, got {guide.shape[1]}")
    if radius < 0:
        raise ValueError(f"radius must be non-negative, got {radius}")
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    if subsample < 1:
        raise ValueError(f"subsample must be at least 1, got {subsample}")
    if subsample > 1:
        return guided_blur(guide, src, 2 * radius + 1, eps, border_type="replicate", subsample=subsample,
                           separable=True)
    mean_guide = box_filter(guide, radius)
    variance = box_filter(guide * guide, radius) - mean_guide * mean_guide
    mean_src = box_filter(src, radius)
    covariance = box_filter(guide * src, radius) - mean_guide * mean_src
    slope = covariance / (variance + eps)
    offset = mean_src - slope * mean_guide
    return box_filter(slope, radius) * guide + box_filter(offset, radius)


def _fast_guided_coefficients(image: Tensor, transmission: Tensor, radius: int, eps: float, subsample: int) -> Tensor:
    r"""Upsampling-ready coefficients of :func:`recover`'s refining pass, without full-size intermediates.

    :func:`recover` filters the haze :math:`1 - t` (``t`` upsampled to the image's size) with the fast guided
    filter of :func:`kornia.filters.guided_blur` (grey guide, ``2 radius + 1`` windows, replicated borders,
    ``subsample``), whose output is :math:`\bar a \cdot \text{grey} + \bar b` with :math:`\bar a, \bar b`
    computed on the subsampled pixels and bilinearly upsampled. This returns :math:`(\bar a, \bar b)` as
    :math:`(B, 2, h', w')`, reading only the subsampled pixels of the image and of the upsampled transmission.
    """
    size = (image.shape[-2], image.shape[-1])
    rows, cols = (_subsample_indices(length, subsample, image.device) for length in size)
    guide = rgb_to_grayscale(image.index_select(-2, rows).index_select(-1, cols))
    src = 1.0 - upsample_at(transmission, size, rows, cols)
    kernel = (2 * radius) // subsample + 1
    # the arithmetic of kornia.filters.guided._guided_blur_grayscale_guidance
    mean_guide = box_blur(guide, kernel, "replicate", separable=True)
    variance = torch.addcmul(box_blur(guide.square(), kernel, "replicate", separable=True), mean_guide, mean_guide,
                             value=-1)
    mean_src = box_blur(src, kernel, "replicate", separable=True)
    covariance = torch.addcmul(box_blur(guide * src, kernel, "replicate", separable=True), mean_guide, mean_src,
                               value=-1)
    slope = covariance / (variance + eps)
    offset = torch.addcmul(mean_src, slope, mean_guide, value=-1)
    return torch.cat([box_blur(slope, kernel, "replicate", separable=True),
                      box_blur(offset, kernel, "replicate", separable=True)], dim=1)


def _subsample_indices(size: int, subsample: int, device: torch.device) -> Tensor:
    """The pixels kornia's fast guided filter keeps of an axis of ``size`` (``kornia.filters.guided``'s rule)."""
    rows = max(size // subsample, 1)
    i = torch.arange(rows, device=device)
    return ((2 * i + 1) * size + rows * (1 - subsample)).div(2 * rows, rounding_mode="floor").clamp(0, size - 1)


def _check_airlight(airlight: Tensor, image: Tensor) -> Tensor:
    """Validate a :math:`(B, 3)` or :math:`(1, 3)` positive airlight and return it as :math:`(B|1, 3, 1, 1)`."""
    if airlight.ndim != 2 or airlight.shape[1] != 3 or airlight.shape[0] not in (1, image.shape[0]):
        raise ValueError(f"airlight must have shape (B, 3) or (1, 3), got {tuple(airlight.shape)}")
    if (airlight <= 0).any():
        raise ValueError("airlight must be positive")
    return airlight[:, :, None, None]


def transmission(
    image: Tensor,
    strength: float | Tensor,
    airlight: Tensor,
    patch: int = 15,
    omega: float = 0.95,
    radius: int = 60,
    eps: float = 1e-3,
) -> Tensor:
    r"""Refined transmission :math:`t = 1 - \omega\, s\, \mathrm{GF}(\mathrm{dark}(I / A))` (not yet floored by t_min).

    The guided filter (grey image as guide) is linear in its source, so this equals filtering the coarse
    transmission :math:`1 - \omega s\, \mathrm{dark}(I / A)`, and strength 0 gives exactly :math:`t = 1`.

    Args:
        image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        strength: :math:`s`, float or :math:`(B,)`; 0 gives :math:`t = 1`, negative values give :math:`t > 1`.
        airlight: :math:`(B, 3)` or :math:`(1, 3)`, positive.
        patch: dark-channel window side (odd).
        omega: fraction of haze removed at :math:`s = 1`.
        radius: guided-filter radius in pixels of ``image``.
        eps: guided-filter regularisation.

    Returns:
        :math:`(B, 1, H, W)`.

    Example:
        >>> image = torch.rand(1, 3, 16, 16)
        >>> transmission(image, 0.0, torch.ones(1, 3), radius=4).allclose(torch.ones(1, 1, 16, 16))
        True
    """
    check_image(image)
    scaled = image / _check_airlight(airlight, image)
    # the guided filter is linear in its source, so filtering the dark channel before scaling by the strength is the
    # same as filtering t, and keeps t exactly 1 at strength 0
    haze = guided_filter(rgb_to_grayscale(image), dark_channel(scaled, patch), radius, eps)
    return 1.0 - omega * per_image(strength, image, "strength") * haze


def recover(
    image: Tensor,
    transmission: Tensor,
    airlight: Tensor,
    t_min: float | Tensor = 0.1,
    refine_radius: int = 0,
    eps: float = 1e-3,
) -> Tensor:
    r"""Recover :math:`J = (I - A) / \max(t, t_0) + A`, clipped to :math:`[0, 1]` with :func:`clip_straight_through`.

    A transmission computed on a smaller copy of ``image`` is bilinearly upsampled to its size and then, if
    ``refine_radius > 0``, refined by one guided-filter pass at full size (grey image as guide) so its edges
    follow the full-resolution image. That pass is a fast guided filter subsampled by the (floored) upsampling
    factor, so its cost stays low for large images.

    Args:
        image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        transmission: :math:`(B, 1, h, w)`, any :math:`h \times w`.
        airlight: :math:`(B, 3)` or :math:`(1, 3)`, positive.
        t_min: lower bound :math:`t_0` of the transmission, float or :math:`(B,)`, in :math:`(0, 1]`.
        refine_radius: full-size guided-filter radius used after upsampling; 0 skips the pass.
        eps: guided-filter regularisation.

    Returns:
        :math:`(B, 3, H, W)` in :math:`[0, 1]`.

    Example:
        >>> image = torch.rand(1, 3, 32, 32)
        >>> recover(image, torch.ones(1, 1, 8, 8), torch.ones(1, 3), refine_radius=2).allclose(image, atol=1e-5)
        True
    """
    check_image(image)
    if transmission.ndim != 4 or transmission.shape[1] != 1 or transmission.shape[0] not in (1, image.shape[0]):
        raise ValueError(f"transmission must have shape (B, 1, h, w), got {tuple(transmission.shape)}")
    floor = per_image(t_min, image, "t_min")
    if (floor <= 0).any() or (floor > 1).any():
        raise ValueError("t_min must lie in (0, 1]")
    if transmission.shape[-2:] != image.shape[-2:]:
        factor = max(1, max(image.shape[-2:]) // max(transmission.shape[-2:]))
        transmission = F.interpolate(transmission, size=image.shape[-2:], mode="bilinear", align_corners=False)
        if refine_radius > 0:
            # filter 1 - t (linear, so equivalent) to keep an all-ones t exactly 1
            haze = guided_filter(rgb_to_grayscale(image), 1.0 - transmission, refine_radius, eps, subsample=factor)
            transmission = 1.0 - haze
    light = _check_airlight(airlight, image)
    return clip_straight_through((image - light) / torch.maximum(transmission, floor) + light)


def dehaze(
    image: Tensor,
    strength: float | Tensor,
    airlight: Tensor,
    t_min: float | Tensor = 0.1,
    patch: int = 15,
    omega: float = 0.95,
    radius: int = 60,
    eps: float = 1e-3,
) -> Tensor:
    r"""Dark channel prior dehazing at the image's own resolution.

    Args:
        image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        strength: float or :math:`(B,)`; 0 is the identity, 1 the paper's method, negative adds haze.
        airlight: :math:`(B, 3)` or :math:`(1, 3)`, positive (see :func:`estimate_airlight`).
        t_min: transmission floor :math:`t_0` in :math:`(0, 1]`.
        patch: dark-channel window side (odd).
        omega: fraction of haze removed at strength 1.
        radius: guided-filter radius in pixels.
        eps: guided-filter regularisation.

    Returns:
        :math:`(B, 3, H, W)` in :math:`[0, 1]`.

    Example:
        >>> image = torch.rand(1, 3, 16, 16)
        >>> dehaze(image, 0.0, torch.ones(1, 3)).allclose(image, atol=1e-5)
        True
    """
    refined = transmission(image, strength, airlight, patch, omega, radius, eps)
    return recover(image, refined, airlight, t_min)


class Dehaze(nn.Module):
    r"""Learnable dark channel prior dehazing that works at any resolution.

    Parameters (neutral values give the identity):

    * ``raw_strength`` :math:`(1,)`: strength ``tanh(raw_strength)`` in :math:`(-1, 1)`; neutral 0.
    * ``airlight_offset`` :math:`(1, 3)`: ``soft_bound(airlight_offset, 0.05)`` is added to the estimated
      airlight (the sum clipped to :math:`[0.05, 1]`); neutral 0.
    * ``raw_t_min`` :math:`(1,)`: transmission floor ``sigmoid(raw_t_min)`` (at least 0.001); starts at
      :math:`t_0 = 0.1`.

    :meth:`render` takes the same tensors with a leading batch of 1 or ``B`` (per-image parameters).

    Resolution: the airlight and transmission are computed on a copy whose longer side is at most ``work_size``
    pixels (``patch`` and ``radius`` count pixels of that copy), and the transmission is then bilinearly upsampled
    and refined by one guided-filter pass at full size (see :func:`recover`). The cost is therefore nearly
    independent of the input size, and an image and its downscaled copy get the same edit.

    Args:
        patch: dark-channel window side (odd), in work-copy pixels.
        omega: fraction of haze removed at strength 1.
        radius: guided-filter radius in work-copy pixels.
        eps: guided-filter regularisation.
        work_size: longest side of the copy the transmission is computed on.
        refine_radius: full-size guided-filter radius after upsampling; ``None`` uses twice the upsampling
            factor (rounded up), i.e. about two work-copy pixels; 0 skips the pass.

    Example:
        >>> image = torch.rand(1, 3, 64, 48)
        >>> Dehaze(work_size=32)(image).allclose(image, atol=1e-5)
        True
    """

    #: Strengths tried by :meth:`starts`.
    STARTS: tuple[float, ...] = (-0.3, 0.3, 0.6, 0.9)

    def __init__(
        self,
        patch: int = 15,
        omega: float = 0.95,
        radius: int = 60,
        eps: float = 1e-3,
        work_size: int = DEHAZE_WORK_SIZE,
        refine_radius: int | None = None,
    ) -> None:
        super().__init__()
        if patch < 1 or patch % 2 == 0:
            raise ValueError(f"patch must be a positive odd int, got {patch}")
        if work_size < 1:
            raise ValueError(f"work_size must be positive, got {work_size}")
        self.patch = patch
        self.omega = omega
        self.radius = radius
        self.eps = eps
        self.work_size = work_size
        self.refine_radius = refine_radius
        self.raw_strength = nn.Parameter(torch.zeros(1))
        self.airlight_offset = nn.Parameter(torch.zeros(1, 3))
        self.raw_t_min = nn.Parameter(torch.full((1,), math.log(0.1 / 0.9)))

    def render(self, image: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        """Apply the op with raw ``params`` (this module's parameter names, batch 1 or B) to ``image``."""
        check_image(image)
        small = resize_to_fit(image, self.work_size)
        airlight, refined, t_min, refine_radius = self._estimate(image, small, params)
        return recover(image, refined, airlight, t_min, refine_radius, self.eps)

    def _estimate(
        self, image: Tensor, small: Tensor, params: Mapping[str, Tensor]
    ) -> tuple[Tensor, Tensor, Tensor, int]:
        """Airlight (B, 3), transmission on ``small`` (B, 1, h, w), t_min and the full-size refine radius."""
        offset = soft_bound(params["airlight_offset"], AIRLIGHT_OFFSET_BOUND)
        airlight = estimate_airlight(small, dark_channel(small, self.patch)) + offset
        airlight = airlight.clamp(AIRLIGHT_MIN, 1.0)
        strength = torch.tanh(params["raw_strength"])
        refined = transmission(small, strength, airlight, self.patch, self.omega, self.radius, self.eps)
        refine_radius = self.refine_radius
        if refine_radius is None:
            refine_radius = 2 * math.ceil(max(image.shape[-2:]) / max(small.shape[-2:]))
        t_min = torch.sigmoid(params["raw_t_min"]).clamp_min(_T_MIN_FLOOR)
        return airlight, refined, t_min, refine_radius

    @torch.no_grad()
    def stage(self, image: Tensor) -> Stage:
        r"""This edit as a :data:`~retouch.bands.Stage` for bands of rows of ``image``.

        The haze estimate is global: it is made once, on the downscaled copy of the whole ``image`` as in
        :meth:`forward`, and so are the coefficients of the full-size guided-filter pass (on the subsampled copy
        the fast guided filter reads). Each band then only upsamples them and recovers its pixels, so the output
        equals :meth:`forward`'s up to float rounding. An image at most twice ``work_size`` (where the refining
        pass is a plain guided filter at full size) is edited whole and handed out band by band. No gradients
        are tracked.

        Args:
            image: :math:`(B, 3, H, W)` in :math:`[0, 1]`, the op's input: the stage must get bands of it.

        Returns:
            ``stage(band, top)``: the recovered rows ``top .. top + h`` of ``image`` for its :math:`(B, 3, h, W)` band.

        Example:
            >>> haze = Dehaze(work_size=16)
            >>> with torch.no_grad():
            ...     _ = haze.raw_strength.fill_(0.8)
            >>> image = torch.rand(1, 3, 40, 64)
            >>> torch.allclose(haze.stage(image)(image[:, :, 8:20], 8), haze(image)[:, :, 8:20], atol=1e-5)
            True
        """
        check_image(image)
        params = dict(self.named_parameters())
        small = resize_to_fit(image, self.work_size)
        airlight, refined, t_min, refine_radius = self._estimate(image, small, params)
        size = (image.shape[-2], image.shape[-1])
        factor = max(1, max(size) // max(refined.shape[-2:]))
        if refined.shape[-2:] == size or (refine_radius > 0 and factor == 1):
            whole = recover(image, refined, airlight, t_min, refine_radius, self.eps)
            return lambda band, top: whole[:, :, top : top + band.shape[-2]]
        light = _check_airlight(airlight, image)
        floor = per_image(t_min, image, "t_min")
        coefficients = None
        if refine_radius > 0:
            coefficients = _fast_guided_coefficients(image, refined, refine_radius, self.eps, factor)

        def apply(band: Tensor, top: int) -> Tensor:
            if coefficients is None:
                clear = upsample_band(refined, size, top, band.shape[-2])
            else:
                slope, offset = upsample_band(coefficients, size, top, band.shape[-2]).split(1, dim=1)
                clear = 1.0 - torch.addcmul(offset, slope, rgb_to_grayscale(band))
            return (band - light).div_(torch.maximum(clear, floor)).add_(light).clamp_(0.0, 1.0)

        return apply

    def forward(self, image: Tensor) -> Tensor:
        """:math:`(B, 3, H, W)` in :math:`[0, 1]` -> same shape and range."""
        return self.render(image, dict(self.named_parameters()))

    def starts(self) -> list[dict[str, Tensor]]:
        """Coarse starting points for fitting: the strengths in ``STARTS`` (negative adds haze), as raw overrides.

        Example:
            >>> [round(float(torch.tanh(s["raw_strength"])), 2) for s in Dehaze().starts()]
            [-0.3, 0.3, 0.6, 0.9]
        """
        return [{"raw_strength": torch.full_like(self.raw_strength, math.atanh(s))} for s in self.STARTS]

    def regularization(self, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """Scalar penalty: mean |airlight offset|.

        The strength is not charged here: the fitting's fidelity term already charges every pixel that dehazing
        changes, and charging it twice kept dark hazy photos hazy.
        """
        params = dict(self.named_parameters()) if params is None else params
        return params["airlight_offset"].abs().mean()
