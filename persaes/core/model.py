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
* The concatenated vector goes through dropout and a 10-way linear layer, with no layer
  normalisation: the overall scale of the features carries information, and normalising it
  away ranks held-out photos worse (benchmarks/README.md).
* A quality branch (:class:`QualityNet`), content-free: an MLP on :func:`image_statistics`
  (tone, clipping, saturation, sharpness, haze and colour cast), optionally beside a small
  CNN on a 96×96 thumbnail. Its 10 logits are added to the linear layer's. The frozen
  ImageNet features confuse "bright" or "vivid" with "pretty content"; this branch is where
  the quality prior (an original beats its degraded and its over-processed versions) is
  learned, so it gives the score an optimum at the natural photo (benchmarks/README.md, §2).
* The output is the softmax distribution over scores 1..10 and the score is its mean
  ``Σ i·pᵢ`` in ``[1, 10]``.

Example::

    >>> head = AttentionHead((48, 120, 1280))
    >>> p = head(torch.rand(2, 48, 17, 17), torch.rand(2, 120, 17, 17), torch.rand(2, 1280), torch.rand(2, STATS),
    ...          torch.rand(2, 3, THUMB, THUMB))
    >>> p.shape, bool(torch.allclose(p.sum(1), torch.ones(2)))
    (torch.Size([2, 10]), True)
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
from torch import Tensor, nn

from persaes.core.backbones import BackboneSpec
from persaes.core.taste import TastePart
from persaes.io.images import load_image
from retouch.color import check_image
from retouch.dehaze import dark_channel
from retouch.metrics import colourfulness

BINS = 10
SCORE_RANGE = (1.0, 10.0)
#: Length of the :func:`image_statistics` vector.
STATS = 21
#: Side of the square thumbnail the quality branch's CNN sees.
THUMB = 96
_DARK_PATCH = 15


def distribution_to_score(p: Tensor) -> Tensor:
    """Mean score ``Σ i·pᵢ`` (i = 1..10) of distributions ``p`` (B×10) → ``B`` in ``[1, 10]``."""
    if p.ndim != 2 or p.shape[1] != BINS:
        raise ValueError(f"expected a B×{BINS} distribution, got shape {tuple(p.shape)}")
    bins = torch.arange(1, BINS + 1, dtype=p.dtype, device=p.device)
    return p @ bins


def image_statistics(image: Tensor) -> Tensor:
    """Global tone, colour and haze statistics of ``[0, 1]`` RGB images (differentiable).

    Args:
        image: B×3×H×W in ``[0, 1]`` (the head uses the backbone's square input).

    Returns:
        B×21: luma (Rec. 601) mean and standard deviation; luma quantiles 1, 5, 25, 50, 75,
        95 and 99 %; soft shares of clipped highlights (luma > 0.98) and crushed shadows
        (luma < 0.02); mean saturation ``(max − min) / max``; colourfulness
        (Hasler–Süsstrunk); mean dark channel (15×15 minimum of the channel minimum);
        the three channel means minus their average (the colour cast); the 95 % quantile of
        the saturation; the soft share of pixels with any channel clipped; and the mean
        absolute luma Laplacian and gradient (sharpening and noise).

    Example:
        >>> image_statistics(torch.full((1, 3, 8, 8), 0.5))[0, :2]
        tensor([0.5000, 0.0000])
    """
    check_image(image)
    luma = rgb_to_grayscale(image).flatten(1)
    levels = torch.tensor([0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99], dtype=image.dtype, device=image.device)
    top, bottom = image.amax(dim=1), image.amin(dim=1)
    means = image.mean(dim=(2, 3))
    chroma = ((top - bottom) / top.clamp_min(1e-3)).flatten(1)
    grey = luma.view(-1, 1, *image.shape[2:])
    # the 4-neighbour Laplacian from shifted slices: the same values as a 3×3 convolution, and on a CPU its
    # forward and backward take a tenth of the convolution's time (a one-channel convolution is slow there)
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    laplacian = (padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1] + padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:]
                 - 4 * grey)
    return torch.cat([
        luma.mean(1, keepdim=True),
        luma.std(1, unbiased=False, keepdim=True),
        torch.quantile(luma, levels, dim=1).T,
        torch.sigmoid((luma - 0.98) / 0.005).mean(1, keepdim=True),
        torch.sigmoid((0.02 - luma) / 0.005).mean(1, keepdim=True),
        chroma.mean(1, keepdim=True),
        colourfulness(image)[:, None],
        dark_channel(image, _DARK_PATCH).flatten(1).mean(1, keepdim=True),
        means - means.mean(1, keepdim=True),
        torch.quantile(chroma, 0.95, dim=1, keepdim=True),
        torch.maximum(torch.sigmoid((top - 0.98) / 0.005), torch.sigmoid((0.02 - bottom) / 0.005)).flatten(1).mean(
            1, keepdim=True),
        laplacian.abs().flatten(1).mean(1, keepdim=True),
        ((grey[..., 1:, :] - grey[..., :-1, :]).abs().mean(dim=(1, 2, 3))
         + (grey[..., :, 1:] - grey[..., :, :-1]).abs().mean(dim=(1, 2, 3)))[:, None],
    ], dim=1)


