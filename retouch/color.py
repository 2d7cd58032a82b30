"""Colour ops: white balance, hue-preserving saturation and 3D LUTs, plus the learnable :class:`ColorAdjust`.

All images are float tensors of shape :math:`(B, 3, H, W)` holding sRGB-encoded RGB values in :math:`[0, 1]`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
from torch import Tensor, nn

from .bands import Stage

__all__ = [
    "ColorAdjust",
    "apply_lut",
    "check_image",
    "identity_lut",
    "mean_total_variation",
    "per_image",
    "saturation",
    "soft_bound",
    "white_balance",
]

# Smallest chroma treated as non-zero when bounding the saturation scale; only keeps the division finite.
_CHROMA_EPS = 1e-6
# ColorAdjust keeps edits natural: log gains within +-0.2 (gains in [0.82, 1.22]), the log saturation within
# +-0.6 (factor in [0.55, 1.8]) and each LUT residual entry within +-0.01: a looser LUT is where a fit
# exploits the scorer (colour-cast photos scored above their originals while moving away from them).
_LOG_GAIN_BOUND = 0.2
_LOG_SATURATION_BOUND = 0.6
_LUT_RESIDUAL_BOUND = 0.01


def check_image(image: Tensor, name: str = "image") -> None:
    """Raise ``ValueError`` unless ``image`` is a floating-point :math:`(B, 3, H, W)` tensor.

    Example:
        >>> check_image(torch.rand(2, 3, 4, 4))
    """
    if not isinstance(image, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(image).__name__}")
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"{name} must have shape (B, 3, H, W), got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {image.dtype}")


def per_image(value: float | Tensor, image: Tensor, name: str) -> Tensor:
    """Return a scalar or per-image ``value`` as a :math:`(B, 1, 1, 1)` tensor on ``image``'s device and dtype.

    Args:
        value: a float, or a tensor with 1 or ``B`` elements.
        image: the :math:`(B, C, H, W)` image it applies to.
        name: the argument's name, for the error message.

    Example:
        >>> per_image(0.5, torch.rand(2, 3, 4, 4), "strength").shape
        torch.Size([2, 1, 1, 1])
    """
    tensor = torch.as_tensor(value, device=image.device, dtype=image.dtype).reshape(-1)
    if tensor.numel() not in (1, image.shape[0]):
        raise ValueError(f"{name} must hold 1 or B={image.shape[0]} values, got {tensor.numel()}")
    return tensor.expand(image.shape[0]).reshape(-1, 1, 1, 1)


def white_balance(image: Tensor, gains: Tensor) -> Tensor:
    r"""Multiply each RGB channel by its gain and clip to :math:`[0, 1]`.

    Args:
        image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        gains: :math:`(B, 3)` or :math:`(1, 3)` positive per-channel gains; 1 is the identity.

    Returns:
        :math:`(B, 3, H, W)` in :math:`[0, 1]`.

    Example:
        >>> white_balance(torch.full((1, 3, 2, 2), 0.5), torch.tensor([[1.2, 1.0, 0.8]]))[0, :, 0, 0]
        tensor([0.6000, 0.5000, 0.4000])
    """
    check_image(image)
    if gains.ndim != 2 or gains.shape[1] != 3 or gains.shape[0] not in (1, image.shape[0]):
        raise ValueError(f"gains must have shape (B, 3) or (1, 3), got {tuple(gains.shape)}")
    if (gains <= 0).any():
        raise ValueError("gains must be positive")
    return (image * gains[:, :, None, None]).clamp(0.0, 1.0)


def saturation(image: Tensor, factor: float | Tensor) -> Tensor:
    r"""Scale chroma (the offset of each pixel from its luma) by ``factor`` without leaving :math:`[0, 1]`.

    The pixel moves along the line through its luma grey, so hue is kept and there is no HSV hue singularity.
    ``factor`` below 1 is a plain blend towards grey. Above 1 the scale of each pixel is capped at the largest one
    that keeps all three channels in range, so saturated colours stop at the gamut edge instead of clipping
    channel-wise. Luma uses the Rec. 601 weights of :func:`kornia.color.rgb_to_grayscale`.

    Args:
        image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        factor: non-negative float or :math:`(B,)` tensor; 1 is the identity, 0 gives grey.

    Returns:
        :math:`(B, 3, H, W)` in :math:`[0, 1]`.

    Example:
        >>> grey = saturation(torch.rand(1, 3, 4, 4), 0.0)
        >>> bool((grey[:, 0] - grey[:, 1]).abs().max() < 1e-6)
        True
    """
    check_image(image)
    scale = per_image(factor, image, "factor")
    if (scale < 0).any():
        raise ValueError("factor must be non-negative")
    luma = rgb_to_grayscale(image)
    chroma = image - luma
    room_up = (1.0 - luma) / chroma.clamp_min(_CHROMA_EPS)
    room_down = luma / (-chroma).clamp_min(_CHROMA_EPS)
    # the current pixel is in range, so the largest admissible scale is at least 1
    limit = torch.minimum(room_up, room_down).amin(dim=1, keepdim=True).clamp_min(1.0)
    # the final clamp only removes rounding error
    return (luma + torch.minimum(scale, limit) * chroma).clamp(0.0, 1.0)


def identity_lut(size: int, *, device: torch.device | None = None, dtype: torch.dtype | None = None) -> Tensor:
    r"""Return the identity 3D LUT of shape :math:`(3, S, S, S)`.

    Layout (the ``.cube`` order, red fastest): ``lut[c, k, j, i]`` is output channel ``c`` for the input colour
    :math:`(r, g, b) = (i, j, k) / (S - 1)`.

    Example:
        >>> identity_lut(2)[:, 1, 0, 1]
        tensor([1., 0., 1.])
    """
    if size < 2:
        raise ValueError(f"LUT size must be at least 2, got {size}")
    axis = torch.linspace(0.0, 1.0, size, device=device, dtype=dtype)
    blue, green, red = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([red, green, blue])


def apply_lut(image: Tensor, lut: Tensor) -> Tensor:
    r"""Map every pixel through a 3D LUT with trilinear interpolation.

    Args:
        image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        lut: :math:`(B, 3, S, S, S)`, :math:`(1, 3, S, S, S)` or :math:`(3, S, S, S)` in the layout of
            :func:`identity_lut`.

    Returns:
        :math:`(B, 3, H, W)`, clipped to :math:`[0, 1]` (a LUT in that range only needs it for rounding error).

    Example:
        >>> image = torch.rand(1, 3, 4, 4)
        >>> torch.allclose(apply_lut(image, identity_lut(5)), image, atol=1e-6)
        True
    """
    check_image(image)
    if lut.ndim == 4:
        lut = lut.unsqueeze(0)
    if lut.ndim != 5 or lut.shape[1] != 3 or len(set(lut.shape[2:])) != 1 or lut.shape[2] < 2:
        raise ValueError(f"lut must have shape (B, 3, S, S, S) or (3, S, S, S) with S >= 2, got {tuple(lut.shape)}")
    if lut.shape[0] not in (1, image.shape[0]):
        raise ValueError(f"lut batch must be 1 or B={image.shape[0]}, got {lut.shape[0]}")
    # grid_sample reads (x, y, z) = (W, H, D) = (red, green, blue), scaled to [-1, 1]
    grid = (image * 2.0 - 1.0).permute(0, 2, 3, 1).unsqueeze(1).to(lut.dtype)
    lut = lut.expand(image.shape[0], -1, -1, -1, -1)
    out = F.grid_sample(lut, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.squeeze(2).clamp(0.0, 1.0)


def _lut_slices(lut: Tensor) -> Tensor:
    r"""A :math:`(1, 3, S, S, S)` LUT as the 2-D texture :func:`_apply_lut_slices` samples.

    Returns :math:`(1, 6, (S - 1)(S + 1), S)`: block ``k`` of ``S + 1`` rows holds the green x red planes of blue
    nodes ``k`` (channels 0-2) and ``k + 1`` (channels 3-5), with the last green row repeated so that rounding in the
    row coordinate never blends a plane with the next block's.
    """
    lut = lut.reshape(3, *lut.shape[-3:])
    planes = torch.cat([lut[:, :-1], lut[:, 1:]])  # (6, S - 1, S, S): blue nodes k and k + 1
    planes = torch.cat([planes, planes[:, :, -1:]], dim=2)  # (6, S - 1, S + 1, S)
    return planes.reshape(1, 6, -1, lut.shape[-1]).contiguous()


def _apply_lut_slices(image: Tensor, slices: Tensor, size: int) -> Tensor:
    r""":func:`apply_lut` of an image in :math:`[0, 1]` through :func:`_lut_slices` of the LUT, clipped to [0, 1].

    Trilinear interpolation is bilinear in (red, green) on the two blue planes around the pixel's blue, then
    linear in blue: one 2-D ``grid_sample`` (vectorised on the CPU, unlike the 3-D one) reads both planes at once.
    """
    red, green, blue = image.unbind(1)
    position = blue * (size - 1)
    plane = position.floor().clamp_(0, size - 2)
    weight = (position - plane).unsqueeze(1)
    # row of the pixel in the texture, normalised for align_corners=True
    row = plane.mul_(size + 1).add_(green, alpha=size - 1).mul_(2.0 / (slices.shape[-2] - 1)).sub_(1.0)
    grid = torch.stack([red * 2.0 - 1.0, row], dim=-1)
    both = F.grid_sample(slices.expand(image.shape[0], -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                         align_corners=True)
    return torch.lerp(both[:, :3], both[:, 3:], weight).clamp_(0.0, 1.0)


def soft_bound(raw: Tensor, bound: float) -> Tensor:
    r"""Map ``raw`` smoothly into :math:`(-\text{bound}, \text{bound})` as ``bound * tanh(raw / bound)``.

    Near 0 it is the identity (slope 1), so a parameter initialised at 0 learns as if unbounded.

    Example:
        >>> soft_bound(torch.tensor([0.0, 1e9]), 2.0)
        tensor([0., 2.])
    """
    return bound * torch.tanh(raw / bound)


def mean_total_variation(tensor: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Sum over ``dims`` of the mean absolute difference between neighbours (a size-1 dim contributes 0).

    Example:
        >>> mean_total_variation(torch.tensor([[0.0, 1.0, 1.0]]), (1,))
        tensor(0.5000)
    """
    terms = [tensor.diff(dim=d).abs().mean() for d in dims if tensor.shape[d] > 1]
    return torch.stack(terms).sum() if terms else tensor.new_zeros(())


