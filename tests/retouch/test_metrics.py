"""PSNR/SSIM wrappers, colourfulness and the taste features."""

from __future__ import annotations

import math

import pytest
import torch
from retouch_testing import random_image

from retouch.color import saturation
from retouch.metrics import (
    TASTE_FEATURES,
    ciede2000,
    clipped_share,
    colourfulness,
    delta_e,
    near_neutral_mask,
    neutral_cast,
    neutral_chroma,
    new_clipping,
    psnr,
    soft_clipped_share,
    ssim,
    taste_features,
)


def test_psnr_per_image() -> None:
    a = torch.zeros(3, 3, 8, 8)
    b = torch.stack([torch.full((3, 8, 8), value) for value in (0.1, 0.01, 0.0)])
    values = psnr(a, b)
    assert values.shape == (3,)
    assert values[0] == pytest.approx(20.0, abs=1e-3) and values[1] == pytest.approx(40.0, abs=1e-3)
    assert math.isinf(values[2])


def test_ssim_per_image() -> None:
    image = torch.nn.functional.interpolate(random_image(2, 3, 4, 4), size=(32, 32), mode="bilinear",
                                            align_corners=False)
    noisy = (image + 0.2 * (random_image(2, 3, 32, 32, seed=1) - 0.5)).clamp(0, 1)
    pair = torch.stack([image[0], noisy[1]])
    values = ssim(image, pair)
    assert values.shape == (2,)
    assert values[0] == pytest.approx(1.0, abs=1e-5) and values[1] < 0.8
    assert ssim(image[:, :, :3, :5], image[:, :, :3, :5]).allclose(torch.ones(2), atol=1e-5)
    assert ssim(image[:, :, :1, :1], image[:, :, :1, :1]).shape == (2,)


def test_pair_checks() -> None:
    with pytest.raises(ValueError):
        psnr(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 5))
    with pytest.raises(ValueError):
        ssim(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError):
        ssim(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4), window_size=4)


def test_colourfulness() -> None:
    grey = random_image(2, 1, 8, 8).expand(2, 3, 8, 8)
    assert torch.equal(colourfulness(grey), torch.zeros(2))
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1.0
    # rg = 1, yb = 0.5, no spread: 0.3 * sqrt(1.25)
    assert colourfulness(red).item() == pytest.approx(0.3 * math.sqrt(1.25), abs=1e-5)
    image = random_image(1, 3, 16, 16)
    assert colourfulness(saturation(image, 0.5)) < colourfulness(image) < colourfulness(saturation(image, 1.5))


def test_taste_features_known_values() -> None:
    assert TASTE_FEATURES == ("luminance", "colourfulness", "contrast", "warmth", "haze")
    flat = torch.full((1, 3, 8, 8), 0.5)
    assert torch.allclose(taste_features(flat), torch.tensor([[0.5, 0.0, 0.0, 0.0, 0.5]]), atol=1e-6)
    halves = torch.zeros(1, 3, 8, 8)
    halves[..., 4:] = 1.0
    features = taste_features(halves, patch=3)[0]
    assert features[0] == pytest.approx(0.5) and features[2] == pytest.approx(0.5, abs=1e-5)
    assert features[1] == pytest.approx(0.0, abs=1e-5) and features[3] == 0
    assert features[4] == pytest.approx(0.375)  # dark channel is 0 on 5 of 8 columns after the 3x3 minimum
    warm = torch.tensor([0.8, 0.5, 0.2]).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    assert torch.allclose(taste_features(warm)[:, 3], torch.full((2,), 0.6))


def test_taste_features_gradients_finite_on_flat_images() -> None:
    image = torch.full((2, 3, 8, 8), 0.3, requires_grad=True)
    taste_features(image).sum().backward()
    assert torch.isfinite(image.grad).all()


# Pairs of Sharma, Wu & Dalal (2005), "The CIEDE2000 color-difference formula", Table 1.
SHARMA = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, 2.49, -0.001), (50.0, -2.49, 0.0011), 7.2195),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((22.7233, 20.0904, -46.6940), (23.0331, 14.9730, -42.5619), 2.0373),
    ((90.9257, -0.5406, -0.9208), (88.6381, -0.8985, -0.7239), 1.5381),
    ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082),
]


def test_ciede2000_matches_sharmas_table() -> None:
    lab1 = torch.tensor([a for a, _, _ in SHARMA], dtype=torch.float64)
    lab2 = torch.tensor([b for _, b, _ in SHARMA], dtype=torch.float64)
    expected = torch.tensor([e for _, _, e in SHARMA], dtype=torch.float64)
    assert torch.allclose(ciede2000(lab1, lab2), expected, atol=1e-4)
    assert torch.allclose(ciede2000(lab2, lab1), expected, atol=1e-4)  # symmetric
    with pytest.raises(ValueError, match="CIELAB"):
        ciede2000(torch.zeros(2, 4), torch.zeros(2, 4))