def thumbnail(square: Tensor) -> Tensor:
    """The quality branch's input: B×3×:data:`THUMB`×:data:`THUMB` of ``[0, 1]`` RGB images (differentiable)."""
    check_image(square)
    return resize_square(square, THUMB)


class QualityNet(nn.Module):
    """The content-free quality branch: an MLP on :func:`image_statistics`, optionally beside a thumbnail CNN.

    The standardised statistics are mapped by a two-layer MLP of ``hidden`` units to 10
    logits. With ``width > 0``, four 3×3 stride-2 convolutions (``width``, 2, 4 and 4 ×
    ``width`` channels) on the :data:`THUMB`-pixel thumbnail, mean- and max-pooled, are
    concatenated with the statistics first. The default is the statistics alone: trained on
    a few hundred photos, the CNN learns the photos themselves rather than what was done to
    them, and ranks the degraded versions of new photos worse (benchmarks/README.md, §2).
    The shipped generic weights use width 16: a profile fine-tuned from them follows a
    simulated user's taste further (§3).

    Args:
        width: channels of the first convolution; 0 (default) for no CNN.
        hidden: width of the MLP.

    Shapes:
        ``stats``: B×:data:`STATS` (standardised), ``thumb``: B×3×H×W in ``[0, 1]``. Output: B×10 logits.

    Example:
        >>> QualityNet()(torch.rand(2, STATS), torch.rand(2, 3, THUMB, THUMB)).shape
        torch.Size([2, 10])
    """

    def __init__(self, width: int = 0, hidden: int = 64) -> None:
        super().__init__()
        if width < 0:
            raise ValueError(f"width must be >= 0, got {width}")
        self.conv: nn.Sequential | None = None
        if width:
            widths = (3, width, 2 * width, 4 * width, 4 * width)
            layers: list[nn.Module] = []
            for c_in, c_out in zip(widths, widths[1:]):
                layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
            self.conv = nn.Sequential(*layers)
        self.mlp = nn.Sequential(nn.Linear(STATS + 8 * width, hidden), nn.ReLU(), nn.Linear(hidden, BINS))

    def forward(self, stats: Tensor, thumb: Tensor) -> Tensor:
        """Return the quality branch's B×10 logits of standardised ``stats`` and ``[0, 1]`` thumbnails ``thumb``."""
        if self.conv is None:
            return self.mlp(stats)
        maps = self.conv((thumb - 0.5) / 0.25)
        return self.mlp(torch.cat([stats, maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1))


class AttentionHead(nn.Module):
    """Attention regressor head on backbone features.

    Args:
        channels: channel counts of ``(Z1, Z2, Z3)``.
        hidden: bottleneck width of the attention modules.
        attention: ``False`` for the no-attention ablation (maps fixed at 1).
        dropout: dropout before the final linear layer.
        stats_hidden: width of the quality branch's MLP (:class:`QualityNet`).
        quality_width: channels of the quality branch's first convolution (0: statistics only).
        taste: whether the head carries a profile's :class:`~persaes.core.taste.TastePart`, which tilts
            the distribution by what a person's answers say beyond the generic model.

    Shapes:
        ``z1``: B×C1×H1×W1, ``z2``: B×C2×H2×W2 (any sizes), ``z3``: pooled B×C3,
        ``stats``: B×:data:`STATS` from :func:`image_statistics`, ``thumb``: B×3×:data:`THUMB`×:data:`THUMB`
        from :func:`thumbnail`. Output: B×10 softmax distribution.
    """

    def __init__(
        self, channels: tuple[int, int, int], hidden: int = 32, attention: bool = True, dropout: float = 0.2,
        stats_hidden: int = 64, quality_width: int = 0, taste: bool = False,
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
        self.stats_hidden = stats_hidden
        self.quality_width = quality_width
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c1 + c2 + c3, BINS)
        self.quality = QualityNet(quality_width, stats_hidden)
        self.register_buffer("stats_mean", torch.zeros(STATS))
        self.register_buffer("stats_scale", torch.ones(STATS))
        self.taste: TastePart | None = TastePart(STATS, c3) if taste else None

    @torch.no_grad()
    def standardize_stats(self, stats: Tensor) -> None:
        """Set the quality branch's input standardisation from a sample of statistics (N×17, N ≥ 2)."""
        if stats.ndim != 2 or stats.shape[1] != STATS or stats.shape[0] < 2:
            raise ValueError(f"expected N×{STATS} statistics with N >= 2, got shape {tuple(stats.shape)}")
        self.stats_mean.copy_(stats.mean(0))
        self.stats_scale.copy_(stats.std(0).clamp_min(1e-3))

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
        return torch.cat([v1, v2, z3], dim=1)

    def standardized_stats(self, stats: Tensor) -> Tensor:
        """The quality branch's (and the taste part's style) input: ``stats`` standardised, B×:data:`STATS`."""
        return (stats - self.stats_mean) / self.stats_scale

    def logits(self, z1: Tensor, z2: Tensor, z3: Tensor, stats: Tensor, thumb: Tensor,
               content_grad: float = 1.0) -> Tensor:
        """The generic logits B×10 (content path plus quality branch), before any taste tilt.

        ``content_grad`` scales the gradient that reaches the content path (attention, pooled
        features, final linear layer) without changing the output: 1 trains it fully, 0
        trains only the quality branch. The quality prior's ranking pairs use a fraction
        (:class:`persaes.core.train.GenericSettings`), so that they teach mostly the
        content-free statistics and leave the content path to the rated references.
        """
        logits = self.fc(self.dropout(self.embed(z1, z2, z3)))
        if content_grad != 1.0:
            logits = content_grad * logits + (1.0 - content_grad) * logits.detach()
        return logits + self.quality(self.standardized_stats(stats), thumb)

    def forward(self, z1: Tensor, z2: Tensor, z3: Tensor, stats: Tensor, thumb: Tensor,
                content_grad: float = 1.0) -> Tensor:
        """Score distributions B×10: softmax of :meth:`logits`, tilted by the taste part when there is one."""
        logits = self.logits(z1, z2, z3, stats, thumb, content_grad)
        if self.taste is not None:
            logits = self.taste.tilted(logits, self.standardized_stats(stats), z3)
        return torch.softmax(logits, dim=1)


def resize_square(image: Tensor, size: int) -> Tensor:
    """Resize B×3×H×W images to ``size``×``size`` (bilinear, antialiased when shrinking; differentiable)."""
    if tuple(image.shape[2:]) == (size, size):
        return image
    shrink = image.shape[2] > size or image.shape[3] > size
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def load_square(path: str | os.PathLike[str], size: int) -> Tensor:
    """Load a photo file as the backbone's square input: 1×3×``size``×``size`` in ``[0, 1]``.

    The file is decoded at reduced scale where the format allows, then resized by :func:`resize_square`.
    """
    return resize_square(load_image(path, max_side=2 * size)[None], size)


def preprocess(image: Tensor, spec: BackboneSpec) -> Tensor:
    """Resize ``[0, 1]`` RGB ``B×3×H×W`` to the backbone's square input and normalise.

    Differentiable (bilinear with antialiasing when shrinking), so gradients reach the pixels.
    """
    check_image(image)
    return normalize(resize_square(image, spec.input_size), spec)


def normalize(image: Tensor, spec: BackboneSpec) -> Tensor:
    """Normalise square ``[0, 1]`` RGB input with the backbone's mean and std."""
    mean = torch.tensor(spec.mean, dtype=image.dtype, device=image.device)[None, :, None, None]
    std = torch.tensor(spec.std, dtype=image.dtype, device=image.device)[None, :, None, None]
    return (image - mean) / std


class AestheticModel(nn.Module):
    """Backbone + :class:`AttentionHead`: ``[0, 1]`` RGB images of any size → score distributions.

    Example::

        >>> from persaes.core.backbones import create_backbone, get_spec
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

    def features(self, image: Tensor, content_grad: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(Z1 on Z2's grid, Z2, pooled Z3, image statistics, thumbnail)`` of ``[0, 1]`` RGB images B×3×H×W.

        With ``content_grad`` False the backbone's maps carry no gradient (the backbone runs without
        autograd); the statistics and the thumbnail keep theirs.
        """
        check_image(image)
        square = resize_square(image, self.spec.input_size)
        with torch.set_grad_enabled(content_grad and torch.is_grad_enabled()):
            z1, z2, z3 = self.backbone(normalize(square, self.spec))
            z1, z3 = F.adaptive_avg_pool2d(z1, z2.shape[-2:]), z3.mean(dim=(2, 3))
        return z1, z2, z3, image_statistics(square), thumbnail(square)

    def forward(self, image: Tensor, content_grad: bool = True) -> Tensor:
        """Score distributions B×10 of ``[0, 1]`` RGB images B×3×H×W (``content_grad``: see :meth:`features`)."""
        return self.head(*self.features(image, content_grad))

    def score(self, image: Tensor, content_grad: bool = True) -> Tensor:
        """Mean scores B in ``[1, 10]`` (``content_grad``: see :meth:`features`)."""
        return distribution_to_score(self(image, content_grad))
