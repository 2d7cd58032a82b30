"""Full-size apply in bands: upsampling a band equals upsampling the whole, and ``retouch_full`` equals ``forward``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from retouch_testing import random_image

from retouch.bands import bilinear_taps, map_bands, upsample_at, upsample_band
from retouch.degrade import add_haze
from retouch.dehaze import Dehaze
from retouch.pipeline import OPS, Retoucher

ALBUM = Path(__file__).resolve().parents[2] / "examples" / "album"
# far below the 1/255 the task allows: the two paths differ only by float rounding
TOLERANCE = 2e-4


def _photo(height: int, width: int, name: str = "Bird2.jpg") -> torch.Tensor:
    """A bundled album photo, resized (bicubic) to ``height x width``: a real-looking full-size image."""
    image = Image.open(ALBUM / name).convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).reshape(height, width, 3).permute(
        2, 0, 1)[None].float() / 255.0


def _set(retoucher: Retoucher, **values: float) -> Retoucher:
    """Fill parameters ``"<op>.<name>"`` (dots written as ``__``) with constants."""
    with torch.no_grad():
        for key, value in values.items():
            retoucher.get_parameter(key.replace("__", ".")).fill_(value)
    return retoucher


def _perturbed(retoucher: Retoucher, seed: int, scale: float = 1.0) -> Retoucher:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in retoucher.named_parameters():
            step = scale * (0.02 if "lut" in name else 1.0)
            parameter.add_(step * torch.randn(parameter.shape, generator=generator))
    return retoucher


def _max_difference(retoucher: Retoucher, image: torch.Tensor, band_pixels: int) -> float:
    with torch.no_grad():
        reference = retoucher(image)
    banded = retoucher.retouch_full(image, band_pixels=band_pixels)
    assert banded.shape == image.shape and not banded.requires_grad
    assert banded.min() >= 0 and banded.max() <= 1
    return float((banded - reference).abs().max())


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 60), st.integers(1, 60), st.data())
def test_upsample_band_and_at_equal_interpolate(h: int, w: int, height: int, width: int, data: st.DataObject) -> None:
    small = random_image(2, 3, h, w, seed=h * 100 + w)
    whole = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)
    top = data.draw(st.integers(0, height - 1))
    rows = data.draw(st.integers(1, height - top))
    assert torch.allclose(upsample_band(small, (height, width), top, rows), whole[..., top : top + rows, :], atol=1e-6)
    pick_rows = torch.tensor(data.draw(st.lists(st.integers(0, height - 1), min_size=1, max_size=5)))
    pick_cols = torch.tensor(data.draw(st.lists(st.integers(0, width - 1), min_size=1, max_size=5)))
    assert torch.allclose(upsample_at(small, (height, width), pick_rows, pick_cols),
                          whole[..., pick_rows, :][..., pick_cols], atol=1e-6)


def test_bilinear_taps_and_band_arguments_are_checked() -> None:
    low, high, weight = bilinear_taps(5, 5, torch.arange(5))
    assert torch.equal(low, torch.arange(5)) and torch.all(weight == 0)
    with pytest.raises(ValueError):
        bilinear_taps(0, 3, torch.arange(3))
    with pytest.raises(ValueError):
        upsample_band(torch.rand(1, 1, 2, 2), (8, 8), 6, 3)
    with pytest.raises(ValueError):
        map_bands(torch.rand(1, 3, 4, 4), [], band_pixels=0)


def test_map_bands_covers_every_row_once_and_leaves_the_input() -> None:
    image = random_image(2, 3, 11, 5)
    before = image.clone()
    seen = []

    def stage(band: torch.Tensor, top: int) -> torch.Tensor:
        seen.append((top, band.shape[-2]))
        return band * 2.0

    out = map_bands(image, [stage, lambda band, top: band.add_(top)], band_pixels=2 * 5 * 3)
    assert seen == [(0, 3), (3, 3), (6, 3), (9, 2)]
    rows = torch.arange(11, dtype=image.dtype).view(1, 1, -1, 1)
    assert torch.equal(out, before * 2.0 + (rows - rows % 3)) and torch.equal(image, before)


@pytest.mark.parametrize("ops", [(op,) for op in OPS] + [OPS])
@pytest.mark.parametrize("seed", [0, 1])
def test_retouch_full_equals_forward_on_random_images(ops: tuple[str, ...], seed: int) -> None:
    retoucher = _perturbed(Retoucher(ops, lut_size=5, dehaze_work_size=32), seed)
    image = add_haze(random_image(2, 3, 70, 90, seed=seed), 0.7, 0.85)
    for band_pixels in (1, 2 * 90 * 7, 10**9):  # one row, 7 rows (70 / 7), the whole image
        assert _max_difference(retoucher, image, band_pixels) < TOLERANCE


def test_retouch_full_equals_forward_on_a_photo_with_all_ops() -> None:
    photo = _photo(1100, 1500)
    retoucher = _perturbed(Retoucher(), seed=3, scale=0.5)
    assert _max_difference(retoucher, photo, 1 << 16) < TOLERANCE
    hazy = add_haze(photo, 1.0, 0.8)
    assert _max_difference(_set(Retoucher(), dehaze__raw_strength=1.5), hazy, 1 << 16) < TOLERANCE


@pytest.mark.parametrize(("bound", "raw_t_min"), [(-1.0, -20.0), (1.0, 20.0), (1.0, -20.0)])
def test_retouch_full_equals_forward_at_the_parameter_bounds(bound: float, raw_t_min: float) -> None:
    """Raw parameters far past the soft bounds: the ops at their strongest, t_min at its floor or near 1."""
    retoucher = _set(Retoucher(exposure_grid=(3, 4), dehaze_work_size=48), exposure__raw=20 * bound,
                     color__log_gains=20 * bound, color__raw_saturation=20 * bound, color__lut_residual=20 * bound,
                     dehaze__raw_strength=20 * bound, dehaze__airlight_offset=20 * bound, dehaze__raw_t_min=raw_t_min)
    with torch.no_grad():  # opposite gains and alternating LUT residuals: every channel clips somewhere
        retoucher.color.log_gains[0, 1] *= -1
        retoucher.color.lut_residual[..., ::2] *= -1
    image = torch.cat([_photo(150, 200, "Archery2.jpg"), add_haze(random_image(1, 3, 150, 200), 0.9, 0.9)])
    assert _max_difference(retoucher, image, 1 << 12) < TOLERANCE
    for ops in ((op,) for op in OPS):
        single = Retoucher(ops, exposure_grid=(3, 4), dehaze_work_size=48)
        single.load_state_dict({k: v for k, v in retoucher.state_dict().items() if k.startswith(ops[0])})
        assert _max_difference(single, image, 1 << 12) < TOLERANCE


@pytest.mark.parametrize("grid", [(1, 1), (2, 3), (40, 30)])
def test_exposure_grids_are_exact(grid: tuple[int, int]) -> None:
    """Global curves and a grid as large as the image are per-pixel: the banded result is the same to the bit."""
    retoucher = _perturbed(Retoucher(("exposure",), exposure_grid=grid), seed=4)
    image = random_image(1, 3, 40, 30)
    difference = _max_difference(retoucher, image, 30 * 3)
    assert difference < 1e-6 and (grid == (2, 3) or difference == 0)


@pytest.mark.parametrize("size", [(20, 28), (50, 40), (97, 131)])
@pytest.mark.parametrize("refine_radius", [None, 0, 3])
def test_dehaze_stage_at_every_scale_and_refine_radius(size: tuple[int, int], refine_radius: int | None) -> None:
    """At most the work size, up to twice it (refined whole) and larger (banded); with and without refining."""
    haze = Dehaze(work_size=32, refine_radius=refine_radius)
    with torch.no_grad():
        haze.raw_strength.fill_(1.0)
        haze.raw_t_min.fill_(-3.0)
    image = add_haze(random_image(2, 3, *size, seed=5), 0.8, 0.9)
    with torch.no_grad():
        reference = haze(image)
    banded = map_bands(image, [haze.stage(image)], band_pixels=2 * size[1] * 5)
    assert (banded - reference).abs().max() < TOLERANCE


def test_band_seams_are_invisible() -> None:
    """Bands of one row give the image one band gives, and no row differs from its neighbours more than before."""
    photo = add_haze(_photo(300, 400, "Biking1.jpg"), 0.6, 0.85)
    retoucher = _perturbed(Retoucher(exposure_grid=(2, 2), dehaze_work_size=64), seed=6, scale=0.5)
    whole = retoucher.retouch_full(photo, band_pixels=10**9)
    rows = retoucher.retouch_full(photo, band_pixels=1)
    assert (rows - whole).abs().max() < 1e-5
    with torch.no_grad():
        reference = retoucher(photo)
    step = rows.diff(dim=-2).abs().amax(dim=(0, 1, 3))
    assert (step - reference.diff(dim=-2).abs().amax(dim=(0, 1, 3))).abs().max() < TOLERANCE


def test_retouch_full_keeps_the_input_and_float64() -> None:
    retoucher = _perturbed(Retoucher(lut_size=3, dehaze_work_size=16), seed=7)
    image = random_image(1, 3, 33, 47, dtype=torch.float64)
    before = image.clone()
    out = retoucher.double().retouch_full(image, band_pixels=100)
    assert out.dtype == torch.float64 and torch.equal(image, before)
    with torch.no_grad():
        assert (out - retoucher(image)).abs().max() < 1e-9
