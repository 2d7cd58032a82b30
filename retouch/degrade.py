"""Seeded photo degradations for the evaluation protocol, and mild random edits for preference questions.

Every function takes a ``torch.Generator`` or an int seed, samples its parameters per image on the CPU in a fixed
order (so a seed always gives the same result) and returns the image together with the sampled parameters.
"""

from __future__ import annotations

import math

import torch
from kornia.color import linear_rgb_to_rgb, rgb_to_linear_rgb
from torch import Tensor

from .color import check_image, per_image, saturation, white_balance
from .dehaze import Dehaze

__all__ = ["DEGRADATIONS", "EDITS", "add_haze", "degrade", "expose", "random_edit"]

#: Kinds accepted by :func:`degrade`.
DEGRADATIONS: tuple[str, ...] = ("under", "over", "color", "haze")
#: Kinds of edit made by :func:`random_edit`.
EDITS: tuple[str, ...] = ("exposure", "color", "haze")
_COLOR_MODES: tuple[str, ...] = ("cast", "desaturate", "both")

Description = dict[str, "Tensor | list[str]"]


def _generator(seed: torch.Generator | int) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, int) and not isinstance(seed, bool):
        return torch.Generator().manual_seed(seed)
    raise ValueError(f"generator must be a torch.Generator or an int seed, got {type(seed).__name__}")


def _uniform(generator: torch.Generator, low: float, high: float, *shape: int) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator)


def _cast_gains(generator: torch.Generator, count: int, up: tuple[float, float], down: tuple[float, float]) -> Tensor:
    """``(count, 3)`` gains: a random channel in ``up`` (> 1), another in ``down`` (< 1), the third in between."""
    gains = torch.empty(count, 3)
    for row in gains:
        order = torch.randperm(3, generator=generator)
        row[order[0]] = _uniform(generator, *up, 1)
        row[order[1]] = _uniform(generator, *down, 1)
        row[order[2]] = _uniform(generator, down[1], up[0], 1)
    return gains


def expose(image: Tensor, ev: float | Tensor) -> Tensor:
    r"""Change exposure by ``ev`` stops in linear light: multiply linear RGB by :math:`2^{ev}`, clip, re-encode.

    Args:
        image: :math:`(B, 3, H, W)` sRGB in :math:`[0, 1]`.
        ev: float or :math:`(B,)`; negative darkens, positive brightens.

    Returns:
        :math:`(B, 3, H, W)` sRGB in :math:`[0, 1]`.

    Example:
        >>> image = torch.rand(1, 3, 4, 4)
        >>> bool((expose(image, -1.0) <= image).all())
        True
    """
    check_image(image)
    linear = rgb_to_linear_rgb(image) * torch.exp2(per_image(ev, image, "ev"))
    # the outer clamp only removes the rounding error of the sRGB encoding at 1
    return linear_rgb_to_rgb(linear.clamp(0.0, 1.0)).clamp(0.0, 1.0)


def add_haze(image: Tensor, beta: float | Tensor, airlight: float | Tensor) -> Tensor:
    r"""Koschmieder haze :math:`I = J t + A (1 - t)` with :math:`t = e^{-\beta d}` and a grey airlight :math:`A`.

    The depth proxy :math:`d` is the row position, 0 at the bottom row and 1 at the top row (a linear ramp, which is
    already smooth, so no blur is needed); a single-row image counts as the top row.

    Args:
        image: :math:`(B, 3, H, W)` haze-free scene :math:`J` in :math:`[0, 1]`.
        beta: scattering coefficient, float or :math:`(B,)`, non-negative.
        airlight: grey airlight, float or :math:`(B,)`, in :math:`[0, 1]`.

    Returns:
        :math:`(B, 3, H, W)` in :math:`[0, 1]`.

    Example:
        >>> add_haze(torch.zeros(1, 3, 3, 1), 1.0, 1.0)[0, 0, :, 0]
        tensor([0.6321, 0.3935, 0.0000])
    """
    check_image(image)
    depth = torch.linspace(1.0, 0.0, image.shape[-2], device=image.device, dtype=image.dtype)
    t = torch.exp(-per_image(beta, image, "beta") * depth.view(1, 1, -1, 1))
    light = per_image(airlight, image, "airlight")
    return image * t + light * (1.0 - t)


