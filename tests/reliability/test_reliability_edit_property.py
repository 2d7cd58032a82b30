"""Property test of the fitted edit, the path ``persaes retouch`` takes: fit on a small copy, apply full size.

Each op (tests/retouch/test_*.py::test_property_range) and the chained Retoucher and RetouchNet
(tests/retouch/test_pipeline.py) are already checked over random sizes up to 40 pixels, value ranges
and parameters; this adds the fit itself, driven hard, on photos from 1 pixel to long strips wider
than the fitting size, flat black, flat white and narrow ranges included.
"""

from __future__ import annotations

import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from retouch.optimize import EditSettings, optimize_edit

OPS = st.sets(st.sampled_from(["exposure", "color", "dehaze"]), min_size=1).map(sorted)


def harsh_loss(seen: list[float]):
    """Pushes the edit to its limits (brighter, more contrast, more colour), recording every value."""

    def loss(images: torch.Tensor) -> torch.Tensor:
        grey = images.mean(dim=1, keepdim=True)
        value = -(images.mean() + images.std() + (images - grey).abs().mean()) * 10
        seen.append(float(value.detach()))
        return value

    return loss


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(1, 300),
    width=st.integers(1, 300),
    low=st.floats(0.0, 1.0),
    high=st.floats(0.0, 1.0),
    ops=OPS,
    lr=st.sampled_from([0.05, 0.5, 5.0]),
    seed=st.integers(0, 2**16),
)
@example(height=1, width=1, low=0.0, high=0.0, ops=["color", "dehaze", "exposure"], lr=5.0, seed=0)
@example(height=40, width=60, low=0.0, high=0.0, ops=["color", "dehaze", "exposure"], lr=5.0, seed=0)
@example(height=40, width=60, low=1.0, high=1.0, ops=["color", "dehaze", "exposure"], lr=5.0, seed=0)
@example(height=1, width=300, low=0.2, high=0.21, ops=["color", "dehaze", "exposure"], lr=0.5, seed=1)
@example(height=300, width=2, low=0.0, high=1.0, ops=["dehaze"], lr=5.0, seed=2)
def test_fitted_edit_keeps_range_and_shape(height: int, width: int, low: float, high: float, ops: list[str],
                                           lr: float, seed: int) -> None:
    low, high = min(low, high), max(low, high)
    generator = torch.Generator().manual_seed(seed)
    image = low + (high - low) * torch.rand(1, 3, height, width, generator=generator)
    seen: list[float] = []
    retoucher = optimize_edit(image, harsh_loss(seen), ops, EditSettings(steps=3, lr=lr, work_size=32), seed=seed)
    out = retoucher.retouch_full(image)
    assert out.shape == image.shape
    assert not out.isnan().any() and out.min() >= 0.0 and out.max() <= 1.0
    assert all(torch.isfinite(torch.tensor(seen)))
    assert all(torch.isfinite(p).all() for p in retoucher.parameters())
