"""Full-size application of a fitted edit in bands of rows, so memory stays bounded and the work stays in cache.

A full-size photo goes through the edit band by band (:func:`map_bands`): each op turns its fitted parameters
into a *stage*, a function ``stage(band, top)`` that edits the rows ``top .. top + band height`` of its input and
returns them. Per-pixel ops need nothing else; the coarse grids that the differentiable path upsamples bilinearly to
the whole image are upsampled here one band at a time (:func:`upsample_band`, :func:`upsample_at`), to the values
``F.interpolate(..., mode="bilinear", align_corners=False)`` gives on the whole image (up to float rounding).

All functions work without gradients in mind (the fitting path does not use them) and on any device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BAND_PIXELS", "Stage", "bilinear_taps", "map_bands", "upsample_at", "upsample_band"]

#: Pixels (batch x rows x width) per band of :func:`map_bands`: a band of float RGB is about 3 MiB, so an op's
#: temporaries stay in cache and a 50-megapixel photo needs little more memory than its input and output.
BAND_PIXELS = 1 << 18

#: ``stage(band, top) -> edited band``: an op's edit for rows ``top .. top + band.shape[-2]`` of its input.
Stage = Callable[[Tensor, int], Tensor]


def bilinear_taps(in_size: int, out_size: int, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Source taps of bilinear resizing (``align_corners=False``) from ``in_size`` to ``out_size`` pixels.

    Output pixel ``i`` of ``F.interpolate(..., mode="bilinear", align_corners=False)`` along one axis is
    ``(1 - w[i]) * x[low[i]] + w[i] * x[high[i]]``, with PyTorch's rule: source position
    :math:`(i + 0.5)\,\text{in}/\text{out} - 0.5`, clipped at 0, and the last pixel repeated past the end.

    Args:
        in_size: source length, ``>= 1``.
        out_size: output length, ``>= 1``.
        index: :math:`(N,)` integer output positions in ``[0, out_size)``.

    Returns:
        ``(low, high, w)``: :math:`(N,)` int64 source indices and :math:`(N,)` float64 weights of ``high`` in
        :math:`[0, 1]`.

    Example:
        >>> low, high, w = bilinear_taps(2, 4, torch.arange(4))
        >>> low.tolist(), high.tolist(), w.tolist()
        ([0, 0, 0, 1], [1, 1, 1, 1], [0.0, 0.25, 0.75, 0.25])
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} and {out_size}")
    position = ((index.to(torch.float64) + 0.5) * (in_size / out_size) - 0.5).clamp_min(0.0)
    low = position.floor().to(torch.int64).clamp_max(in_size - 1)
    weight = (position - low).clamp(0.0, 1.0)
    high = (low + 1).clamp_max(in_size - 1)
    return low, high, weight


def _lerp_taps(small: Tensor, dim: int, in_size: int, out_size: int, index: Tensor) -> Tensor:
    """Bilinear taps of ``small`` along ``dim`` at output positions ``index`` (one axis of a bilinear resize)."""
    low, high, weight = (t.to(small.device) for t in bilinear_taps(in_size, out_size, index))
    shape = [1] * small.ndim
    shape[dim] = -1
    weight = weight.to(small.dtype).reshape(shape)
    return torch.lerp(small.index_select(dim, low), small.index_select(dim, high), weight)


def upsample_band(small: Tensor, size: tuple[int, int], top: int, height: int) -> Tensor:
    r"""Rows ``top .. top + height`` of ``small`` resized bilinearly to ``size`` (``align_corners=False``).

    Equal, up to float rounding, to ``F.interpolate(small, size, mode="bilinear",
    align_corners=False)[..., top:top + height, :]``, without making the whole resized tensor.

    Args:
        small: :math:`(B, C, h, w)`.
        size: :math:`(H, W)` of the whole resized tensor.
        top: first row, in ``[0, H)``.
        height: rows, ``>= 1`` and ``top + height <= H``.

    Returns:
        :math:`(B, C, \text{height}, W)`.

    Example:
        >>> small = torch.rand(1, 2, 3, 5)
        >>> whole = F.interpolate(small, size=(40, 30), mode="bilinear", align_corners=False)
        >>> torch.allclose(upsample_band(small, (40, 30), 12, 7), whole[..., 12:19, :], atol=1e-6)
        True
    """
    if small.ndim != 4:
        raise ValueError(f"small must be (B, C, h, w), got {tuple(small.shape)}")
    if not (0 <= top and height >= 1 and top + height <= size[0]):
        raise ValueError(f"rows {top} .. {top + height} do not lie in [0, {size[0]}]")
    rows = torch.arange(top, top + height, device=small.device)
    band = _lerp_taps(small, -2, small.shape[-2], size[0], rows)
    if band.shape[-1] == size[1]:
        return band
    # rows keep their size, so interpolate takes them as they are (weight 0 on the next row) and resizes the columns
    return F.interpolate(band, size=(height, size[1]), mode="bilinear", align_corners=False)


def upsample_at(small: Tensor, size: tuple[int, int], rows: Tensor, cols: Tensor) -> Tensor:
    r"""The pixels at ``rows`` x ``cols`` of ``small`` resized bilinearly to ``size`` (``align_corners=False``).

    Equal, up to float rounding, to ``F.interpolate(small, size, mode="bilinear", align_corners=False)`` indexed
    with ``rows`` and ``cols``, without making the whole resized tensor.

    Args:
        small: :math:`(B, C, h, w)`.
        size: :math:`(H, W)` of the whole resized tensor.
        rows: :math:`(M,)` integer rows in ``[0, H)``.
        cols: :math:`(N,)` integer columns in ``[0, W)``.

    Returns:
        :math:`(B, C, M, N)`.

    Example:
        >>> small = torch.rand(1, 1, 4, 4)
        >>> whole = F.interpolate(small, size=(9, 11), mode="bilinear", align_corners=False)
        >>> rows, cols = torch.tensor([0, 4, 8]), torch.tensor([1, 10])
        >>> torch.allclose(upsample_at(small, (9, 11), rows, cols), whole[..., rows, :][..., cols], atol=1e-6)
        True
    """
    if small.ndim != 4:
        raise ValueError(f"small must be (B, C, h, w), got {tuple(small.shape)}")
    picked = _lerp_taps(small, -2, small.shape[-2], size[0], rows)
    return _lerp_taps(picked, -1, small.shape[-1], size[1], cols)


def map_bands(image: Tensor, stages: Sequence[Stage], band_pixels: int = BAND_PIXELS) -> Tensor:
    r"""Run ``stages`` one after another on bands of rows of ``image`` and assemble the result.

    Args:
        image: :math:`(B, C, H, W)`; it is read, never written.
        stages: functions ``stage(band, top)`` returning the edited band (same shape); each gets the previous
            stage's output for the same rows. A stage may return its input or edit a tensor it made in place,
            but must not write to its input.
        band_pixels: pixels (batch x rows x width) per band, ``>= 1``; a band has at least one row.

    Returns:
        :math:`(B, C, H, W)`, a new tensor.

    Example:
        >>> image = torch.rand(1, 3, 10, 4)
        >>> out = map_bands(image, [lambda band, top: band * 2, lambda band, top: band + top], band_pixels=12)
        >>> torch.equal(out[:, :, 3:6], image[:, :, 3:6] * 2 + 3)
        True
    """
    if image.ndim != 4:
        raise ValueError(f"image must be (B, C, H, W), got {tuple(image.shape)}")
    if band_pixels < 1:
        raise ValueError(f"band_pixels must be positive, got {band_pixels}")
    batch, _, height, width = image.shape
    step = max(1, band_pixels // max(1, batch * width))
    out = torch.empty_like(image, memory_format=torch.contiguous_format)
    for top in range(0, height, step):
        band = image[:, :, top : top + step]
        for stage in stages:
            band = stage(band, top)
        out[:, :, top : top + step] = band
    return out
