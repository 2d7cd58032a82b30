from __future__ import annotations

from pathlib import Path

import pytest
import torch

from persaes.core.aesthetic_loss import AestheticLoss, aesthetic_loss
from persaes.core.backbones import create_backbone, get_spec, list_backbones
from persaes.core.model import AestheticModel, AttentionHead
from persaes.core.scorer import Scorer, load_scorer
from persaes.io.checkpoint import model_metadata, save_checkpoint


def _scorer(name: str, taste: bool = False) -> Scorer:
    spec = get_spec(name)
    torch.manual_seed(0)
    model = AestheticModel(spec, create_backbone(name, "random"), AttentionHead(spec.channels, taste=taste))
    if model.head.taste is not None:  # a profile's taste part, with weights
        with torch.no_grad():
            model.head.taste.style.normal_()
            model.head.taste.content.normal_(std=0.1)
    return Scorer(model, model_metadata(model, "random"))


def test_loss_is_ten_minus_score_and_states_its_direction() -> None:
    loss = AestheticLoss("generic", reduction="none", device="cpu")
    x = torch.rand(3, 3, 120, 90)
    assert loss.lower_better is True and loss.score_range == (0.0, 9.0)
    assert torch.allclose(loss(x), 10 - loss.scorer(x), atol=1e-5)
    assert float(AestheticLoss(loss.scorer)(x)) == pytest.approx(float(loss(x).mean()), abs=1e-5)
    assert float(AestheticLoss(loss.scorer, reduction="sum")(x)) == pytest.approx(float(loss(x).sum()), abs=1e-4)


@pytest.mark.parametrize("taste", [False, True], ids=["generic", "profile"])
@pytest.mark.parametrize("name", list_backbones())
def test_gradients_reach_every_pixel_for_every_backbone(name: str, taste: bool) -> None:
    scorer = _scorer(name, taste)
    for fill in (None, 1.0, 0.0):  # saturated inputs too: no clamp on the path
        x = torch.rand(1, 3, 64, 80) if fill is None else torch.full((1, 3, 64, 80), fill)
        x.requires_grad_(True)
        aesthetic_loss(x, scorer).backward()
        assert torch.isfinite(x.grad).all() and (x.grad != 0).float().mean() > 0.9


@pytest.mark.parametrize("taste", [False, True], ids=["generic", "profile"])
def test_without_content_grad_the_gradient_comes_only_from_the_statistics(taste: bool) -> None:
    scorer = _scorer("efficientnet_lite2", taste)
    x = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    full, held = AestheticLoss(scorer, reduction="none"), AestheticLoss(scorer, reduction="none", content_grad=False)
    assert torch.allclose(full(x), held(x), atol=1e-6)  # the same value: the content features still count

    def pixel_grad(loss: AestheticLoss) -> torch.Tensor:
        image = x.clone().requires_grad_(True)
        loss(image).sum().backward()
        return image.grad

    through_stats = pixel_grad(held)
    assert torch.isfinite(through_stats).all() and through_stats.abs().sum() > 0
    assert not torch.allclose(through_stats, pixel_grad(full))
    with torch.no_grad():  # no path from the pixels but the content features: no gradient at all
        scorer.model.head.quality.mlp[-1].weight.zero_()
        if scorer.model.head.taste is not None:
            scorer.model.head.taste.style.zero_()
    assert pixel_grad(full).abs().sum() > 0 and pixel_grad(held).abs().sum() == 0


def test_profile_path_builds_the_loss(pretrained_model, tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "p.safetensors", pretrained_model, model_metadata(pretrained_model, "pretrained"))
    x = torch.rand(1, 3, 50, 50, requires_grad=True)
    loss = AestheticLoss(path, device="cpu")(x)
    loss.backward()
    assert 0 <= float(loss.detach()) <= 9 and torch.isfinite(x.grad).all()


def test_bad_input_shape_fails_loudly() -> None:
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, H, W\), got \(3, 32, 32\)"):
        aesthetic_loss(torch.rand(3, 32, 32), load_scorer("generic", device="cpu"))
