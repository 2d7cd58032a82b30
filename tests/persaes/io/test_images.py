"""Tensor <-> PIL conversions: torchvision's give the hand-written ones' values, one 8-bit quantizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from persaes.io.images import open_rgb, to_bytes, to_pil, to_tensor


def _images(photos: list[Path]) -> list[Image.Image]:
    rgb = open_rgb(photos[0])
    return [open_rgb(photo) for photo in photos] + [rgb.convert("L"), rgb.convert("RGBA"), rgb.convert("P"),
                                                      rgb.crop((0, 0, 1, 7))]


def test_to_tensor_gives_the_levels_over_255_of_the_rgb_image(photos: list[Path]) -> None:
    for image in _images(photos):
        by_hand = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
        tensor = to_tensor(image)
        assert tensor.dtype == torch.float32 and tensor.shape == (3, image.height, image.width)
        assert torch.equal(tensor, by_hand.float().div_(255.0))


def test_to_pil_gives_the_image_of_the_levels_and_inverts_to_tensor(photos: list[Path]) -> None:
    for image in _images(photos):
        tensor = to_tensor(image)
        by_hand = Image.fromarray(to_bytes(tensor).permute(1, 2, 0).numpy(), "RGB")
        pil = to_pil(tensor)
        assert pil.mode == "RGB" and pil.size == image.size
        assert pil.tobytes() == by_hand.tobytes() == image.convert("RGB").tobytes()
        assert torch.equal(to_tensor(pil), tensor)


def test_to_bytes_rounds_halves_up_and_clips() -> None:
    levels = torch.arange(255, dtype=torch.float32)
    halves = (levels + 0.5) / 255
    assert torch.equal(halves * 255, levels + 0.5)  # exact halves in float32: where rounding rules differ
    assert torch.equal(to_bytes(halves), (levels + 1).to(torch.uint8))
    assert not torch.equal(halves.mul(255).round(), levels + 1)  # half to even would take every other one down
    assert to_bytes(torch.tensor([-0.2, 1.7])).tolist() == [0, 255]
    assert np.asarray(to_pil(halves[:3].reshape(3, 1, 1))).tolist() == [[[1, 2, 3]]]


def test_conversions_refuse_what_they_cannot_convert() -> None:
    with pytest.raises(ValueError, match="floating-point"):
        to_bytes(torch.zeros(3, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="shape"):
        to_pil(torch.rand(1, 3, 2, 2))
