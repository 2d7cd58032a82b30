"""The paper's aesthetic regressor: two attention modules over backbone maps, a 10-way head.

Design choices where the paper is silent (documented here, switchable where benchmarked):

* The attention modules are 1×1-conv bottlenecks of ``hidden`` channels. ``A2`` is computed
  from ``Z2`` plus global context from ``Z3`` (its pooled vector, projected and broadcast);
  ``A1`` from ``Z1`` plus context from ``Z2`` (projected, upsampled bilinearly) and from the
  same ``Z3`` vector. Each ends in a 1-channel sigmoid map, so ``A·Z`` weights every position.
* ``Z1`` is average-pooled onto ``Z2``'s grid (stride 16) before the head: ``A1`` is then
  computed at stride 16, which keeps the feature cache small and the heads fast enough to
  train on a CPU in seconds (``Z1`` keeps its own, mid-level channels).
* Pooling: ``Z1' = A1·Z1`` and ``Z2' = A2·Z2`` are average-pooled; ``Z3`` is average-pooled
  (so only the pooled ``Z3`` vector is ever needed, which keeps the feature cache small).
* ``attention=False`` replaces both maps by ones (the benchmark's ``no-attention`` ablation).
* The concatenated vector is layer-normalised (its three parts have very different scales),
  then goes through dropout and a 10-way linear layer; the output is the
  softmax distribution over scores 1..10 and the score is its mean ``Σ i·pᵢ`` in ``[1, 10]``.

Example::

    >>> head = AttentionHead((48, 120, 1280))
    >>> p = head(torch.rand(2, 48, 33, 33), torch.rand(2, 120, 17, 17), torch.rand(2, 1280))
    >>> p.shape, bool(torch.allclose(p.sum(1), torch.ones(2)))
    (torch.Size([2, 10]), True)
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from persaes.backbones import BackboneSpec
from persaes.images import load_image

BINS = 10
SCORE_RANGE = (1.0, 10.0)


def distribution_to_score(p: Tensor) -> Tensor:
    """Mean score ``Σ i·pᵢ`` (i = 1..10) of distributions ``p`` (B×10) → ``B`` in ``[1, 10]``."""
    if p.ndim != 2 or p.shape[1] != BINS:
        raise ValueError(f"expected a B×{BINS} distribution, got shape {tuple(p.shape)}")
    bins = torch.arange(1, BINS + 1, dtype=p.dtype, device=p.device)
    return p @ bins


class AttentionHead(nn.Module):
    """Attention regressor head on backbone features.

    Args:
        channels: channel counts of ``(Z1, Z2, Z3)``.
        hidden: bottleneck width of the attention modules.
        attention: ``False`` for the no-attention ablation (maps fixed at 1).
        dropout: dropout before the final linear layer.

    Shapes:
        ``z1``: B×C1×H1×W1, ``z2``: B×C2×H2×W2 (any sizes), ``z3``: pooled B×C3.
        Output: B×10 softmax distribution.
    """

    def __init__(
        self, channels: tuple[int, int, int], hidden: int = 32, attention: bool = True, dropout: float = 0.2
    ) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.channels = tuple(channels)
        self.hidden = hidden
        self.attention = attention
        if attention:
            self.context = nn.Linear(c3, hidden)
            self.a2_in = nn.Conv2d(c2, hidden, 1)
            self.a2_out = nn.Conv2d(hidden, 1, 1)
            self.a1_in = nn.Conv2d(c1, hidden, 1)
            self.a1_from_z2 = nn.Conv2d(c2, hidden, 1)
            self.a1_out = nn.Conv2d(hidden, 1, 1)
        self.norm = nn.LayerNorm(c1 + c2 + c3)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c1 + c2 + c3, BINS)

    def attention_maps(self, z1: Tensor, z2: Tensor, z3: Tensor) -> tuple[Tensor, Tensor]:
        """``A1`` (B×1×H1×W1) and ``A2`` (B×1×H2×W2), values in (0, 1); ones without attention."""
        if not self.attention:
            return z1.new_ones(z1.shape[0], 1, *z1.shape[2:]), z2.new_ones(z2.shape[0], 1, *z2.shape[2:])
        ctx = self.context(z3)[:, :, None, None]
        a2 = torch.sigmoid(self.a2_out(F.relu(self.a2_in(z2) + ctx)))
        from_z2 = self.a1_from_z2(z2)
        if from_z2.shape[2:] != z1.shape[2:]:
            from_z2 = F.interpolate(from_z2, size=z1.shape[2:], mode="bilinear", align_corners=False)
        a1 = torch.sigmoid(self.a1_out(F.relu(self.a1_in(z1) + from_z2 + ctx)))
        return a1, a2

    def embed(self, z1: Tensor, z2: Tensor, z3: Tensor) -> Tensor:
        """The concatenated attended, pooled feature vector, B×(C1+C2+C3)."""
        if z3.ndim != 2:
            raise ValueError(f"z3 must be pooled (B×C3), got shape {tuple(z3.shape)}")
        a1, a2 = self.attention_maps(z1, z2, z3)
        v1 = (a1 * z1).mean(dim=(2, 3))
        v2 = (a2 * z2).mean(dim=(2, 3))
        return self.norm(torch.cat([v1, v2, z3], dim=1))

    def forward(self, z1: Tensor, z2: Tensor, z3: Tensor) -> Tensor:
        return torch.softmax(self.fc(self.dropout(self.embed(z1, z2, z3))), dim=1)


def resize_square(image: Tensor, size: int) -> Tensor:
    """Resize B×3×H×W images to ``size``×``size`` (bilinear, antialiased when shrinking; differentiable)."""
    if tuple(image.shape[2:]) == (size, size):
        return image
    shrink = image.shape[2] > size or image.shape[3] > size
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def load_square(path: str | os.PathLike[str], size: int) -> Tensor:
    """A photo file as the backbone's square input: 1×3×``size``×``size`` in ``[0, 1]``
    (decoded at reduced scale where the format allows, then :func:`resize_square`)."""
    return resize_square(load_image(path, max_side=2 * size)[None], size)


def preprocess(image: Tensor, spec: BackboneSpec) -> Tensor:
    """Resize ``[0, 1]`` RGB ``B×3×H×W`` to the backbone's square input and normalise.

    Differentiable (bilinear with antialiasing when shrinking), so gradients reach the pixels.
    """
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"expected a B×3×H×W RGB tensor, got shape {tuple(image.shape)}")
    image = resize_square(image, spec.input_size)
    mean = torch.tensor(spec.mean, dtype=image.dtype, device=image.device)[None, :, None, None]
    std = torch.tensor(spec.std, dtype=image.dtype, device=image.device)[None, :, None, None]
    return (image - mean) / std


class AestheticModel(nn.Module):
    """Backbone + :class:`AttentionHead`: ``[0, 1]`` RGB images of any size → score distributions.

    Example::

        >>> from persaes.backbones import create_backbone, get_spec
        >>> spec = get_spec("efficientnet_lite2")
        >>> model = AestheticModel(spec, create_backbone(spec.name, "random"), AttentionHead(spec.channels))
        >>> model.score(torch.rand(1, 3, 300, 200)).shape
        torch.Size([1])
    """

    def __init__(self, spec: BackboneSpec, backbone: nn.Module, head: AttentionHead) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        self.head = head

    def features(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(Z1 on Z2's grid, Z2, pooled Z3)`` of ``[0, 1]`` RGB images B×3×H×W."""
        z1, z2, z3 = self.backbone(preprocess(image, self.spec))
        return F.adaptive_avg_pool2d(z1, z2.shape[-2:]), z2, z3.mean(dim=(2, 3))

    def forward(self, image: Tensor) -> Tensor:
        """Score distributions B×10 of ``[0, 1]`` RGB images B×3×H×W."""
        return self.head(*self.features(image))

    def score(self, image: Tensor) -> Tensor:
        """Mean scores B in ``[1, 10]``."""
        return distribution_to_score(self(image))
