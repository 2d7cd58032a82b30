"""Light-enhancement curves: identity, direction, range, gradients, grid upsampling, regulariser."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from retouch_testing import image_batches, random_image
from torch.autograd import gradcheck

from retouch.exposure import CHANNEL_SPREAD_WEIGHT, ExposureCurves, apply_curves, channel_spread


def test_zero_alpha_is_identity() -> None:
    image = random_image(2, 3, 8, 8)
    assert torch.equal(apply_curves(image, torch.zeros(2, 12, 1, 1)), image)
    assert torch.equal(apply_curves(image, torch.zeros(1, 6, 3, 3)), image)


@pytest.mark.parametrize("grid", [(1, 1), (4, 3)])
def test_module_is_identity_at_init(grid: tuple[int, int]) -> None:
    image = random_image(2, 3, 16, 12)
    assert torch.equal(ExposureCurves(iterations=3, grid=grid)(image), image)


def test_known_value() -> None:
    # x = 0.5, a = 0.5: 0.5 + 0.5 * 0.25 = 0.625; second iteration with a = -1: 0.625^2
    image = torch.full((1, 3, 2, 2), 0.5)
    alpha = torch.tensor([0.5, 0.5, 0.5, -1.0, -1.0, -1.0]).view(1, 6, 1, 1)
    assert torch.allclose(apply_curves(image, alpha), torch.full_like(image, 0.625**2))


def test_positive_alpha_brightens_negative_darkens() -> None:
    image = random_image(1, 3, 8, 8) * 0.98 + 0.01
    brighter = apply_curves(image, torch.full((1, 3, 1, 1), 0.5))
    darker = apply_curves(image, torch.full((1, 3, 1, 1), -0.5))
    assert (brighter > image).all()
    assert (darker < image).all()


def test_per_channel_curves() -> None:
    image = torch.full((1, 3, 2, 2), 0.5)
    out = apply_curves(image, torch.tensor([1.0, 0.0, -1.0]).view(1, 3, 1, 1))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.75, 0.5, 0.25]))


def test_extreme_alpha_keeps_range() -> None:
    image = torch.tensor([0.0, 0.3, 1.0]).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    for value in (-1.0, 1.0):
        out = apply_curves(image, torch.full((1, 24, 1, 1), value))
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert torch.equal(out[..., 0], image[..., 0]) and torch.equal(out[..., 2], image[..., 2])


def test_constant_grid_equals_global() -> None:
    image = random_image(2, 3, 10, 14)
    alpha = torch.tensor([0.3, -0.2, 0.6]).view(1, 3, 1, 1)
    assert torch.allclose(apply_curves(image, alpha.expand(1, 3, 4, 5)), apply_curves(image, alpha), atol=1e-6)


def test_grid_varies_spatially() -> None:
    image = torch.full((1, 3, 16, 16), 0.4)
    alpha = torch.tensor([-1.0, 1.0]).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    out = apply_curves(image, alpha)
    assert (out[..., :4] < 0.4).all() and (out[..., -4:] > 0.4).all()


def test_per_image_alpha() -> None:
    image = random_image(2, 3, 4, 4)
    alpha = torch.tensor([0.5, -0.5]).view(2, 1, 1, 1).expand(2, 3, 1, 1)
    out = apply_curves(image, alpha)
    assert (out[0] >= image[0]).all() and (out[1] <= image[1]).all()


def test_gradcheck() -> None:
    image = random_image(1, 3, 8, 8, dtype=torch.float64).requires_grad_()
    alpha = (random_image(1, 6, 3, 3, seed=1, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()
    assert gradcheck(apply_curves, (image, alpha))


def test_module_gradients_finite() -> None:
    curves = ExposureCurves(grid=(2, 3))
    loss = curves(random_image(2, 3, 16, 16)).mean() + curves.regularization()
    loss.backward()
    assert torch.isfinite(curves.raw.grad).all() and curves.raw.grad.abs().sum() > 0


def test_regularization() -> None:
    curves = ExposureCurves(iterations=1, grid=(2, 2))
    assert curves.regularization() == 0
    with torch.no_grad():
        curves.raw.fill_(0.5)
    smooth = curves.regularization()
    with torch.no_grad():
        curves.raw[..., 0, 0] = -0.5
    assert 0 < smooth < curves.regularization()
    per_image = {"raw": torch.zeros(3, 3, 2, 2)}
    assert curves.regularization(per_image) == 0


def test_regularization_charges_a_colour_change_beyond_the_same_tone_change() -> None:
    curves = ExposureCurves(iterations=1)
    tone = {"raw": torch.atanh(torch.tensor([0.3, 0.3, 0.3])).view(1, 3, 1, 1)}
    cast = {"raw": torch.atanh(torch.tensor([0.6, 0.3, 0.0])).view(1, 3, 1, 1)}  # the same mean |curve parameter|
    assert torch.isclose(curves.regularization(tone), torch.tensor(0.3))
    assert torch.isclose(curves.regularization(cast) - curves.regularization(tone),
                         torch.tensor(CHANNEL_SPREAD_WEIGHT * 0.2))
    assert CHANNEL_SPREAD_WEIGHT > 0


def test_channel_spread_per_iteration_and_bad_shapes() -> None:
    alpha = torch.tensor([0.2, 0.2, 0.2, -0.5, 0.1, 0.4]).view(1, 6, 1, 1)  # iteration 2 spreads, iteration 1 not
    assert torch.isclose(channel_spread(alpha), torch.tensor((0.5 + 0.1 + 0.4) / 6))
    with pytest.raises(ValueError, match="3n"):
        channel_spread(torch.zeros(1, 4, 1, 1))


def _prefers_cool(images: torch.Tensor) -> torch.Tensor:
    return 2.0 * (images[:, 0].mean() - images[:, 2].mean())  # a loss: lower when blue outweighs red


def test_fitting_a_colour_loss_keeps_the_curves_tonal(monkeypatch: pytest.MonkeyPatch) -> None:
    from retouch import exposure
    from retouch.optimize import EditSettings, optimize_edit

    torch.manual_seed(0)
    image = torch.rand(1, 3, 32, 32) * 0.6 + 0.2
    # the curves' own charge, no guard or limit
    settings = EditSettings(steps=20, lr=0.03, work_size=32, neutral_guard=0.0, neutral_limit=float("inf"))
    spread = {}
    for name, weight in (("charged", CHANNEL_SPREAD_WEIGHT), ("free", 0.0)):
        monkeypatch.setattr(exposure, "CHANNEL_SPREAD_WEIGHT", weight)
        fitted = optimize_edit(image, _prefers_cool, ("exposure",), settings)
        spread[name] = float(channel_spread(torch.tanh(fitted.exposure.raw.detach())))
    # uncharged, the curves become a colour cast; charged, the loss's gain does not pay for one
    assert spread["free"] > 0.1 and spread["charged"] < 0.02


@pytest.mark.parametrize(
    ("image", "alpha"),
    [
        (torch.rand(3, 8, 8), torch.zeros(1, 3, 1, 1)),
        (torch.rand(1, 4, 8, 8), torch.zeros(1, 3, 1, 1)),
        (torch.rand(1, 3, 8, 8), torch.zeros(1, 4, 1, 1)),
        (torch.rand(1, 3, 8, 8), torch.zeros(3, 3)),
        (torch.rand(2, 3, 8, 8), torch.zeros(3, 3, 1, 1)),
        (torch.rand(1, 3, 8, 8), torch.full((1, 3, 1, 1), 1.5)),
    ],
)
def test_bad_inputs_raise(image: torch.Tensor, alpha: torch.Tensor) -> None:
    with pytest.raises(ValueError):
        apply_curves(image, alpha)


def test_bad_module_arguments_raise() -> None:
    with pytest.raises(ValueError):
        ExposureCurves(iterations=0)
    with pytest.raises(ValueError):
        ExposureCurves(grid=(0, 2))


@settings(max_examples=30, deadline=None)
@given(
    image=image_batches(),
    grid=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    iterations=st.integers(1, 8),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_range(
    image: torch.Tensor, grid: tuple[int, int], iterations: int, seed: int
) -> None:
    alpha = random_image(2, 3 * iterations, *grid, seed=seed + 1) * 2 - 1
    out = apply_curves(image, alpha)
    assert out.shape == image.shape
    assert not out.isnan().any() and out.min() >= 0.0 and out.max() <= 1.0
