"""Retouching one photo: fitted edits, a profile's edit on top of the base retouch, greyscale photos."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from persaes.core.retouching import TASTE_FIDELITY_SHARE, is_greyscale, retouch_image, taste_settings
from retouch import RetouchNet
from retouch.metrics import neutral_chroma
from retouch.optimize import EditSettings

FAST = EditSettings(steps=1, work_size=96)


def test_is_greyscale_allows_8_bit_rounding_only() -> None:
    grey = torch.rand(1, 1, 6, 5).expand(1, 3, 6, 5).clone()
    assert is_greyscale(grey)
    grey[0, 2, 1, 1] += 1 / 255  # what JPEG rounding leaves in a grey photo
    assert is_greyscale(grey)
    grey[0, 0, 3, 2] += 4 / 255
    assert not is_greyscale(grey)


def test_a_stacked_greyscale_photo_stays_grey_at_every_stage() -> None:
    torch.manual_seed(0)
    image = (torch.rand(1, 1, 40, 56) * 0.5).expand(1, 3, 40, 56).contiguous()
    settings = EditSettings(steps=5, lr=0.03, work_size=32, fidelity=0.5)
    stacked = retouch_image(image, _warmer, ("color",), settings, base=_brighter)
    assert is_greyscale(stacked) and torch.equal(stacked[:, 0], stacked[:, 2])
    assert stacked.mean() > image.mean() + 0.02  # the base's brightening stays


def _warmer(images: torch.Tensor) -> torch.Tensor:
    return 5.0 * (images[:, 2].mean() - images[:, 0].mean())


def _brighter(images: torch.Tensor) -> torch.Tensor:
    return 5.0 * (1.0 - images.mean())


def _indifferent(images: torch.Tensor) -> torch.Tensor:
    return images.sum() * 0.0


def test_a_profile_edit_on_top_of_the_base_keeps_the_base_correction() -> None:
    torch.manual_seed(0)
    image = torch.rand(1, 3, 40, 56) * 0.5
    settings = EditSettings(steps=5, work_size=32, fidelity=0.5)
    brightened = retouch_image(image, _brighter, ("exposure",), settings)
    alone = retouch_image(image, _indifferent, ("exposure",), settings)
    stacked = retouch_image(image, _indifferent, ("exposure",), settings, base=_brighter)
    assert brightened.mean() > image.mean() + 0.02
    assert torch.allclose(alone, image, atol=1e-5)  # no taste and no base: the identity
    assert torch.allclose(stacked, brightened, atol=1e-5)  # no taste on top: the base's edit stays
    eager = retouch_image(image, _brighter, ("exposure",), settings, base=_brighter)
    assert eager.mean() > brightened.mean()  # a taste on top moves further from the base's result


def _mildly_brighter(images: torch.Tensor) -> torch.Tensor:
    return 3.0 * (1.0 - images.mean())


def test_a_profile_edit_on_top_of_the_base_is_held_with_a_share_of_the_fidelity() -> None:
    torch.manual_seed(0)
    image = torch.rand(1, 3, 40, 56) * 0.5
    settings = EditSettings(steps=5, work_size=32, fidelity=2.0)
    # the base keeps the photo; held with the full fidelity weight, the taste would not move it either
    stacked = retouch_image(image, _mildly_brighter, ("exposure",), settings, base=_indifferent)
    shared = taste_settings(settings)
    assert shared == replace(settings, fidelity=settings.fidelity * TASTE_FIDELITY_SHARE, loss_odds=9.0)
    assert TASTE_FIDELITY_SHARE < 0.75
    assert torch.allclose(stacked, retouch_image(image, _mildly_brighter, ("exposure",), shared), atol=1e-5)
    assert stacked.mean() > image.mean() + 0.02
    assert torch.allclose(retouch_image(image, _mildly_brighter, ("exposure",), settings), image, atol=1e-5)


def test_a_retouching_model_takes_no_base() -> None:
    with pytest.raises(ValueError, match="one pass"):
        retouch_image(torch.rand(1, 3, 8, 8), _brighter, ("exposure",), FAST, net=RetouchNet(("exposure",)),
                      base=_brighter)


def test_a_retouching_models_edit_is_held_to_the_limits_as_a_fitted_one() -> None:
    net = RetouchNet(("exposure", "color"))
    with torch.no_grad():
        net.retoucher.color.log_gains.copy_(torch.tensor([[0.3, 0.0, -0.3]]))  # learned a strong warm cast
        net.retoucher.exposure.raw.fill_(0.2)  # and to brighten
    g = torch.Generator().manual_seed(1)
    grey = 0.3 + 0.3 * torch.rand(1, 1, 48, 64, generator=g)
    photo = grey * torch.tensor([1.03, 1.0, 0.97]).view(1, 3, 1, 1)  # near-neutral, not greyscale
    with torch.no_grad():
        raw = net(photo)
    held = retouch_image(photo, _brighter, ("exposure", "color"), FAST, net=net)
    assert float(neutral_chroma(raw, photo)) > 10
    assert float(neutral_chroma(held, photo)) <= FAST.neutral_limit + 1e-3
    assert float(held.mean()) > float(photo.mean()) + 0.02  # the tone edit stays
    free = replace(FAST, neutral_limit=float("inf"), clip_limit=float("inf"))  # no limits: the network's own pass
    assert torch.allclose(retouch_image(photo, _brighter, ("exposure", "color"), free, net=net), raw, atol=1e-5)


def test_is_greyscale_refuses_what_is_not_an_image_batch() -> None:
    with pytest.raises(ValueError, match="shape"):
        is_greyscale(torch.rand(3, 8, 8))


def test_an_edit_on_top_of_a_retouch_is_guarded_against_the_untouched_photo() -> None:
    # the base retouch already cast the photo's greys beyond "near-neutral": held to the cast photo, a taste
    # for warmth keeps that cast; held to the untouched greys, the edit on top takes it back
    g = torch.Generator().manual_seed(0)
    original = (0.35 + 0.3 * torch.rand(1, 1, 40, 56, generator=g)).expand(1, 3, 40, 56).contiguous()
    cast = (original * torch.tensor([1.12, 1.0, 0.88]).view(1, 3, 1, 1)).clamp(0, 1)
    settings = taste_settings(EditSettings(steps=10, work_size=32))
    free = retouch_image(cast, _warmer, ("color",), settings)
    held = retouch_image(cast, _warmer, ("color",), settings, original=original)
    assert float(neutral_chroma(cast, original)) > 5  # the base's cast: those greys are no longer near-neutral
    assert float(neutral_chroma(free, original)) > 5 > float(neutral_chroma(held, original))
    with pytest.raises(ValueError, match="originals"):
        retouch_image(cast, _warmer, ("color",), settings, original=original[..., :20])
