"""Retoucher and RetouchNet: identity at init, order, gradients, state round trip, resolution independence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from retouch_testing import image_batches, random_image
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from retouch.color import identity_lut
from retouch.degrade import add_haze
from retouch.pipeline import OPS, Retoucher, RetouchNet


def _smooth(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A smooth image: bilinear upsampling of a 4x6 random image."""
    return F.interpolate(random_image(2, 3, 4, 6, seed=seed), size=(height, width), mode="bilinear",
                         align_corners=False)


def _perturb(module: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            step = scale * (0.1 if "lut" in name else 1.0)
            parameter.add_(step * torch.randn(parameter.shape, generator=generator))


def _downscale(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)


def test_identity_at_init_and_fixed_order() -> None:
    retoucher = Retoucher(("color", "exposure", "dehaze"), exposure_grid=(2, 2), lut_size=5, dehaze_work_size=32)
    assert retoucher.ops == OPS == ("dehaze", "exposure", "color")
    image = random_image(2, 3, 24, 40)
    assert torch.allclose(retoucher(image), image, atol=1e-5)
    assert retoucher.regularization() == 0
    assert Retoucher(["color", "exposure"]).ops == ("exposure", "color")


def test_order_matters_and_is_dehaze_exposure_color() -> None:
    retoucher = Retoucher(("color", "exposure"), lut_size=3)
    with torch.no_grad():
        retoucher.exposure.raw.fill_(1.0)  # brighten
        retoucher.color.lut_residual.copy_(1.0 - 2.0 * identity_lut(3))  # invert
    image = random_image(1, 3, 8, 8)
    out = retoucher(image)
    assert torch.allclose(out, retoucher.color(retoucher.exposure(image)))
    assert not torch.allclose(out, retoucher.exposure(retoucher.color(image)), atol=1e-2)


@pytest.mark.parametrize("ops", [(), ("sharpen",), ("exposure", "blur")])
def test_unknown_ops_raise(ops: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        Retoucher(ops)


def test_gradients_finite_and_regularization() -> None:
    retoucher = Retoucher(exposure_grid=(3, 3), lut_size=5, dehaze_work_size=32)
    _perturb(retoucher)
    hazy = add_haze(_smooth(48, 64), 1.0, 0.9)
    (retoucher(hazy).mean() + retoucher.regularization()).backward()
    for name, parameter in retoucher.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        # t_min only matters where the transmission falls below it
        assert name == "dehaze.raw_t_min" or parameter.grad.abs().sum() > 0, name
    assert retoucher.regularization() > 0


def test_retouch_full_tracks_no_gradients() -> None:
    retoucher = Retoucher(("exposure",))
    _perturb(retoucher)
    out = retoucher.retouch_full(random_image(1, 3, 300, 200))
    assert out.shape == (1, 3, 300, 200) and not out.requires_grad


def test_state_round_trip_through_safetensors() -> None:
    retoucher = Retoucher(OPS, exposure_iterations=3, exposure_grid=(2, 4), lut_size=5)
    _perturb(retoucher)
    state = retoucher.state()
    assert set(state) == {
        "exposure.raw",
        "color.log_gains",
        "color.raw_saturation",
        "color.lut_residual",
        "dehaze.raw_strength",
        "dehaze.airlight_offset",
        "dehaze.raw_t_min",
    }
    restored = Retoucher.from_state(load_safetensors(save_safetensors(state)))
    assert restored.ops == retoucher.ops
    assert restored.exposure.raw.shape == (1, 9, 2, 4) and restored.color.lut_size == 5
    image = _smooth(32, 32)
    assert torch.equal(restored(image), retoucher(image))


def test_from_state_subset_and_errors() -> None:
    retoucher = Retoucher(("color",), lut_size=4)
    assert Retoucher.from_state(retoucher.state()).ops == ("color",)
    with pytest.raises(ValueError):
        Retoucher.from_state({})
    with pytest.raises(ValueError):
        Retoucher.from_state({"sharpen.amount": torch.zeros(1)})
    broken = retoucher.state()
    del broken["color.log_gains"]
    with pytest.raises(ValueError):
        Retoucher.from_state(broken)


def test_global_ops_commute_with_subsampling() -> None:
    retoucher = Retoucher(("exposure", "color"), lut_size=5)
    _perturb(retoucher)
    full = random_image(2, 3, 30, 44)
    assert torch.allclose(retoucher(full)[..., ::2, ::3], retoucher(full[..., ::2, ::3]), atol=1e-6)


@pytest.mark.parametrize(
    ("ops", "kwargs", "tolerance"),
    [
        (("exposure",), {"exposure_grid": (3, 4)}, 0.01),
        (("exposure", "color"), {"exposure_grid": (2, 2), "lut_size": 9}, 0.02),
        (("dehaze",), {"dehaze_work_size": 32}, 0.02),
    ],
)
def test_resize_commutes_with_retouch(ops: tuple[str, ...], kwargs: dict, tolerance: float) -> None:
    # parameters optimised at any size apply to the full image: resize(retouch(full)) ~ retouch(resize(full))
    retoucher = Retoucher(ops, **kwargs)
    _perturb(retoucher)
    full = add_haze(_smooth(96, 144), 1.0, 0.9)
    small = _downscale(full, (48, 72))
    edited = retoucher(small)
    assert (edited - small).abs().max() > 5 * tolerance  # the edit is not trivial
    error = (_downscale(retoucher(full), (48, 72)) - edited).abs()
    assert error.max() < tolerance and error.mean() < tolerance / 10


def test_retouch_net_identity_at_init_and_gradients() -> None:
    net = RetouchNet(exposure_grid=(2, 2), lut_size=5, dehaze_work_size=32)
    image = add_haze(_smooth(40, 56), 1.0, 0.9)
    out = net(image)
    assert out.shape == image.shape
    assert torch.allclose(out, image, atol=1e-5)
    params = net.predict(image)
    assert params["exposure.raw"].shape == (2, 12, 2, 2)
    assert params["color.lut_residual"].shape == (2, 3, 5, 5, 5)
    assert params["dehaze.airlight_offset"].shape == (2, 3)
    (out.mean() + net.retoucher.regularization(params)).backward()
    assert torch.isfinite(net.head.weight.grad).all() and net.head.weight.grad.abs().sum() > 0
    for name, parameter in net.named_parameters():
        assert parameter.grad is None or torch.isfinite(parameter.grad).all(), name


def test_retouch_net_learns_per_image_edits() -> None:
    torch.manual_seed(0)
    net = RetouchNet(("exposure",), input_size=32, width=8)
    optimiser = torch.optim.Adam(net.parameters(), lr=0.01)
    dark, bright = torch.full((1, 3, 16, 16), 0.2), torch.full((1, 3, 16, 16), 0.8)
    images = torch.cat([dark, bright]) + 0.05 * random_image(2, 3, 16, 16)
    for _ in range(40):
        optimiser.zero_grad()
        loss = (net(images).mean(dim=(1, 2, 3)) - 0.5).square().sum()
        loss.backward()
        optimiser.step()
    out = net(images).mean(dim=(1, 2, 3))
    assert out[0] > images[0].mean() + 0.1 and out[1] < images[1].mean() - 0.1
    # it renders at full resolution, whatever size the encoder sees
    assert net(F.interpolate(images, size=(64, 96))).shape == (2, 3, 64, 96)


@settings(max_examples=15, deadline=None)
@given(
    image=image_batches(),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_range(image: torch.Tensor, seed: int) -> None:
    retoucher = Retoucher(exposure_grid=(2, 3), lut_size=3, dehaze_patch=3, dehaze_work_size=16)
    _perturb(retoucher, scale=1.0, seed=seed)
    net = RetouchNet(lut_size=3, dehaze_patch=3, dehaze_work_size=16, input_size=16, width=4)
    _perturb(net, scale=1.0, seed=seed)
    for out in (retoucher(image), net(image)):
        assert out.shape == image.shape
        assert not out.isnan().any() and out.min() >= 0.0 and out.max() <= 1.0
