"""Protocol degradations and random edits: determinism, parameter ranges, direction of the change."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from kornia.color import rgb_to_grayscale
from retouch_testing import image_batches

from retouch.degrade import (
    DEGRADATIONS,
    EDITS,
    OVER_PROCESSING,
    add_haze,
    degrade,
    expose,
    over_process,
    random_edit,
    s_curve,
    unsharp_mask,
)
from retouch.dehaze import dark_channel
from retouch.metrics import colourfulness


def _photo(batch: int = 4, seed: int = 0) -> torch.Tensor:
    """A smooth, colourful, mid-tone test image."""
    small = torch.rand(batch, 3, 4, 4, generator=torch.Generator().manual_seed(seed)) * 0.7 + 0.15
    return F.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False)


def _luma(image: torch.Tensor) -> torch.Tensor:
    return rgb_to_grayscale(image).mean(dim=(1, 2, 3))


@pytest.mark.parametrize("kind", DEGRADATIONS)
def test_deterministic_per_seed(kind: str) -> None:
    image = _photo()
    first, params = degrade(image, kind, 7)
    second, params_again = degrade(image, kind, torch.Generator().manual_seed(7))
    assert torch.equal(first, second)
    for key, value in params.items():
        assert value == params_again[key] if isinstance(value, list) else torch.equal(value, params_again[key])
    other, _ = degrade(image, kind, 8)
    assert not torch.equal(first, other)
    assert first.shape == image.shape and first.min() >= 0 and first.max() <= 1


def test_generator_state_advances() -> None:
    generator = torch.Generator().manual_seed(0)
    first, _ = degrade(_photo(), "under", generator)
    second, _ = degrade(_photo(), "under", generator)
    assert not torch.equal(first, second)


def test_under_and_over_exposure() -> None:
    image = _photo()
    dark, params = degrade(image, "under", 0)
    assert ((params["ev"] <= -0.7) & (params["ev"] >= -1.7)).all()
    assert (dark <= image + 1e-6).all() and (_luma(dark) < 0.85 * _luma(image)).all()
    bright, params = degrade(image, "over", 0)
    assert ((params["ev"] >= 0.7) & (params["ev"] <= 1.7)).all()
    assert (bright >= image - 1e-6).all() and (_luma(bright) > 1.15 * _luma(image)).all()


def test_expose_is_linear_light() -> None:
    image = torch.full((1, 3, 2, 2), 0.5)
    assert torch.allclose(expose(image, 0.0), image, atol=1e-6)
    # sRGB 0.5 is linear 0.214; one stop down is 0.107, i.e. sRGB 0.361
    assert torch.allclose(expose(image, -1.0), torch.full_like(image, 0.3613), atol=1e-3)
    assert torch.allclose(expose(torch.ones(1, 3, 2, 2), 1.0), torch.ones(1, 3, 2, 2))


def test_color_degradation() -> None:
    image = _photo(batch=32)
    out, params = degrade(image, "color", 3)
    modes = params["mode"]
    assert set(modes) == {"cast", "desaturate", "both"}
    gains, factor = params["gains"], params["saturation"]
    for i, mode in enumerate(modes):
        if mode in ("cast", "both"):
            assert gains[i].max() > 1.0 and gains[i].min() < 1.0
            assert ((gains[i] >= 0.7) & (gains[i] <= 1.3)).all()
        else:
            assert torch.equal(gains[i], torch.ones(3))
        if mode in ("desaturate", "both"):
            assert 0.3 <= factor[i] <= 0.7
            assert colourfulness(out[i : i + 1]) < colourfulness(image[i : i + 1])
        else:
            assert factor[i] == 1.0
            # the cast moves the channel means apart in the direction of the gains
            shift = out[i].mean(dim=(1, 2)) - image[i].mean(dim=(1, 2))
            assert shift[gains[i].argmax()] > 0 and shift[gains[i].argmin()] < 0


def test_haze_degradation() -> None:
    image = _photo()
    hazy, params = degrade(image, "haze", 0)
    assert ((params["airlight"] >= 0.8) & (params["airlight"] <= 1.0)).all()
    assert ((params["beta"] >= 0.6) & (params["beta"] <= 1.6)).all()
    assert (dark_channel(hazy).mean(dim=(1, 2, 3)) > dark_channel(image).mean(dim=(1, 2, 3)) + 0.05).all()
    assert (colourfulness(hazy) < colourfulness(image)).all()


def test_add_haze_depth_runs_by_row() -> None:
    image = torch.zeros(1, 3, 5, 4)
    hazy = add_haze(image, 1.0, 0.9)
    rows = hazy[0, 0, :, 0]
    assert torch.equal(hazy[0, 0], rows.view(5, 1).expand(5, 4))  # constant along each row
    assert (rows.diff() < 0).all()  # hazier towards the top
    assert rows[-1] == 0 and rows[0] == pytest.approx(0.9 * (1 - torch.exp(torch.tensor(-1.0))).item())
    assert torch.equal(add_haze(image[..., :1, :], 1.0, 0.9), torch.full((1, 3, 1, 4), rows[0].item()))


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError):
        degrade(_photo(), "blur", 0)
    with pytest.raises(ValueError):
        degrade(_photo(), "under", 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        degrade(torch.rand(3, 8, 8), "under", 0)


def test_random_edit() -> None:
    image = _photo(batch=12)
    edited, description = random_edit(image, 5)
    again, _ = random_edit(image, 5)
    assert torch.equal(edited, again)
    assert edited.shape == image.shape and edited.min() >= 0 and edited.max() <= 1
    kinds = description["kind"]
    assert set(kinds) == set(EDITS)
    for i, kind in enumerate(kinds):
        difference = (edited[i] - image[i]).abs().mean()
        assert 0.003 < difference < 0.15, (kind, difference)
        ev, gains = description["ev"][i], description["gains"][i]
        saturation, strength = description["saturation"][i], description["dehaze"][i]
        if kind == "exposure":
            assert 0.2 <= abs(ev) <= 0.6
            assert (_luma(edited[i : i + 1]) > _luma(image[i : i + 1])) == (ev > 0)
        else:
            assert ev == 0
        if kind == "color":
            assert gains.max() > 1 > gains.min() and gains.min() >= 0.9 and gains.max() <= 1.1
            assert 0.7 <= saturation <= 1.3
        else:
            assert torch.equal(gains, torch.ones(3)) and saturation == 1
        if kind == "haze":
            assert 0.2 <= abs(strength) <= 0.6
            haze_change = dark_channel(edited[i : i + 1]).mean() - dark_channel(image[i : i + 1]).mean()
            assert (haze_change < 0) == (strength > 0)
        else:
            assert strength == 0


@settings(max_examples=15, deadline=None)
@given(
    image=image_batches(),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_range(image: torch.Tensor, seed: int) -> None:
    outputs = [degrade(image, kind, seed)[0] for kind in DEGRADATIONS] + [random_edit(image, seed)[0]]
    for out in outputs:
        assert out.shape == image.shape
        assert not out.isnan().any() and out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("kind", OVER_PROCESSING)
def test_over_processing_is_seeded_and_stronger_at_the_strong_level(kind: str) -> None:
    image = _photo(batch=3)
    mild, params = over_process(image, kind, "mild", 5)
    again, _ = over_process(image, kind, "mild", 5)
    strong, _ = over_process(image, kind, "strong", 5)
    assert torch.equal(mild, again) and params["params"].shape[0] == 3
    assert ((mild >= 0) & (mild <= 1)).all() and ((strong >= 0) & (strong <= 1)).all()
    change = (mild - image).abs().mean(dim=(1, 2, 3))
    assert (change > 1e-3).all() and (strong - image).abs().mean() > change.mean()


def test_over_processing_moves_each_kind_its_own_way() -> None:
    image = _photo(batch=2)
    luma = rgb_to_grayscale(image).mean()
    assert rgb_to_grayscale(over_process(image, "brighten", "mild", 0)[0]).mean() > luma
    assert rgb_to_grayscale(over_process(image, "darken", "mild", 0)[0]).mean() < luma
    assert (colourfulness(over_process(image, "over-saturate", "mild", 0)[0]) > colourfulness(image)).all()
    assert (colourfulness(over_process(image, "desaturate", "mild", 0)[0]) < colourfulness(image)).all()
    contrast = rgb_to_grayscale(over_process(image, "over-contrast", "mild", 0)[0]).std()
    assert contrast > rgb_to_grayscale(image).std()
    assert dark_channel(over_process(image, "over-dehaze", "strong", 0)[0]).mean() < dark_channel(image).mean()
    step = torch.zeros(1, 3, 16, 16)
    step[..., 8:] = 0.6
    step += 0.2
    sharp = unsharp_mask(step, 2.0)
    assert sharp[..., 7].mean() < 0.2 and sharp[..., 8].mean() > 0.8  # overshoot on both sides of the edge


def test_s_curve_keeps_ends_and_midpoint() -> None:
    ramp = torch.linspace(0, 1, 11).view(1, 1, 1, 11).expand(1, 3, 1, 11)
    out = s_curve(ramp, 6.0)
    assert torch.allclose(out[..., [0, 5, 10]], ramp[..., [0, 5, 10]], atol=1e-6)
    assert (out[..., 1:5] < ramp[..., 1:5]).all() and (out[..., 6:10] > ramp[..., 6:10]).all()
    with pytest.raises(ValueError, match="gain"):
        s_curve(ramp, 0.0)
    with pytest.raises(ValueError, match="kind"):
        over_process(ramp, "posterize", "mild", 0)
    with pytest.raises(ValueError, match="level"):
        over_process(ramp, "darken", "extreme", 0)
