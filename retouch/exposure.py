r"""Zero-DCE++ style light-enhancement curves and the learnable :class:`ExposureCurves`.

Each iteration applies the quadratic curve :math:`x \leftarrow x + a\,x(1 - x)` with :math:`a \in [-1, 1]`, which
maps :math:`[0, 1]` onto itself monotonically: :math:`a > 0` brightens, :math:`a < 0` darkens, :math:`a = 0` is the
identity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .bands import Stage, upsample_band
from .color import check_image, mean_total_variation

__all__ = ["CHANNEL_SPREAD_WEIGHT", "ExposureCurves", "apply_curves", "channel_spread"]

#: Weight of :func:`channel_spread` in :meth:`ExposureCurves.regularization`: it keeps the per-channel curves
#: from acting as a colour knob, which a profile that likes vivid photos would otherwise turn into strong casts
#: (benchmarks/README.md, §3).
CHANNEL_SPREAD_WEIGHT = 4.0


def _check_curve_shape(alpha: Tensor) -> None:
    """Refuse curve parameters that are not (B, 3n, h, w) with n >= 1; one message for every caller."""
    if alpha.ndim != 4 or alpha.shape[1] == 0 or alpha.shape[1] % 3 != 0:
        raise ValueError(f"alpha must have shape (B, 3n, h, w) with n >= 1, got {tuple(alpha.shape)}")


def apply_curves(image: Tensor, alpha: Tensor) -> Tensor:
    r"""Apply ``n`` iterations of the light-enhancement curve per channel.

    Args:
        image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        alpha: :math:`(B, 3n, h, w)` or :math:`(1, 3n, h, w)` curve parameters in :math:`[-1, 1]`; channels
            ``3i .. 3i+2`` are the RGB parameters of iteration ``i``. ``h x w`` is ``1 x 1`` for global curves or a
            low-resolution grid, bilinearly upsampled to ``H x W``.

    Returns:
        :math:`(B, 3, H, W)` in :math:`[0, 1]`.

    Example:
        >>> image = torch.full((1, 3, 4, 4), 0.25)
        >>> apply_curves(image, torch.ones(1, 3, 1, 1))[0, 0, 0, 0]
        tensor(0.4375)
    """
    check_image(image)
    _check_curve_shape(alpha)
    if alpha.shape[0] not in (1, image.shape[0]):
        raise ValueError(f"alpha batch must be 1 or B={image.shape[0]}, got {alpha.shape[0]}")
    if alpha.abs().max() > 1.0:
        raise ValueError("alpha must lie in [-1, 1] (map raw parameters through tanh)")
    if alpha.shape[-2:] != (1, 1) and alpha.shape[-2:] != image.shape[-2:]:
        alpha = F.interpolate(alpha, size=image.shape[-2:], mode="bilinear", align_corners=False)
    out = image
    for a in alpha.split(3, dim=1):
        out = out + a * out * (1.0 - out)
    return out


def _curves_inplace(image: Tensor, alpha: Tensor) -> Tensor:
    """:func:`apply_curves`' iterations with ``alpha`` already at ``image``'s size (or 1 x 1), on one new tensor.

    The operations are those of :func:`apply_curves` in the same order, so the result is the same to the bit.
    """
    out = image
    for i, a in enumerate(alpha.split(3, dim=1)):
        change = a * out
        change.mul_(1.0 - out)
        out = out + change if i == 0 else out.add_(change)
    return out


def channel_spread(alpha: Tensor) -> Tensor:
    r"""Measure how far the curves change colour rather than tone.

    The measure is the mean absolute deviation of each channel's curve parameter from the mean of the three
    (Zero-DCE's colour-constancy term, on the parameters).

    Args:
        alpha: :math:`(B, 3n, h, w)` curve parameters as in :func:`apply_curves`.

    Returns:
        Scalar, 0 when the three channels share each iteration's curve.

    Example:
        >>> channel_spread(torch.tensor([0.3, 0.3, 0.3]).view(1, 3, 1, 1))
        tensor(0.)
        >>> channel_spread(torch.tensor([0.6, 0.3, 0.0]).view(1, 3, 1, 1))
        tensor(0.2000)
    """
    _check_curve_shape(alpha)
    per_channel = alpha.unflatten(1, (-1, 3))
    return (per_channel - per_channel.mean(dim=2, keepdim=True)).abs().mean()


class ExposureCurves(nn.Module):
    r"""Learnable light-enhancement curves, global or on a coarse spatial grid.

    The parameter ``raw`` of shape :math:`(1, 3n, h, w)` is mapped through ``tanh`` to the curve parameters of
    :func:`apply_curves`; it starts at 0, the identity. Because the grid is upsampled to whatever size the image
    has, the same parameters apply to any resolution. :meth:`render` takes ``raw`` with a leading batch of 1 or
    ``B`` (per-image parameters).

    Args:
        iterations: number of curve iterations ``n``.
        grid: ``(h, w)`` of the parameter grid; ``(1, 1)`` for global curves.

    Example:
        >>> curves = ExposureCurves(iterations=2, grid=(3, 3))
        >>> image = torch.rand(1, 3, 16, 16)
        >>> torch.equal(curves(image), image)
        True
    """

    #: Curve parameters tried by :meth:`starts`.
    STARTS: tuple[float, ...] = (-0.3, -0.15, 0.15, 0.3)

    def __init__(self, iterations: int = 4, grid: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        if iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {iterations}")
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f"grid must be two positive ints, got {grid}")
        self.raw = nn.Parameter(torch.zeros(1, 3 * iterations, *grid))

    def render(self, image: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        """Apply the curves with raw ``params`` (``{"raw": (B or 1, 3n, h, w)}``) to ``image``."""
        return apply_curves(image, torch.tanh(params["raw"]))

    def forward(self, image: Tensor) -> Tensor:
        """:math:`(B, 3, H, W)` in :math:`[0, 1]` -> same shape and range."""
        return self.render(image, dict(self.named_parameters()))

    @torch.no_grad()
    def stage(self, image: Tensor) -> Stage:
        r"""This edit as a :data:`~retouch.bands.Stage` for bands of rows of an image shaped like ``image``.

        The output equals :meth:`forward`'s (the same arithmetic, pixel by pixel; a curve grid is upsampled one band
        at a time, equal to the whole upsampled grid up to float rounding). No gradients are tracked.

        Args:
            image: :math:`(B, 3, H, W)`, the op's input; only its size is used.

        Returns:
            ``stage(band, top)``: the curves applied to :math:`(B, 3, h, W)` rows ``top .. top + h``.

        Example:
            >>> curves = ExposureCurves(grid=(2, 3))
            >>> with torch.no_grad():
            ...     _ = curves.raw.normal_()
            >>> image = torch.rand(1, 3, 20, 30)
            >>> torch.allclose(curves.stage(image)(image[:, :, 5:9], 5), curves(image)[:, :, 5:9], atol=1e-6)
            True
        """
        check_image(image)
        alpha = torch.tanh(self.raw)
        size = tuple(image.shape[-2:])
        per_pixel = alpha.shape[-2:] not in ((1, 1), size)

        def apply(band: Tensor, top: int) -> Tensor:
            grid = alpha
            if per_pixel:
                grid = upsample_band(alpha, size, top, band.shape[-2])
            elif grid.shape[-2:] != (1, 1):
                grid = grid[:, :, top : top + band.shape[-2]]
            return _curves_inplace(band, grid)

        return apply

    def starts(self) -> list[dict[str, Tensor]]:
        """Coarse starting points for fitting: the same curve parameter everywhere, darker and brighter.

        Each is a raw-parameter override (see :func:`retouch.optimize.optimize_edit`), with curve
        parameters in ``STARTS``.

        Example:
            >>> [round(float(torch.tanh(s["raw"]).mean()), 2) for s in ExposureCurves().starts()]
            [-0.3, -0.15, 0.15, 0.3]
        """
        return [{"raw": torch.full_like(self.raw, math.atanh(a))} for a in self.STARTS]

    def regularization(self, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """Return the scalar penalty that keeps the curves small, smooth and tonal.

        The penalty is the total variation of the curve-parameter grid + mean |curve parameter| +
        :data:`CHANNEL_SPREAD_WEIGHT` × :func:`channel_spread` (so the curves change tone, and colour only where the
        loss gains more than that charge).
        """
        alpha = torch.tanh((dict(self.named_parameters()) if params is None else params)["raw"])
        return mean_total_variation(alpha, (2, 3)) + alpha.abs().mean() + CHANNEL_SPREAD_WEIGHT * channel_spread(alpha)
