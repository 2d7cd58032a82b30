"""Shared helpers of the retouch tests: seeded random images and a hypothesis strategy."""

from __future__ import annotations

import torch
from hypothesis import strategies as st


def random_image(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform ``[0, 1)`` values of ``shape``, seeded."""
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@st.composite
def image_batches(draw: st.DrawFn, batch: int = 2, max_side: int = 40) -> torch.Tensor:
    """``batch``×3×H×W images, H and W in 1..``max_side``, values spanning a random sub-range of [0, 1]."""
    height, width = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    low, high = sorted((draw(st.floats(0.0, 1.0)), draw(st.floats(0.0, 1.0))))
    seed = draw(st.integers(0, 2**31 - 1))
    return low + (high - low) * random_image(batch, 3, height, width, seed=seed)
