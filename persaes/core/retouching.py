"""Retouching one photo against an aesthetic model: a fitted edit or a trained network's one pass.

A profile's fitted edit is made on top of the generic model's (``base``), so personal
retouching is the generic retouch plus the user's taste; a greyscale photo stays greyscale.

Example:
    >>> import torch
    >>> image = torch.full((1, 3, 24, 32), 0.25)
    >>> brighter = lambda images: 5.0 * (1.0 - images.mean())
    >>> settings = EditSettings(steps=5, work_size=32, fidelity=0.5)
    >>> retouched = retouch_image(image, brighter, ("exposure",), settings)
    >>> retouched.shape, bool(retouched.mean() > image.mean() + 0.02)
    (torch.Size([1, 3, 24, 32]), True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from kornia.color import rgb_to_grayscale
from torch import Tensor

from persaes.core.aesthetic_loss import AestheticLoss
from retouch import RetouchNet
from retouch.color import check_image
from retouch.optimize import FIT_BATCH, EditSettings, LossFn, optimize_edits, predicted_edit

__all__ = ["TASTE_FIDELITY_SHARE", "is_greyscale", "retouch_image", "retouch_images", "retouch_on_base",
           "taste_settings"]

TASTE_FIDELITY_SHARE = 0.15
"""Share of the fidelity weight that holds a profile's edit to the base retouch it is fitted on.

