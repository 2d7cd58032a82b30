"""PSNR/SSIM wrappers, colourfulness and the taste features."""

from __future__ import annotations

import math

import pytest
import torch
from retouch_testing import random_image

from retouch.color import saturation
from retouch.metrics import TASTE_FEATURES, colourfulness, psnr, ssim, taste_features


def test_psnr_per_image() -> None:
    a = torch.zeros(3, 3, 8, 8)
    b = torch.stack([torch.full((3, 8, 8), value) for value in (0.1, 0.01, 0.0)])
    values = psnr(a, b)
    assert values.shape == (3,)
    assert values[0] == pytest.approx(20.0, abs=1e-3) and values[1] == pytest.approx(40.0, abs=1e-3)
    assert math.isinf(values[2])


def test_ssim_per_image() -> None:
    image = torch.nn.functional.interpolate(random_image(2, 3, 4, 4), size=(32, 32), mode="bilinear", align_corners=False)
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