def test_delta_e_grows_with_a_cast_and_clipping_is_counted() -> None:
    image = random_image(2, 3, 16, 16, seed=3) * 0.8 + 0.1
    warm = (image * torch.tensor([1.1, 1.0, 0.9]).view(1, 3, 1, 1)).clamp(0, 1)
    warmer = (image * torch.tensor([1.2, 1.0, 0.8]).view(1, 3, 1, 1)).clamp(0, 1)
    assert torch.allclose(delta_e(image, image), torch.zeros(2), atol=1e-3)
    assert (delta_e(warm, image) > 1).all() and (delta_e(warmer, image) > delta_e(warm, image)).all()
    assert (clipped_share(image) == 0).all()
    assert torch.allclose(clipped_share((image * 3).clamp(0, 1)),
                          (image * 3 >= 254.5 / 255).any(dim=1).flatten(1).float().mean(1))
    grey = torch.full((1, 3, 8, 8), 0.6)
    assert float(neutral_chroma(grey, grey)) < 0.01
    assert float(neutral_chroma(grey * torch.tensor([1.1, 1.0, 0.9]).view(1, 3, 1, 1), grey)) > 5
    assert math.isnan(float(neutral_chroma(grey, torch.zeros(1, 3, 8, 8))))  # black has no near-neutral pixel


def test_soft_clipped_share_follows_the_hard_count_and_has_gradients() -> None:
    image = random_image(2, 3, 32, 32, seed=5)
    for gain in (0.5, 1.0, 1.5, 3.0):
        edited = (image * gain).clamp(0, 1)
        assert torch.allclose(soft_clipped_share(edited), clipped_share(edited), atol=0.05)
    # short of white: hardly counted, but a gradient toward it
    near = torch.full((1, 3, 4, 4), 0.96, requires_grad=True)
    share = soft_clipped_share(near)
    share.sum().backward()
    assert float(share.detach()) < 0.01 and bool((near.grad > 0).any()) and torch.isfinite(near.grad).all()
    with pytest.raises(ValueError, match="width"):
        soft_clipped_share(image, width=0)


def test_new_clipping_counts_only_what_the_edit_adds() -> None:
    image = random_image(1, 3, 32, 32, seed=6) * 0.9
    darker, brighter = image * 0.8, (image * 1.6).clamp(0, 1)
    assert float(new_clipping(darker, image)) < 1e-4 and float(new_clipping(image, image)) == 0.0
    added = float(clipped_share(brighter) - clipped_share(image))
    assert added > 0.1 and abs(float(new_clipping(brighter, image)) - added) < 0.05
    assert float(new_clipping(image, brighter)) < 1e-6  # undoing clipping is not penalised


def test_neutral_cast_holds_whites_and_greys_only() -> None:
    grey = torch.full((1, 3, 8, 8), 0.6)
    red = torch.tensor([0.8, 0.2, 0.1]).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    scene = torch.cat([grey, red], dim=3)  # left half neutral, right half red
    assert near_neutral_mask(scene)[0, :, :8].all() and not near_neutral_mask(scene)[0, :, 8:].any()
    warm = (scene * torch.tensor([1.15, 1.0, 0.85]).view(1, 3, 1, 1)).clamp(0, 1).requires_grad_()
    assert float(neutral_cast(scene * 1.2, scene)) == 0.0  # brighter, still neutral
    cast = neutral_cast(warm, scene)
    cast.sum().backward()
    assert float(cast.detach()) > 3
    assert torch.equal(neutral_cast(warm, scene, near_neutral_mask(scene)), cast)  # a mask at hand is the same
    assert torch.equal(neutral_chroma(warm, scene, near_neutral_mask(scene)), neutral_chroma(warm, scene))
    assert float(neutral_cast(warm, scene, torch.zeros(1, 8, 16, dtype=torch.bool)).detach()) == 0.0
    assert torch.isfinite(warm.grad).all() and float(warm.grad[..., 8:].abs().sum()) == 0.0  # red pixels are free
    flat = grey.clone().requires_grad_()
    neutral_cast(flat, grey).sum().backward()  # chroma 0: the gradient stays finite
    assert torch.isfinite(flat.grad).all()


def test_new_clipping_counts_highlights_and_shadows_apart() -> None:
    # an edit that lifts crushed shadows and clips as many highlights clips something new all the same
    source = torch.cat([torch.zeros(1, 3, 4, 8), torch.full((1, 3, 4, 8), 0.5)], dim=2)
    edited = torch.cat([torch.full((1, 3, 4, 8), 0.3), torch.ones(1, 3, 4, 8)], dim=2)
    assert float(soft_clipped_share(edited)) == pytest.approx(float(soft_clipped_share(source)), abs=0.01)
    assert float(new_clipping(edited, source)) > 0.45
    assert float(new_clipping(source, source)) == 0.0


def test_new_clipping_charges_near_whites_pushed_to_white_in_full() -> None:
    # near-white and near-black pixels are not clipped yet: clipping them counts as the hard count does
    near = torch.tensor([252.0, 3.0]).div(255).repeat_interleave(8).view(1, 1, 2, 8).expand(1, 3, 2, 8)
    clipped = torch.cat([torch.ones(1, 3, 1, 8), torch.zeros(1, 3, 1, 8)], dim=2)
    assert float(clipped_share(near)) == 0.0 and float(clipped_share(clipped)) == 1.0
    assert float(new_clipping(clipped, near)) > 0.95
    # and pushing highlights toward white costs something before they clip (the wider ramp)
    toward = torch.full((1, 3, 2, 8), 252.0 / 255)
    assert float(clipped_share(toward)) == 0.0 and float(new_clipping(toward, torch.full_like(toward, 0.9))) > 0.2
