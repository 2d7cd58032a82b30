"""Dark channel prior dehazing: dark channel, airlight, guided filter, dehaze, low-res transmission, module."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from retouch_testing import image_batches, random_image
from torch.autograd import gradcheck

from retouch.degrade import add_haze
from retouch.dehaze import (
    AIRLIGHT_MIN,
    AIRLIGHT_OFFSET_BOUND,
    Dehaze,
    clip_straight_through,
    dark_channel,
    dehaze,
    estimate_airlight,
    guided_filter,
    recover,
    resize_to_fit,
    transmission,
)


def _scene(size: int = 64, seed: int = 0) -> torch.Tensor:
    """Haze-free blocks of saturated colours (one channel near 0 in each block), so the dark channel prior holds."""
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.rand(1, 3, 4, 4, generator=generator) * 0.8 + 0.2
    low = torch.randint(3, (1, 1, 4, 4), generator=generator)
    blocks = blocks.scatter(1, low, 0.02)
    return F.interpolate(blocks, size=(size, size), mode="nearest")


@pytest.mark.parametrize("patch", [1, 3, 5, 15])
def test_dark_channel_matches_brute_force(patch: int) -> None:
    image = random_image(2, 3, 9, 7)
    dark = dark_channel(image, patch=patch)
    darkest = image.amin(dim=1)
    half = patch // 2
    assert dark.shape == (2, 1, 9, 7)
    for b in range(2):
        for y in range(9):
            for x in range(7):  # windows clipped at the border; 15 is larger than the image
                window = darkest[b, max(0, y - half) : y + half + 1, max(0, x - half) : x + half + 1]
                assert dark[b, 0, y, x] == window.min()


def test_dark_channel_spreads_a_dark_pixel() -> None:
    image = torch.ones(1, 3, 9, 9)
    image[0, 1, 4, 4] = 0.0
    dark = dark_channel(image, patch=5)[0, 0]
    assert (dark[2:7, 2:7] == 0).all() and dark.sum() == 81 - 25


@pytest.mark.parametrize("patch", [0, 4, -3])
def test_dark_channel_bad_patch_raises(patch: int) -> None:
    with pytest.raises(ValueError):
        dark_channel(random_image(1, 3, 8, 8), patch=patch)


def test_estimate_airlight_uses_the_haziest_pixels() -> None:
    image = random_image(2, 3, 32, 32) * 0.3
    # after the 3x3 minimum filter, 25 and 16 pixels of these blocks keep their values: more than the top 10
    image[0, :, :6, :6] = torch.tensor([0.9, 0.85, 0.8]).view(3, 1, 1)
    image[1, :, -5:, -5:] = 0.7
    airlight = estimate_airlight(image, dark_channel(image, 3), top=0.01)
    assert torch.allclose(airlight, torch.tensor([[0.9, 0.85, 0.8], [0.7, 0.7, 0.7]]))
    single = estimate_airlight(image, dark_channel(image, 3), top=1e-9)
    assert single.shape == (2, 3)
    with pytest.raises(ValueError):
        estimate_airlight(image, dark_channel(image, 3), top=0.0)
    with pytest.raises(ValueError):
        estimate_airlight(image, torch.zeros(2, 1, 8, 8))


def test_guided_filter_properties() -> None:
    guide = random_image(2, 1, 24, 24)
    constant = torch.full((2, 1, 24, 24), 0.7)
    assert torch.allclose(guided_filter(guide, constant, 3, 1e-3), constant, atol=1e-5)
    # edge-preserving: a step in the guide survives in the output, noise in flat parts is smoothed
    step = torch.zeros(1, 1, 24, 24)
    step[..., 12:] = 1.0
    noisy = step + 0.05 * random_image(1, 1, 24, 24, seed=3)
    out = guided_filter(step, noisy, 3, 1e-3)
    assert out[..., 12:].mean() - out[..., :12].mean() > 0.95
    assert out[..., 2:-2, 2:10].std() < noisy[..., 2:-2, 2:10].std() / 2
    with pytest.raises(ValueError):
        guided_filter(guide, torch.zeros(2, 1, 8, 8), 3, 1e-3)
    with pytest.raises(ValueError):
        guided_filter(guide, constant, -1, 1e-3)
    with pytest.raises(ValueError):
        guided_filter(guide, constant, 1, 0.0)


def test_clip_straight_through() -> None:
    x = torch.tensor([-0.5, 0.5, 1.5], requires_grad=True)
    out = clip_straight_through(x)
    out.sum().backward()
    assert torch.equal(out, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.equal(x.grad, torch.ones(3))


def test_zero_strength_is_identity() -> None:
    image = random_image(2, 3, 20, 16)
    airlight = torch.tensor([[0.9, 0.9, 0.95]])
    assert torch.equal(transmission(image, 0.0, airlight, radius=4), torch.ones(2, 1, 20, 16))
    assert torch.allclose(dehaze(image, 0.0, airlight), image, atol=1e-6)


def test_dehaze_removes_synthetic_haze() -> None:
    scene = _scene()
    dense = add_haze(scene, 4.0, 0.9)
    assert torch.allclose(estimate_airlight(dense, dark_channel(dense)), torch.full((1, 3), 0.9), atol=0.02)
    hazy = add_haze(scene, 1.2, 0.9)
    airlight = estimate_airlight(hazy, dark_channel(hazy))
    clear = dehaze(hazy, 1.0, airlight, radius=20)
    assert dark_channel(clear).mean() < 0.5 * dark_channel(hazy).mean()
    assert (clear - scene).abs().mean() < (hazy - scene).abs().mean()
    # negative strength adds haze instead
    hazier = dehaze(hazy, -1.0, airlight, radius=20)
    assert dark_channel(hazier).mean() > dark_channel(hazy).mean()
    # strength is monotone
    half = dehaze(hazy, 0.5, airlight, radius=20)
    assert dark_channel(clear).mean() < dark_channel(half).mean() < dark_channel(hazy).mean()


def test_t_min_bounds_the_gain() -> None:
    image = torch.full((1, 3, 8, 8), 0.95)
    airlight = torch.full((1, 3), 1.0)
    out_low = dehaze(image, 1.0, airlight, t_min=0.1, patch=3, radius=2)
    out_high = dehaze(image, 1.0, airlight, t_min=0.5, patch=3, radius=2)
    # t = 1 - 0.95 * 0.95 = 0.0975 < both floors: J = (I - A) / t_min + A
    assert torch.allclose(out_low, torch.full_like(image, 0.5), atol=1e-5)
    assert torch.allclose(out_high, torch.full_like(image, 0.9), atol=1e-5)
    with pytest.raises(ValueError):
        dehaze(image, 1.0, airlight, t_min=0.0)
    with pytest.raises(ValueError):
        dehaze(image, 1.0, torch.zeros(1, 3))
    with pytest.raises(ValueError):
        dehaze(image, torch.ones(3), airlight)


def test_dehaze_gradcheck() -> None:
    image = (random_image(1, 3, 8, 8, dtype=torch.float64) * 0.4 + 0.5).requires_grad_()
    strength = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    airlight = torch.tensor([[0.95, 0.93, 0.97]], dtype=torch.float64, requires_grad=True)

    def run(image: torch.Tensor, strength: torch.Tensor, airlight: torch.Tensor) -> torch.Tensor:
        out = dehaze(image, strength, airlight, patch=3, radius=2)
        assert out.min() > 0 and out.max() < 1  # no clipping, where the straight-through gradient is not exact
        return out

    assert gradcheck(run, (image, strength, airlight), fast_mode=True)


def test_dark_channel_and_airlight_gradcheck() -> None:
    image = random_image(1, 3, 6, 6, dtype=torch.float64).requires_grad_()
    assert gradcheck(lambda x: dark_channel(x, 3), (image,))
    assert gradcheck(lambda x: estimate_airlight(x, dark_channel(x, 3), top=0.1), (image,))


def test_low_res_transmission_matches_full_res() -> None:
    scene = F.interpolate(_scene(16), size=(96, 96), mode="bilinear", align_corners=False)
    hazy = add_haze(scene, 1.0, 0.9)
    airlight = torch.full((1, 3), 0.9)
    full = transmission(hazy, 1.0, airlight, patch=7, radius=16)
    small = transmission(resize_to_fit(hazy, 48), 1.0, airlight, patch=3, radius=8)
    upsampled = recover(hazy, small, airlight, refine_radius=2)
    reference = recover(hazy, full, airlight)
    assert (upsampled - reference).abs().mean() < 0.03
    assert torch.allclose(recover(hazy, torch.ones(1, 1, 12, 12), airlight, refine_radius=2), hazy, atol=1e-6)


def test_module_identity_and_gradients() -> None:
    module = Dehaze(patch=7, work_size=32)
    image = add_haze(_scene(64), 1.0, 0.9)
    out = module(image)
    assert torch.allclose(out, image, atol=1e-6)
    (out.mean() + module.regularization()).backward()
    # at strength 0 the output depends on the strength only
    assert module.raw_strength.grad.abs() > 0
    assert module.airlight_offset.grad.abs().sum() == 0
    module.zero_grad()
    with torch.no_grad():
        module.raw_strength.fill_(1.0)
        module.raw_t_min.fill_(0.0)  # t_min = 0.5, active in the densest haze
    (module(image).mean() + module.regularization()).backward()
    for name, parameter in module.named_parameters():
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_module_dehazes_and_is_resolution_independent() -> None:
    module = Dehaze(patch=7, radius=16, work_size=48)
    with torch.no_grad():
        module.raw_strength.fill_(2.0)
    hazy = add_haze(F.interpolate(_scene(16), size=(128, 128), mode="bilinear", align_corners=False), 1.2, 0.9)
    full = module(hazy)
    assert dark_channel(full, 7).mean() < 0.6 * dark_channel(hazy, 7).mean()
    small = module(resize_to_fit(hazy, 64))
    assert (resize_to_fit(full, 64) - small).abs().mean() < 0.01
    assert module.regularization() == 0  # the strength is charged by the fit's fidelity term, not here
    with torch.no_grad():
        module.airlight_offset.fill_(0.01)
    assert module.regularization() > 0


def test_module_airlight_offset_is_bounded() -> None:
    module = Dehaze(patch=7, radius=16, work_size=64)
    hazy = add_haze(_scene(64), 1.2, 0.8)
    with torch.no_grad():
        module.raw_strength.fill_(1.0)
        module.airlight_offset.fill_(100.0)
        out = module(hazy)
        estimated = estimate_airlight(hazy, dark_channel(hazy, 7))
        strength = torch.tanh(module.raw_strength)
        bounded = (estimated + AIRLIGHT_OFFSET_BOUND).clamp(AIRLIGHT_MIN, 1.0)
        expected = recover(hazy, transmission(hazy, strength, bounded, 7, radius=16), bounded, 0.1)
    assert AIRLIGHT_OFFSET_BOUND <= 0.05 and torch.allclose(out, expected, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(
    image=image_batches(batch=1),
    strength=st.floats(-1.0, 1.0),
    airlight=st.floats(0.05, 1.0),
    t_min=st.floats(0.01, 1.0),
    patch=st.sampled_from([1, 3, 7, 15]),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_range(
    image: torch.Tensor,
    strength: float,
    airlight: float,
    t_min: float,
    patch: int,
    seed: int,
) -> None:
    out = dehaze(image, strength, torch.full((1, 3), airlight), t_min, patch=patch, radius=8)
    module = Dehaze(patch=patch, work_size=16)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(seed)))
    for result in (out, module(image)):
        assert result.shape == image.shape
        assert not result.isnan().any() and result.min() >= 0.0 and result.max() <= 1.0
