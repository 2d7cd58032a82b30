"""Simulated users with a known taste, to test and demonstrate.

Two kinds:

* :class:`SimulatedUser` (protocol §3): a taste function ``t(x) = w · features(x)`` over
  versions of one photo.
* :class:`ConsistentTaste` (protocol §5): a consistent rule on *different* photos: colour
  temperature, saturation, brightness or contrast one way (the photo's measured feature
  decides), or one content category over the others. :func:`edit_along` makes the edited
  versions such a user's album and held-out pairs are made of.

A user's taste is ``t(x) = w · features(x)`` with the features of
:func:`retouch.metrics.taste_features` — ``[mean luminance, colourfulness
(Hasler–Süsstrunk), RMS contrast, warmth (mean R − mean B), haze (mean dark channel)]`` —
plus Gaussian noise on each answer. Answers go through the same preference file the CLI
writes (:func:`persaes.io.preferences.append_answer`).

Example::

    >>> user = TASTES["bright-and-vivid"]
    >>> user.weights
    (1.0, 1.0, 0.0, 0.0, 0.0)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import kornia.enhance
import torch
from torch import Tensor

from persaes.io.images import load_image
from persaes.io.preferences import Answer, append_answer
from retouch.degrade import expose
from retouch.metrics import TASTE_FEATURES, taste_features

ANALYSIS_SIDE = 256


@dataclass(frozen=True)
class SimulatedUser:
    """A taste function: ``weights`` over the five taste features, answer noise ``noise`` (std)."""

    name: str
    weights: tuple[float, float, float, float, float]
    noise: float = 0.02

    def taste(self, images: Tensor) -> Tensor:
        """Noise-free taste ``t(x)`` of ``[0, 1]`` RGB images B×3×H×W → B."""
        return taste_features(images) @ torch.tensor(self.weights, dtype=images.dtype, device=images.device)

    def answer(self, album: str | os.PathLike[str], pairs: Sequence[tuple[str, str]], out: str | os.PathLike[str],
               seed: int = 0) -> list[Answer]:
        """Answer ``pairs`` of album-relative paths, appending each answer to ``out``."""
        album = Path(album)
        generator = torch.Generator().manual_seed(seed)
        cache: dict[str, float] = {}

        def value(key: str) -> float:
            if key not in cache:
                cache[key] = float(self.taste(load_image(album / key, max_side=ANALYSIS_SIDE)[None]))
            return cache[key]

        answers = []
        for a, b in pairs:
            noisy = value(a) - value(b) + self.noise * float(torch.randn((), generator=generator))
            answer = Answer(winner=a, loser=b) if noisy > 0 else Answer(winner=b, loser=a)
            append_answer(out, answer)
            answers.append(answer)
        return answers


TASTES: dict[str, SimulatedUser] = {
    "bright-and-vivid": SimulatedUser("bright-and-vivid", (1.0, 1.0, 0.0, 0.0, 0.0)),
    "dark-and-moody": SimulatedUser("dark-and-moody", (-1.0, -0.5, 0.5, 0.0, 0.0)),
}


#: The edit axes of :func:`edit_along` and the taste feature (:data:`retouch.metrics.TASTE_FEATURES`) each moves.
AXES: dict[str, str] = {"temperature": "warmth", "saturation": "colourfulness", "brightness": "luminance",
                        "contrast": "contrast"}


def edit_along(image: Tensor, axis: str, amount: float) -> Tensor:
    """Edit ``[0, 1]`` RGB images B×3×H×W along one of :data:`AXES` by ``amount`` in ``[-1, 1]``.

    ``temperature``: red gain ``e^{0.15·amount}``, blue ``e^{-0.15·amount}`` (warm > 0, cool < 0);
    ``saturation``: ×(1 + 0.45·amount) (×0.55 to ×1.45); ``brightness``: ``0.8·amount`` EV in
    linear light; ``contrast``: deviations from each image's mean scaled by ``e^{0.35·amount}``.

    Example:
        >>> image = torch.full((1, 3, 4, 4), 0.5)
        >>> bool(edit_along(image, "brightness", 1.0).mean() > 0.5)
        True
    """
    if axis not in AXES:
        raise ValueError(f"unknown edit axis {axis!r}; known: {', '.join(AXES)}")
    if not -1.0 <= amount <= 1.0:
        raise ValueError(f"amount must be in [-1, 1], got {amount}")
    if axis == "temperature":
        gains = torch.tensor([0.15 * amount, 0.0, -0.15 * amount], dtype=image.dtype, device=image.device).exp()
        return (image * gains[None, :, None, None]).clamp(0.0, 1.0)
    if axis == "saturation":
        return kornia.enhance.adjust_saturation(image, 1.0 + 0.45 * amount).clamp(0.0, 1.0)
    if axis == "brightness":
        return expose(image, 0.8 * amount)
    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    return (mean + (image - mean) * math.exp(0.35 * amount)).clamp(0.0, 1.0)


@dataclass(frozen=True)
class ConsistentTaste:
    """A consistent rule on different photos (protocol §5).

    A tone or colour taste (``axis`` set) prefers the photo whose measured feature
    (:data:`AXES`) is higher (``sign`` +1) or lower (−1); a content taste (``category``
    set) prefers photos of that category, and between two photos on the same side of that
    line the one of higher ``consensus`` rating.
    """

    name: str
    axis: str | None = None
    sign: int = 1
    category: str | None = None

    def value(self, image: Tensor, category: str = "", consensus: float = 0.0) -> float:
        """Return how much the user likes one photo (1×3×H×W in ``[0, 1]``).

        The photo is of ``category`` with consensus rating ``consensus`` (below 10).
        """
        if self.axis is None:
            return float(category == self.category) * 10.0 + consensus
        feature = TASTE_FEATURES.index(AXES[self.axis])
        return self.sign * float(taste_features(image)[0, feature])


CONSISTENT_TASTES: dict[str, ConsistentTaste] = {taste.name: taste for taste in (
    ConsistentTaste("warm", "temperature", 1), ConsistentTaste("cool", "temperature", -1),
    ConsistentTaste("vivid", "saturation", 1), ConsistentTaste("muted", "saturation", -1),
    ConsistentTaste("bright", "brightness", 1), ConsistentTaste("dark", "brightness", -1),
    ConsistentTaste("high-contrast", "contrast", 1), ConsistentTaste("low-contrast", "contrast", -1),
    ConsistentTaste("animals", category="Animal"), ConsistentTaste("scenery", category="Scenery"),
)}