class ColorAdjust(nn.Module):
    r"""Learnable white balance, saturation and residual 3D LUT, applied in that order.

    Parameters (neutral values give the identity):

    * ``log_gains`` :math:`(1, 3)`: white-balance gains are ``exp(soft_bound(log_gains, 0.2))``; neutral 0.
    * ``raw_saturation`` :math:`(1,)`: the saturation factor is ``exp(soft_bound(raw_saturation, 0.6))``;
      neutral 0.
    * ``lut_residual`` :math:`(1, 3, S, S, S)`: ``soft_bound(lut_residual, 0.01)`` is added to
      :func:`identity_lut`, the sum clipped to :math:`[0, 1]`; neutral 0.

    :meth:`render` takes the same tensors with a leading batch of 1 or ``B`` (per-image parameters).

    Args:
        lut_size: LUT side :math:`S`.

    Example:
        >>> image = torch.rand(2, 3, 8, 8)
        >>> torch.allclose(ColorAdjust()(image), image, atol=1e-5)
        True
    """

    #: Saturation factors tried by :meth:`starts`.
    STARTS: tuple[float, ...] = (0.8, 1.25, 1.6)

    def __init__(self, lut_size: int = 9) -> None:
        super().__init__()
        if lut_size < 2:
            raise ValueError(f"lut_size must be at least 2, got {lut_size}")
        self.lut_size = lut_size
        self.log_gains = nn.Parameter(torch.zeros(1, 3))
        self.raw_saturation = nn.Parameter(torch.zeros(1))
        self.lut_residual = nn.Parameter(torch.zeros(1, 3, lut_size, lut_size, lut_size))

    def render(self, image: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        """Apply the op with raw ``params`` (this module's parameter names, batch 1 or B) to ``image``."""
        gains, factor, lut = self._bounded(params, image)
        return apply_lut(saturation(white_balance(image, gains), factor), lut)

    def _bounded(self, params: Mapping[str, Tensor], image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Raw ``params`` as the edit's white-balance gains, saturation factor and LUT (in [0, 1]), for ``image``."""
        residual = soft_bound(params["lut_residual"], _LUT_RESIDUAL_BOUND)
        lut = (identity_lut(self.lut_size, device=image.device, dtype=image.dtype) + residual).clamp(0.0, 1.0)
        gains = soft_bound(params["log_gains"], _LOG_GAIN_BOUND).exp().to(image.dtype)
        factor = soft_bound(params["raw_saturation"], _LOG_SATURATION_BOUND).exp().to(image.dtype)
        return gains, factor, lut

    def forward(self, image: Tensor) -> Tensor:
        """:math:`(B, 3, H, W)` in :math:`[0, 1]` -> same shape and range."""
        return self.render(image, dict(self.named_parameters()))

    @torch.no_grad()
    def stage(self, image: Tensor) -> Stage:
        r"""This edit as a :data:`~retouch.bands.Stage` for bands of rows of an image shaped like ``image``.

        White balance and saturation are :meth:`forward`'s; the LUT is read by :func:`_apply_lut_slices` (the same
        trilinear interpolation, equal up to float rounding, at about half the cost of the 3-D ``grid_sample``). No
        gradients are tracked.

        Args:
            image: :math:`(B, 3, H, W)`, the op's input; only its dtype and device are used.

        Returns:
            ``stage(band, top)``: the colour edit applied to a :math:`(B, 3, h, W)` band.

        Example:
            >>> adjust = ColorAdjust(lut_size=5)
            >>> with torch.no_grad():
            ...     _ = adjust.lut_residual.normal_(0.0, 0.01)
            >>> image = torch.rand(1, 3, 8, 8)
            >>> torch.allclose(adjust.stage(image)(image, 0), adjust(image), atol=1e-5)
            True
        """
        check_image(image)
        gains, factor, lut = self._bounded(dict(self.named_parameters()), image)
        slices = _lut_slices(lut)

        def apply(band: Tensor, top: int) -> Tensor:
            return _apply_lut_slices(saturation(white_balance(band, gains), factor), slices, self.lut_size)

        return apply

    def starts(self) -> list[dict[str, Tensor]]:
        """Coarse starting points for fitting: the saturation factors in ``STARTS``, as raw-parameter overrides.

        Example:
            >>> start = ColorAdjust().starts()[0]["raw_saturation"]
            >>> round(float(soft_bound(start, 0.6).exp()), 3)
            0.8
        """
        # the inverse of exp(soft_bound(raw, bound))
        raws = [_LOG_SATURATION_BOUND * math.atanh(math.log(f) / _LOG_SATURATION_BOUND) for f in self.STARTS]
        return [{"raw_saturation": torch.full_like(self.raw_saturation, raw)} for raw in raws]

    def regularization(self, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """Scalar penalty: LUT total variation + mean |LUT residual| + mean |log gains| + mean |raw saturation|."""
        params = dict(self.named_parameters()) if params is None else params
        residual = params["lut_residual"]
        return (
            mean_total_variation(residual, (2, 3, 4))
            + residual.abs().mean()
            + params["log_gains"].abs().mean()
            + params["raw_saturation"].abs().mean()
        )
