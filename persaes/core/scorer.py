"""The scorer: one entry point from a name or file to aesthetic scores in ``[1, 10]``.

Example:
    >>> import tempfile
    >>> from persaes.io.images import to_pil
    >>> scorer = load_scorer("generic", device="cpu")
    >>> photos = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    >>> scores = scorer.score(photos)                  # tensors, PIL images or files; no gradient
    >>> scores.shape, bool(((scores >= 1) & (scores <= 10)).all())
    (torch.Size([2]), True)
    >>> path = Path(tempfile.mkdtemp()) / "a.png"
    >>> to_pil(photos[0]).save(path)
    >>> scorer.score([path]).shape
    torch.Size([1])
    >>> x = photos.clone().requires_grad_()
    >>> y = scorer(x)                                  # the same scores, differentiable in the pixels
    >>> torch.allclose(y, scores, atol=1e-5)
    True
    >>> y.sum().backward()
    >>> x.grad.shape
    torch.Size([2, 3, 48, 64])
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, Union

import torch
from PIL import Image
from torch import Tensor, nn

from persaes.core.backbones import fold_batchnorm
from persaes.core.device import resolve_device
from persaes.core.model import SCORE_RANGE, AestheticModel, distribution_to_score, load_square, resize_square
from persaes.io.checkpoint import load_model
from persaes.io.images import ImageError, to_tensor

ImageInput = Union[str, os.PathLike, Image.Image, Tensor]

SCORE_DECIMALS = 3
"""Decimals every view of a score shows: ``persaes score``, the compare report, ``scores.csv``."""


def format_score(value: float) -> str:
    """A score as every view shows it, with :data:`SCORE_DECIMALS` decimals.

    Example:
        >>> format_score(8.78951)
        '8.790'
    """
    return f"{value:.{SCORE_DECIMALS}f}"


def weights_dir() -> Path:
    """The folder of shipped weights (the ``persaes.weights`` package data, or ``PERSAES_WEIGHTS_DIR``)."""
    override = os.environ.get("PERSAES_WEIGHTS_DIR")
    if override:
        return Path(override)
    return Path(str(resources.files("persaes.weights")))


def resolve_weights(name_or_path: str | os.PathLike[str]) -> Path:
    """A shipped weights name (``"generic"``) or a path → the ``.safetensors`` file."""
    text = str(name_or_path)
    if os.sep not in text and not text.endswith(".safetensors"):
        return weights_dir() / f"{text}.safetensors"
    return Path(text)


class Scorer(nn.Module):
    """Scores ``[0, 1]`` RGB images; differentiable with respect to the input pixels.

    The model is frozen for scoring, in place: eval mode, no parameter gradients, and its backbone's
    batch norms folded into its convolutions (:func:`~persaes.core.backbones.fold_batchnorm`).

    Attributes:
        lower_better: ``False``: higher scores are better.
        score_range: ``(1, 10)``.
        metadata: the checkpoint's metadata.
    """

    lower_better = False
    score_range = SCORE_RANGE

    def __init__(self, model: AestheticModel, metadata: dict[str, Any]) -> None:
        super().__init__()
        self.model = model.eval()
        self.metadata = metadata
        for p in self.model.parameters():
            p.requires_grad_(False)
        fold_batchnorm(self.model.backbone)

    @property
    def device(self) -> torch.device:
        """The device the model's parameters are on."""
        return next(self.model.parameters()).device

    def forward(self, images: Tensor, content_grad: bool = True) -> Tensor:
        """Scores (shape B, in ``[1, 10]``) of ``[0, 1]`` RGB images B×3×H×W; keeps the graph.

        With ``content_grad`` False the gradient reaches the images only through the content-free image
        statistics (the quality branch, and a profile's style part): the backbone's features are
        evaluated but not differentiated (:meth:`~persaes.core.model.AestheticModel.features`).
        """
        return self.model.score(images.to(self.device), content_grad)

    def distribution(self, images: Tensor) -> Tensor:
        """Score distributions B×10 of ``[0, 1]`` RGB images B×3×H×W."""
        return self.model(images.to(self.device))

    def _as_input_tensor(self, item: ImageInput) -> Tensor:
        size = self.model.spec.input_size
        if isinstance(item, Tensor):
            return resize_square((item if item.ndim == 4 else item[None]).float(), size)
        if isinstance(item, Image.Image):
            return resize_square(to_tensor(item)[None], size)
        return load_square(item, size)

    @torch.no_grad()
    def score(self, inputs: ImageInput | Sequence[ImageInput], batch_size: int = 32) -> Tensor:
        """Scores of paths, PIL images or tensors (no gradient), shape N.

        A file's score is that of the file as :func:`~persaes.core.model.load_square` reads it (decoded at
        reduced scale where the format allows): the one score of a photo file, which ``persaes score``, the
        compare report and :meth:`iter_scores` give. A tensor or PIL image of the same photo (decoded in full,
        or resized first) can score a little differently, so views that show a file's score pass the file.

        Raises:
            ImageError: a file is not a readable image (use :meth:`iter_scores` to carry on).
        """
        items = [inputs] if isinstance(inputs, (str, os.PathLike, Image.Image)) else list(inputs)
        if len(items) == 1 and isinstance(items[0], Tensor) and items[0].ndim == 4:
            items = list(items[0])
        out = []
        for start in range(0, len(items), batch_size):
            batch = torch.cat([self._as_input_tensor(x) for x in items[start:start + batch_size]])
            out.append(distribution_to_score(self.distribution(batch)).cpu())
        return torch.cat(out) if out else torch.empty(0)

    @torch.no_grad()
    def iter_scores(self, paths: Iterable[str | os.PathLike[str]], batch_size: int = 32
                    ) -> Iterator[tuple[Path, float | None, str | None]]:
        """``(path, score, None)`` or ``(path, None, error)`` per file, in order; bad files don't stop it."""
        pending: list[tuple[Path, Tensor]] = []

        def flush() -> Iterator[tuple[Path, float | None, str | None]]:
            if pending:
                scores = distribution_to_score(self.distribution(torch.cat([t for _, t in pending]))).cpu()
                yield from ((p, float(s), None) for (p, _), s in zip(pending, scores))
                pending.clear()

        for raw in paths:
            path = Path(raw)
            try:
                pending.append((path, self._as_input_tensor(path)))
            except ImageError as exc:
                yield from flush()
                yield path, None, str(exc)
                continue
            if len(pending) >= batch_size:
                yield from flush()
        yield from flush()


def load_scorer(name_or_path: str | os.PathLike[str] = "generic", device: str | torch.device = "auto",
                backbone_weights: str | None = None) -> Scorer:
    """Load a shipped scorer by name (``"generic"``) or a weights/profile ``.safetensors`` file.

    Args:
        name_or_path: ``"generic"`` or a path.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        backbone_weights: the backbone's own weights if not the declared ones (e.g. a
            torchvision VGG16 file).
    """
    model, meta = load_model(resolve_weights(name_or_path), backbone_weights=backbone_weights,
                             device=resolve_device(device))
    return Scorer(model, meta)