That edit refines an already retouched photo: at the full weight the L1 fidelity term holds it
at exactly zero on some photos, and with the exposure curves' channel spread charged, a weight of
0.6 (0.15 of the default 4) lets a taste move its photos without bolder casts (benchmarks/README.md, §3)."""


def taste_settings(settings: EditSettings) -> EditSettings:
    """The settings a profile's edit is fitted with on top of a base retouch.

    The profile's loss is fitted as its log-odds (:func:`retouch.optimize.odds_loss` over the
    aesthetic loss's range): a consistent taste puts many photos near a score of 1 or 10, where
    ``10 − f(x)`` is flat, and a photo the profile already scores 9.93 was left as the base
    retouch made it however strongly the taste leans (benchmarks/README.md, §5).

    Args:
        settings: the settings of the base retouch.

    Returns:
        ``settings`` with :data:`TASTE_FIDELITY_SHARE` of the fidelity weight and the loss fitted as its log-odds.
    """
    return replace(settings, fidelity=settings.fidelity * TASTE_FIDELITY_SHARE,
                   loss_odds=AestheticLoss.score_range[1])


def is_greyscale(image: Tensor) -> bool:
    """Whether every pixel of an image has equal channels, up to the 2/255 that 8-bit JPEG rounding leaves.

    Args:
        image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.

    Returns:
        True when no pixel's channels differ by more than 2/255.
    """
    check_image(image)
    return bool((image.amax(dim=1) - image.amin(dim=1)).max() <= 2 / 255)


def retouch_images(images: Sequence[Tensor], loss: LossFn, ops: Sequence[str], settings: EditSettings,
                   net: RetouchNet | None = None, seed: int = 0, base: LossFn | None = None,
                   batch_size: int = FIT_BATCH, originals: Sequence[Tensor] | None = None) -> list[Tensor]:
    """Retouch full-size photos: fitted edits (``net`` None) or the network's one pass.

    Fitted edits of photos of one working size are fitted together, ``batch_size`` at a time
    (:func:`retouch.optimize.optimize_edits`): each photo gets the edit it would get alone, and the
    photos share the scorer's passes.

    With ``base`` (the generic model's loss), the photos are retouched against ``base`` first,
    then those results against ``loss`` with :func:`taste_settings` (fidelity measured to the
    base retouch, clipping and casts to the untouched photo): a profile's taste is a change on
    top of the generic retouch, so it keeps the generic model's corrections (haze, casts,
    exposure) unless the profile argues against them. Given the base retouches already,
    ``retouch_images(base_retouches, loss, ops, taste_settings(settings), originals=images)`` is
    the same result.

    A greyscale photo (:func:`is_greyscale`) stays greyscale: its result is turned back into
    grey (the luma of the retouched image), so tonal edits apply and no colour cast appears.

    Args:
        images: photos, each :math:`(1, 3, H, W)` in :math:`[0, 1]`.
        loss: images → one loss per photo (e.g. an :class:`~persaes.core.aesthetic_loss.AestheticLoss`
            with ``reduction="none"``; a scalar loss retouches one photo at a time).
        ops: the ops to fit (see :data:`retouch.OPS`).
        settings: how the edits are fitted.
        net: a trained retouching network; it replaces fitting, and its edits are held to ``settings``' limits
            (:func:`retouch.optimize.predicted_edit`).
        seed: fixes the fits.
        base: the loss of the retouch the edits are made on top of; not with ``net``.
        batch_size: most photos fitted together.
        originals: when ``images`` are retouches already, the untouched photos (same sizes): the edits
            clip and cast nothing that these did not (:func:`retouch.optimize.optimize_edits`). Default:
            ``images``.

    Returns:
        The retouched photos, each :math:`(1, 3, H, W)` in :math:`[0, 1]`, in order.

    Raises:
        ValueError: ``net`` and ``base`` are both given, an image is not a one-photo batch, or
            ``originals`` do not match ``images``.
    """
    for image in images:
        check_image(image)
        if image.shape[0] != 1:
            raise ValueError(f"each photo is one image (1×3×H×W), got a batch of {image.shape[0]}")
    if net is not None:
        if base is not None:
            raise ValueError("a retouching model applies in one pass; base is for fitted edits only")
        results = [predicted_edit(net, image, settings, original).retouch_full(image)
                   for image, original in zip(images, originals or images)]
    elif base is not None:
        return retouch_on_base(images, loss, base, ops, settings, seed, batch_size, originals)[0]
    else:
        fitted = optimize_edits(images, loss, ops, settings, seed, batch_size, originals)
        results = [retoucher.retouch_full(image) for retoucher, image in zip(fitted, images)]
    return [rgb_to_grayscale(result).expand_as(result).contiguous() if is_greyscale(image) else result
            for result, image in zip(results, originals or images)]


def retouch_on_base(images: Sequence[Tensor], loss: LossFn, base: LossFn, ops: Sequence[str], settings: EditSettings,
                    seed: int = 0, batch_size: int = FIT_BATCH,
                    originals: Sequence[Tensor] | None = None) -> tuple[list[Tensor], list[Tensor]]:
    """Retouch photos against ``base``, then those results against ``loss``: :func:`retouch_images` with ``base``.

    The second stage is fitted with :func:`taste_settings` and held to the untouched photos
    (``originals``, default ``images``).

    Args:
        images: photos, each :math:`(1, 3, H, W)` in :math:`[0, 1]`.
        loss: the loss of the edits made on top (e.g. a profile's).
        base: the loss of the first retouch (the generic model's).
        ops: the ops to fit (see :data:`retouch.OPS`).
        settings: how the base edits are fitted.
        seed: fixes the fits.
        batch_size: most photos fitted together.
        originals: as in :func:`retouch_images`.

    Returns:
        The final retouches and the base retouches they were made on, each list in order.
    """
    starts = retouch_images(images, base, ops, settings, seed=seed, batch_size=batch_size, originals=originals)
    finals = retouch_images(starts, loss, ops, taste_settings(settings), seed=seed, batch_size=batch_size,
                            originals=originals or images)
    return finals, starts


def retouch_image(image: Tensor, loss: LossFn, ops: Sequence[str], settings: EditSettings,
                  net: RetouchNet | None = None, seed: int = 0, base: LossFn | None = None,
                  original: Tensor | None = None) -> Tensor:
    """Retouch one full-size photo (:func:`retouch_images` of one photo).

    Args:
        image: :math:`(1, 3, H, W)` in :math:`[0, 1]`.
        loss: images → scalar loss the edit is fitted against (e.g. an
            :class:`~persaes.core.aesthetic_loss.AestheticLoss`).
        ops: the ops to fit (see :data:`retouch.OPS`).
        settings: how the edit is fitted.
        net: a trained retouching network; it replaces fitting.
        seed: fixes the fit.
        base: the loss of the retouch the edit is made on top of; not with ``net``.
        original: when ``image`` is a retouch already, the untouched photo (same size), which the guards
            hold the edit to.

    Returns:
        The retouched photo, :math:`(1, 3, H, W)` in :math:`[0, 1]`.

    Raises:
        ValueError: ``net`` and ``base`` are both given, ``image`` is not a one-photo batch, or
            ``original`` does not match it.
    """
    return retouch_images([image], loss, ops, settings, net, seed, base,
                          originals=None if original is None else [original])[0]
