"""Classic baselines: gray world, auto gamma, dark channel prior dehazing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from kornia.color import rgb_to_grayscale
from retouch_testing import image_batches, random_image

from retouch.baselines import auto_gamma, dark_channel_dehaze, gray_world
from retouch.color import saturation, white_balance
from retouch.degrade import add_haze
from retouch.dehaze import dark_channel
from retouch.metrics import colourfulness, psnr


def _grey_world_scene() -> torch.Tensor:
    """Colourful scene whose three channel means are equal (each channel is a rearrangement of the same values)."""
    base = random_image(1, 1, 24, 24) * 0.7 + 0.1
    return torch.cat([base, base.flip(-1), base.flip(-2)], dim=1)


def _luma(image: torch.Tensor) -> torch.Tensor:
    return rgb_to_grayscale(image).mean(dim=(1, 2, 3))


def test_gray_world_fixes_a_cast() -> None:
    scene = _grey_world_scene()
    cast = white_balance(scene, torch.tensor([[1.25, 1.0, 0.75]]))
    assert (cast.mean(dim=(2, 3)) - cast.mean()).abs().max() > 0.05
    means = gray_world(cast).mean(dim=(2, 3))
    assert (means - means.mean()).abs().max() < 0.01
    # without the saturation stretch the cast is undone exactly (the gains are the inverse of the cast)
    assert torch.allclose(gray_world(cast, max_stretch=1.0), scene, atol=1e-5)


def test_gray_world_stretches_saturation() -> None:
    scene = _grey_world_scene()
    dull = saturation(scene, 0.4)
    stretched = gray_world(dull)
    assert colourfulness(stretched) > 1.5 * colourfulness(dull)
    assert colourfulness(stretched) <= colourfulness(scene) * 1.05
    assert stretched.min() >= 0 and stretched.max() <= 1


def test_gray_world_handles_flat_images() -> None:
    for value in (0.0, 0.5, 1.0):
        flat = torch.full((1, 3, 4, 4), value)
        assert torch.allclose(gray_world(flat), flat, atol=1e-6)


def test_auto_gamma_targets_mid_grey() -> None:
    image = random_image(3, 3, 32, 32)
    batch = torch.cat([image[:1] * 0.25, image[1:2] * 0.3 + 0.7, image[2:]])
    out = auto_gamma(batch)
    assert ((_luma(out) - 0.5).abs() < 0.01).all()
    assert (out[0] >= batch[0]).all() and (out[1] <= batch[1]).all()
    assert ((_luma(auto_gamma(batch, target=0.3)) - 0.3).abs() < 0.01).all()


def test_auto_gamma_large_image_uses_a_copy() -> None:
    image = F.interpolate(random_image(1, 3, 8, 8) * 0.3, size=(400, 300), mode="bilinear", align_corners=False)
    assert abs(_luma(auto_gamma(image)).item() - 0.5) < 0.01


def _scene(size: int = 64) -> torch.Tensor:
    """Haze-free blocks of saturated colours (one channel near 0 in each block), so the dark channel prior holds."""
    generator = torch.Generator().manual_seed(1)
    blocks = torch.rand(1, 3, 4, 4, generator=generator) * 0.8 + 0.2
    blocks = blocks.scatter(1, torch.randint(3, (1, 1, 4, 4), generator=generator), 0.02)
    return F.interpolate(blocks, size=(size, size), mode="nearest")


def test_dark_channel_dehaze_removes_synthetic_haze() -> None:
    scene = _scene()
    hazy = add_haze(scene, 1.2, 0.9)
    clear = dark_channel_dehaze(hazy)
    assert dark_channel(clear).mean() < 0.5 * dark_channel(hazy).mean()
    assert psnr(clear, scene) > psnr(hazy, scene) + 2.0
    assert clear.min() >= 0 and clear.max() <= 1


@settings(max_examples=15, deadline=None)
@given(
    image=image_batches(),
)
def test_property_range(image: torch.Tensor) -> None:
    for out in (gray_world(image), auto_gamma(image), dark_channel_dehaze(image)):
        assert out.shape == image.shape
        assert not out.isnan().any() and out.min() >= 0.0 and out.max() <= 1.0
