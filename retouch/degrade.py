"""Seeded photo degradations for the evaluation protocol, and mild random edits for preference questions.

Every function takes a ``torch.Generator`` or an int seed, samples its parameters per image on the CPU in a fixed
order (so a seed always gives the same result) and returns the image together with the sampled parameters.
"""

from __future__ import annotations

import math

import torch
from kornia.color import linear_rgb_to_rgb, rgb_to_linear_rgb
from kornia.enhance import adjust_hue
from kornia.filters import gaussian_blur2d
from torch import Tensor

from .baselines import dark_channel_dehaze
from .color import check_image, per_image, saturation, white_balance
from .dehaze import Dehaze

__all__ = [
    "DEGRADATIONS",
    "EDITS",
    "LEVELS",
    "OVER_PROCESSING",
    "add_haze",
    "degrade",
    "expose",
    "over_process",
    "random_edit",
    "s_curve",
    "unsharp_mask",
]

#: Kinds accepted by :func:`degrade`.
DEGRADATIONS: tuple[str, ...] = ("under", "over", "color", "haze")
#: Kinds accepted by :func:`over_process`: too much of an edit, made to a photo that did not need it.
OVER_PROCESSING: tuple[str, ...] = (
    "over-dehaze", "over-saturate", "over-contrast", "over-sharpen", "brighten", "darken", "recolour", "desaturate",
)
#: Settings of :func:`over_process`.
LEVELS: tuple[str, ...] = ("mild", "strong")
# Parameter ranges of each over-processing kind, (mild, strong): over-dehaze (omega, t0) pairs, saturation
# factors, S-curve gains, unsharp-mask amounts, stops, and recolour (cast gain offsets, hue shifts in degrees).
_OVER_RANGES: dict[str, tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]] = {
    "over-dehaze": (((0.7, 0.85), (0.15, 0.25)), ((0.95, 1.0), (0.05, 0.1))),
    "over-saturate": (((1.3, 1.6),), ((1.6, 2.0),)),
    "over-contrast": (((4.0, 6.0),), ((8.0, 12.0),)),
    "over-sharpen": (((1.0, 2.0),), ((3.0, 5.0),)),
    "brighten": (((0.5, 0.75),), ((0.75, 1.0),)),
    "darken": (((0.5, 0.75),), ((0.75, 1.0),)),
    "recolour": (((0.06, 0.12), (8.0, 15.0)), ((0.15, 0.3), (20.0, 40.0))),
    "desaturate": (((0.75, 0.9),), ((0.5, 0.75),)),
}
_SHARPEN_SIGMA = 1.5
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


def s_curve(image: Tensor, gain: float | Tensor) -> Tensor:
    r"""Contrast S-curve per channel: a logistic of slope ``gain`` around mid-grey, rescaled so 0 and 1 stay fixed.

    Args:
        image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        gain: positive float or :math:`(B,)`; larger is stronger (the slope at mid-grey is about
            :math:`g / (4 (2\sigma(g/2) - 1))`, 1.5 at 5, 2.5 at 10).

    Returns:
        :math:`(B, 3, H, W)` in :math:`[0, 1]`.

    Example:
        >>> s_curve(torch.tensor([0.0, 0.25, 0.5, 1.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4), 8.0)[0, 0, 0]
        tensor([0.0000, 0.1050, 0.5000, 1.0000])
    """
    check_image(image)
    g = per_image(gain, image, "gain")
    if (g <= 0).any():
        raise ValueError("gain must be positive")
    low, high = torch.sigmoid(-g / 2), torch.sigmoid(g / 2)
    return ((torch.sigmoid(g * (image - 0.5)) - low) / (high - low)).clamp(0.0, 1.0)


def unsharp_mask(image: Tensor, amount: float | Tensor, sigma: float = _SHARPEN_SIGMA) -> Tensor:
    r"""Unsharp mask :math:`x + a (x - G_\sigma * x)`, clipped to :math:`[0, 1]`.

    Args:
        image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        amount: non-negative float or :math:`(B,)`; 0 is the identity.
        sigma: standard deviation of the Gaussian blur, in pixels.

    Returns:
        :math:`(B, 3, H, W)` in :math:`[0, 1]`.

    Example:
        >>> flat = torch.full((1, 3, 8, 8), 0.5)
        >>> bool(unsharp_mask(flat, 3.0).allclose(flat))
        True
    """
    check_image(image)
    a = per_image(amount, image, "amount")
    if (a < 0).any():
        raise ValueError("amount must be non-negative")
    size = 2 * math.ceil(3 * sigma) + 1
    blurred = gaussian_blur2d(image, (size, size), (sigma, sigma), border_type="replicate")
    return (image + a * (image - blurred)).clamp(0.0, 1.0)


