"""Colour ops: white balance, saturation, 3D LUTs, ColorAdjust."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kornia.color import rgb_to_grayscale
from retouch_testing import image_batches, random_image
from torch.autograd import gradcheck

from retouch.color import (
    ColorAdjust,
    apply_lut,
    identity_lut,
    saturation,
    white_balance,
)
from retouch.metrics import colourfulness

# white balance


def test_white_balance_acts_per_channel() -> None:
    image = random_image(1, 3, 4, 4) * 0.5
    out = white_balance(image, torch.tensor([[1.5, 1.0, 0.5]]))
    assert torch.allclose(out[:, 0], image[:, 0] * 1.5)
    assert torch.equal(out[:, 1], image[:, 1])
    assert torch.allclose(out[:, 2], image[:, 2] * 0.5)


def test_white_balance_identity_clip_and_batch() -> None:
    image = random_image(2, 3, 4, 4)
    assert torch.equal(white_balance(image, torch.ones(1, 3)), image)
    out = white_balance(torch.full((2, 3, 1, 1), 0.8), torch.tensor([[2.0, 1.0, 1.0], [1.0, 1.0, 0.5]]))
    assert torch.allclose(out[:, :, 0, 0], torch.tensor([[1.0, 0.8, 0.8], [0.8, 0.8, 0.4]]))


@pytest.mark.parametrize("gains", [torch.ones(3), torch.ones(1, 4), torch.ones(3, 3), torch.tensor([[1.0, 0.0, 1.0]])])
def test_white_balance_bad_gains_raise(gains: torch.Tensor) -> None:
    with pytest.raises(ValueError):
        white_balance(random_image(2, 3, 4, 4), gains)


def test_white_balance_gradcheck() -> None:
    image = (random_image(1, 3, 6, 6, dtype=torch.float64) * 0.6).requires_grad_()
    gains = torch.tensor([[1.4, 0.9, 0.7]], dtype=torch.float64, requires_grad=True)
    assert gradcheck(white_balance, (image, gains))


# saturation


def test_saturation_identity_and_grey() -> None:
    image = random_image(2, 3, 8, 8)
    assert torch.allclose(saturation(image, 1.0), image, atol=1e-6)
    grey = saturation(image, 0.0)
    assert torch.allclose(grey, rgb_to_grayscale(image).expand_as(image), atol=1e-6)


def test_saturation_direction_and_hue() -> None:
    image = random_image(1, 3, 16, 16) * 0.6 + 0.2
    luma = rgb_to_grayscale(image)
    assert (colourfulness(saturation(image, 0.5)) < colourfulness(image)).all()
    vivid = saturation(image, 2.0)
    assert (colourfulness(vivid) > colourfulness(image)).all()
    assert vivid.min() >= 0 and vivid.max() <= 1
    # hue: the chroma vector keeps its direction (scaled by a per-pixel factor in [1, 2])
    ratio = (vivid - luma) / (image - luma)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-3)
    assert ratio.min() >= 1 - 1e-4 and ratio.max() <= 2 + 1e-4
    # luma is kept
    assert torch.allclose(rgb_to_grayscale(vivid), luma, atol=1e-6)


def test_saturation_stops_at_gamut_edge() -> None:
    pixel = torch.tensor([0.9, 0.5, 0.4]).view(1, 3, 1, 1)
    out = saturation(pixel, 100.0)
    assert out.max() == pytest.approx(1.0) or out.min() == pytest.approx(0.0, abs=1e-6)
    assert out.min() >= 0 and out.max() <= 1


def test_saturation_leaves_grey_pixels() -> None:
    grey = torch.full((1, 3, 4, 4), 0.3)
    assert torch.allclose(saturation(grey, 3.0), grey)


def test_saturation_per_image_factor_and_errors() -> None:
    image = random_image(2, 3, 8, 8)
    out = saturation(image, torch.tensor([0.0, 1.0]))
    assert torch.allclose(out[1], image[1], atol=1e-6)
    assert colourfulness(out)[0] == pytest.approx(0.0, abs=1e-3)
    with pytest.raises(ValueError):
        saturation(image, -1.0)
    with pytest.raises(ValueError):
        saturation(image, torch.ones(3))


@pytest.mark.parametrize("factor", [0.4, 2.5])
def test_saturation_gradcheck(factor: float) -> None:
    image = (random_image(1, 3, 6, 6, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    value = torch.tensor([factor], dtype=torch.float64, requires_grad=True)
    assert gradcheck(saturation, (image, value))


# LUTs


def test_identity_lut_layout() -> None:
    lut = identity_lut(3)
    assert lut.shape == (3, 3, 3, 3)
    # lut[c, b, g, r]
    assert torch.equal(lut[:, 2, 1, 0], torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError):
        identity_lut(1)


@pytest.mark.parametrize("size", [2, 5, 17])
def test_identity_lut_is_identity(size: int) -> None:
    image = random_image(2, 3, 7, 9)
    assert torch.allclose(apply_lut(image, identity_lut(size)), image, atol=1e-5)


def test_channel_swap_and_inversion_luts() -> None:
    image = random_image(2, 3, 7, 9)
    identity = identity_lut(4)
    assert torch.allclose(apply_lut(image, identity[[2, 0, 1]]), image[:, [2, 0, 1]], atol=1e-5)
    per_image = torch.stack([identity, 1 - identity])
    out = apply_lut(image, per_image)
    assert torch.allclose(out[0], image[0], atol=1e-5)
    assert torch.allclose(out[1], 1 - image[1], atol=1e-5)


def test_lut_interpolates_trilinearly() -> None:
    # a LUT storing r * g in every channel is bilinear in (r, g), so trilinear interpolation reproduces it exactly
    lut = identity_lut(2)
    lut = (lut[0] * lut[1]).expand(3, 2, 2, 2)
    image = random_image(1, 3, 5, 5)
    assert torch.allclose(apply_lut(image, lut), (image[:, :1] * image[:, 1:2]).expand_as(image), atol=1e-6)


@pytest.mark.parametrize(
    "lut", [torch.rand(3, 4, 4), torch.rand(4, 4, 4, 4), torch.rand(3, 4, 4, 5), torch.rand(3, 3, 4, 4, 4)]
)
def test_bad_lut_raises(lut: torch.Tensor) -> None:
    with pytest.raises(ValueError):
        apply_lut(random_image(2, 3, 4, 4), lut)


def test_lut_gradcheck() -> None:
    image = random_image(1, 3, 4, 4, dtype=torch.float64).requires_grad_()
    lut = identity_lut(3, dtype=torch.float64) + 0.1 * random_image(3, 3, 3, 3, seed=1, dtype=torch.float64)
    assert gradcheck(apply_lut, (image, lut.clamp(0, 1).requires_grad_()))


# ColorAdjust


def test_color_adjust_identity_and_gradients() -> None:
    adjust = ColorAdjust(lut_size=5)
    image = random_image(2, 3, 12, 12)
    out = adjust(image)
    assert torch.allclose(out, image, atol=1e-5)
    assert adjust.regularization() == 0
    (out.mean() + adjust.regularization()).backward()
    for name, parameter in adjust.named_parameters():
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_color_adjust_parameters_act() -> None:
    adjust = ColorAdjust(lut_size=5)
    image = random_image(1, 3, 12, 12) * 0.5 + 0.25
    with torch.no_grad():
        adjust.log_gains.copy_(torch.tensor([[0.2, 0.0, -0.2]]))
    out = adjust(image)
    assert (out[:, 0] > image[:, 0]).all() and (out[:, 2] < image[:, 2]).all()
    with torch.no_grad():
        adjust.log_gains.zero_()
        adjust.raw_saturation.fill_(-10.0)  # soft-bounded: factor exp(-0.6)
    assert colourfulness(adjust(image)) < 0.6 * colourfulness(image)
    with torch.no_grad():
        adjust.raw_saturation.zero_()
        adjust.lut_residual.fill_(5.0)  # soft-bounded: every entry +0.01 at most
    assert torch.allclose(adjust(image), (image + 0.01).clamp(max=1.0), atol=1e-4)
    assert adjust.regularization() > 0


def test_color_adjust_per_image_params() -> None:
    adjust = ColorAdjust(lut_size=3)
    image = random_image(2, 3, 6, 6)
    params = {name: p.detach().expand(2, *p.shape[1:]).clone() for name, p in adjust.named_parameters()}
    params["raw_saturation"][1] = -20.0
    out = adjust.render(image, params)
    assert torch.allclose(out[0], image[0], atol=1e-5)
    assert colourfulness(out)[1] < 0.6 * colourfulness(image)[1]


def test_color_adjust_bounds_extreme_parameters() -> None:
    adjust = ColorAdjust(lut_size=3)
    image = random_image(1, 3, 6, 6)
    with torch.no_grad():
        adjust.log_gains.fill_(-1e6)
        adjust.raw_saturation.fill_(1e6)
    out = adjust(image)
    out.sum().backward()
    assert out.isfinite().all() and out.min() >= 0 and out.max() <= 1
    assert all(parameter.grad.isfinite().all() for parameter in adjust.parameters())


@settings(max_examples=30, deadline=None)
@given(
    image=image_batches(batch=1),
    gains=st.tuples(*[st.floats(0.1, 4.0)] * 3),
    factor=st.floats(0.0, 10.0),
    lut_size=st.integers(2, 9),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_range(
    image: torch.Tensor,
    gains: tuple[float, float, float],
    factor: float,
    lut_size: int,
    seed: int,
) -> None:
    outputs = [
        white_balance(image, torch.tensor([gains])),
        saturation(image, factor),
        apply_lut(image, random_image(3, lut_size, lut_size, lut_size, seed=seed + 1)),
    ]
    adjust = ColorAdjust(lut_size)
    with torch.no_grad():
        for parameter in adjust.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(seed)))
        outputs.append(adjust(image))
    for out in outputs:
        assert out.shape == image.shape
        assert not out.isnan().any() and out.min() >= 0.0 and out.max() <= 1.0