def degrade(image: Tensor, kind: str, generator: torch.Generator | int) -> tuple[Tensor, Description]:
    r"""Apply a protocol degradation with parameters sampled per image.

    * ``"under"`` / ``"over"``: :func:`expose` by :math:`\mp EV` stops, :math:`EV \sim U[0.7, 1.7]`.
    * ``"color"``: with equal probability a white-balance cast (one channel's gain in :math:`[1.1, 1.3]`, another's
      in :math:`[0.7, 0.9]`, the third's in :math:`[0.9, 1.1]`, applied in sRGB), a desaturation
      (:func:`~retouch.color.saturation` by :math:`U[0.3, 0.7]`), or both.
    * ``"haze"``: :func:`add_haze` with :math:`A \sim U[0.8, 1]`, :math:`\beta \sim U[0.6, 1.6]`.

    Args:
        image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        kind: one of :data:`DEGRADATIONS`.
        generator: ``torch.Generator`` or int seed.

    Returns:
        The degraded :math:`(B, 3, H, W)` image in :math:`[0, 1]` and the sampled parameters (CPU tensors with a
        leading batch dimension; ``"mode"`` is a list of str): ``{"ev"}`` (signed stops) for under/over,
        ``{"mode", "gains", "saturation"}`` for color (neutral 1 where unused), ``{"airlight", "beta"}`` for haze.

    Example:
        >>> image = torch.rand(2, 3, 8, 8)
        >>> dark, params = degrade(image, "under", 0)
        >>> bool((dark <= image).all()), tuple(params["ev"].shape)
        (True, (2,))
    """
    check_image(image)
    if kind not in DEGRADATIONS:
        raise ValueError(f"kind must be one of {DEGRADATIONS}, got {kind!r}")
    generator = _generator(generator)
    count = image.shape[0]
    if kind in ("under", "over"):
        ev = _uniform(generator, 0.7, 1.7, count) * (-1.0 if kind == "under" else 1.0)
        return expose(image, ev.to(image)), {"ev": ev}
    if kind == "color":
        modes = torch.randint(len(_COLOR_MODES), (count,), generator=generator)
        gains = _cast_gains(generator, count, up=(1.1, 1.3), down=(0.7, 0.9))
        factor = _uniform(generator, 0.3, 0.7, count)
        gains[modes == _COLOR_MODES.index("desaturate")] = 1.0
        factor[modes == _COLOR_MODES.index("cast")] = 1.0
        out = saturation(white_balance(image, gains.to(image)), factor.to(image))
        return out, {"mode": [_COLOR_MODES[m] for m in modes.tolist()], "gains": gains, "saturation": factor}
    airlight = _uniform(generator, 0.8, 1.0, count)
    beta = _uniform(generator, 0.6, 1.6, count)
    return add_haze(image, beta.to(image), airlight.to(image)), {"airlight": airlight, "beta": beta}


def random_edit(image: Tensor, generator: torch.Generator | int) -> tuple[Tensor, Description]:
    r"""Apply one random mild edit per image, to make variants of a photo for preference questions.

    Each image gets one kind from :data:`EDITS`, chosen uniformly:

    * ``"exposure"``: :func:`expose` by :math:`\pm U[0.2, 0.6]` stops.
    * ``"color"``: a mild cast (one gain in :math:`[1.03, 1.1]`, one in :math:`[0.9, 0.97]`) and saturation
      :math:`\times U[0.7, 1.3]`.
    * ``"haze"``: :class:`~retouch.dehaze.Dehaze` with strength :math:`\pm U[0.2, 0.6]` (positive removes haze,
      negative adds it).

    Args:
        image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        generator: ``torch.Generator`` or int seed.

    Returns:
        The edited image and ``{"kind": list[str], "ev": (B,), "gains": (B, 3), "saturation": (B,),
        "dehaze": (B,)}``, each numeric entry neutral (0 or 1) where that edit was not made.

    Example:
        >>> edited, description = random_edit(torch.rand(3, 3, 16, 16), 1)
        >>> len(description["kind"])
        3
    """
    check_image(image)
    generator = _generator(generator)
    count = image.shape[0]
    kinds = [EDITS[k] for k in torch.randint(len(EDITS), (count,), generator=generator).tolist()]
    signs = torch.randint(2, (2, count), generator=generator) * 2.0 - 1.0
    ev = _uniform(generator, 0.2, 0.6, count) * signs[0]
    gains = _cast_gains(generator, count, up=(1.03, 1.1), down=(0.9, 0.97))
    factor = _uniform(generator, 0.7, 1.3, count)
    strength = _uniform(generator, 0.2, 0.6, count) * signs[1]
    dehazer = Dehaze().to(image)
    edited = []
    for i, kind in enumerate(kinds):
        single = image[i : i + 1]
        if kind == "exposure":
            single = expose(single, ev[i].item())
            gains[i], factor[i], strength[i] = 1.0, 1.0, 0.0
        elif kind == "color":
            single = saturation(white_balance(single, gains[i : i + 1].to(image)), factor[i].item())
            ev[i], strength[i] = 0.0, 0.0
        else:
            params = {name: value.detach() for name, value in dehazer.named_parameters()}
            params["raw_strength"] = torch.full_like(params["raw_strength"], math.atanh(strength[i].item()))
            single = dehazer.render(single, params)
            ev[i], gains[i], factor[i] = 0.0, 1.0, 1.0
        edited.append(single)
    description: Description = {"kind": kinds, "ev": ev, "gains": gains, "saturation": factor, "dehaze": strength}
    return torch.cat(edited), description