def over_process(image: Tensor, kind: str, level: str, generator: torch.Generator | int) -> tuple[Tensor, Description]:
    r"""Over-process a photo that needs no edit, with parameters sampled per image (protocol §2).

    ``level`` ``"mild"`` / ``"strong"`` picks the range (see ``_OVER_RANGES``):

    * ``"over-dehaze"``: :func:`~retouch.baselines.dark_channel_dehaze` with :math:`\omega \in [0.7, 0.85]`,
      :math:`t_0 \in [0.15, 0.25]` / :math:`\omega \in [0.95, 1]`, :math:`t_0 \in [0.05, 0.1]`.
    * ``"over-saturate"``: :func:`~retouch.color.saturation` by :math:`[1.3, 1.6]` / :math:`[1.6, 2]`.
    * ``"desaturate"``: :func:`~retouch.color.saturation` by :math:`[0.75, 0.9]` / :math:`[0.5, 0.75]`.
    * ``"over-contrast"``: :func:`s_curve` with gain :math:`[4, 6]` / :math:`[8, 12]`.
    * ``"over-sharpen"``: :func:`unsharp_mask` (σ = 1.5 px) by :math:`[1, 2]` / :math:`[3, 5]`.
    * ``"brighten"`` / ``"darken"``: :func:`expose` by :math:`\pm[0.5, 0.75]` / :math:`\pm[0.75, 1]` stops.
    * ``"recolour"``: with equal probability a white-balance cast (one gain :math:`1 + u`, another
      :math:`1 - u`, :math:`u \in [0.06, 0.12]` / :math:`[0.15, 0.3]`) or a hue rotation by
      :math:`\pm[8, 15]` / :math:`\pm[20, 40]` degrees.

    Args:
        image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        kind: one of :data:`OVER_PROCESSING`.
        level: one of :data:`LEVELS`.
        generator: ``torch.Generator`` or int seed.

    Returns:
        The over-processed :math:`(B, 3, H, W)` image in :math:`[0, 1]` and ``{"params": (B, P)}``, the sampled
        parameters in the order listed above (recolour: gain offset, hue degrees, mode 0 = cast / 1 = hue).

    Example:
        >>> image = torch.rand(2, 3, 16, 16)
        >>> vivid, params = over_process(image, "over-saturate", "strong", 0)
        >>> tuple(params["params"].shape), bool(params["params"].min() >= 1.6)
        ((2, 1), True)
    """
    check_image(image)
    if kind not in OVER_PROCESSING:
        raise ValueError(f"kind must be one of {OVER_PROCESSING}, got {kind!r}")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    generator = _generator(generator)
    count = image.shape[0]
    ranges = _OVER_RANGES[kind][LEVELS.index(level)]
    params = torch.stack([_uniform(generator, low, high, count) for low, high in ranges], dim=1)
    first = params[:, 0].to(image)
    if kind == "over-dehaze":
        out = torch.cat([dark_channel_dehaze(image[i : i + 1], omega=float(params[i, 0]), t_min=float(params[i, 1]))
                         for i in range(count)])
    elif kind in ("over-saturate", "desaturate"):
        out = saturation(image, first)
    elif kind == "over-contrast":
        out = s_curve(image, first)
    elif kind == "over-sharpen":
        out = unsharp_mask(image, first)
    elif kind in ("brighten", "darken"):
        out = expose(image, first if kind == "brighten" else -first)
    else:
        mode = torch.randint(2, (count,), generator=generator)
        gains = 1.0 + _cast_gains(generator, count, up=(1.0, 1.0), down=(-1.0, -1.0)) * params[:, :1]
        signs = torch.randint(2, (count,), generator=generator) * 2.0 - 1.0
        cast = white_balance(image, gains.to(image))
        hue = adjust_hue(image, (signs * params[:, 1] * math.pi / 180).to(image)).clamp(0.0, 1.0)
        out = torch.where((mode == 0).to(image.device).view(-1, 1, 1, 1), cast, hue)
        params = torch.cat([params, mode[:, None].float()], dim=1)
    return out, {"params": params}


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
