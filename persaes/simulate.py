"""Simulated users with a known taste function (protocol §3), to test and demonstrate.

A user's taste is ``t(x) = w · features(x)`` with the features of
:func:`retouch.metrics.taste_features` — ``[mean luminance, colourfulness
(Hasler–Süsstrunk), RMS contrast, warmth (mean R − mean B), haze (mean dark channel)]`` —
plus Gaussian noise on each answer. Answers go through the same preference file the CLI
writes (:func:`persaes.preferences.append_answer`).

Example::

    >>> user = TASTES["bright-and-vivid"]
    >>> user.weights
    (1.0, 1.0, 0.0, 0.0, 0.0)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from persaes.images import load_image
from persaes.preferences import Answer, append_answer
from retouch.metrics import taste_features

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
