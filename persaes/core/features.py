"""Backbone features, computed once per photo and cached on disk.

A photo's features (:class:`Features`) are the backbone's ``Z1``, ``Z2`` and pooled ``Z3``
with the quality branch's image statistics and thumbnail, stored under
``<cache>/<backbone>-<weights>-v<CACHE_VERSION>/<sha[:2]>/<sha256>.safetensors`` (atomic writes), so the
heads train in seconds on cached maps and a photo meets the backbone once.

Example:
    >>> import tempfile
    >>> from persaes.core.scorer import load_scorer
    >>> from persaes.io.images import to_pil
    >>> folder = Path(tempfile.mkdtemp())
    >>> g = torch.Generator().manual_seed(0)
    >>> for name in ("a", "b"):
    ...     to_pil(torch.rand(3, 48, 64, generator=g)).save(folder / f"{name}.png")
    >>> model = load_scorer("generic", device="cpu").model
    >>> cache = FeatureCache(folder / "cache", model.spec.name, "pretrained")   # default: FeatureCache.default
    >>> paths = [folder / "a.png", folder / "missing.png", folder / "b.png"]
    >>> feats, found, problems = extract_features(model, paths, cache)
    >>> feats.z1.shape, feats.z3.shape, feats.stats.shape, found, len(problems)
    (torch.Size([2, 48, 17, 17]), torch.Size([2, 1280]), torch.Size([2, 21]), [0, 2], 1)
    >>> len(list(cache.folder.rglob("*.safetensors")))
    2
    >>> again, _, _ = extract_features(model, paths, cache)   # now read from the cache
    >>> torch.equal(again.z3, feats.z3)
    True
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

from persaes.core.model import AestheticModel, load_square
from persaes.io.images import ImageError
from persaes.io.safetensors_file import SafetensorsFileError, read_safetensors, write_safetensors

CACHE_ENV = "PERSAES_CACHE"
CACHE_VERSION = 5
"""Bumped whenever what :meth:`AestheticModel.features` returns changes (5: 21 image statistics and
the quality branch's thumbnail)."""
_FIELDS = ("z1", "z2", "z3", "stats", "thumb")


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's content (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Features:
    """Stacked features of N photos, the head's inputs.

    ``z1`` N×C1×H1×W1, ``z2`` N×C2×H2×W2, ``z3`` N×C3 (float16 or 32),
    ``stats`` N×21 (:func:`persaes.core.model.image_statistics`, float32) and ``thumb`` N×3×96×96
    (:func:`persaes.core.model.thumbnail`, float16).
    """

    z1: Tensor
    z2: Tensor
    z3: Tensor
    stats: Tensor
    thumb: Tensor

    def __len__(self) -> int:
        return self.z3.shape[0]

    def take(self, index: Tensor | Sequence[int],
             device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Rows ``index`` as float32 tensors, ready for the head."""
        index = torch.as_tensor(index, dtype=torch.long)
        return tuple(t[index].to(device=device, dtype=torch.float32) for t in self.tensors())  # type: ignore[return-value]

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(z1, z2, z3, stats, thumb)``."""
        return tuple(getattr(self, k) for k in _FIELDS)  # type: ignore[return-value]

    def rows(self, index: Tensor | Sequence[int]) -> "Features":
        """The photos ``index``, as ``Features``."""
        index = torch.as_tensor(index, dtype=torch.long)
        return Features(*(t[index] for t in self.tensors()))

    def pooled(self) -> Tensor:
        """Pooled ``Z3`` as float32, N×C3 (the KNN features)."""
        return self.z3.float()

    @staticmethod
    def cat(parts: Sequence["Features"]) -> "Features":
        """Concatenate along photos."""
        return Features(*(torch.cat(column) for column in zip(*(p.tensors() for p in parts))))


class FeatureCache:
    """On-disk cache of per-photo features keyed by content hash, backbone and its weights."""

    def __init__(self, root: str | os.PathLike[str], backbone: str, weights: str) -> None:
        self.folder = Path(root) / f"{backbone}-{weights}-v{CACHE_VERSION}"

    @staticmethod
    def default(backbone: str, weights: str) -> "FeatureCache":
        """The cache under ``$PERSAES_CACHE`` or ``~/.cache/persaes/features``."""
        root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "persaes" / "features"
        return FeatureCache(root, backbone, weights)

    def _file(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.safetensors"

    def get(self, digest: str) -> Features | None:
        """Cached features of one photo (each tensor with a leading 1), or None."""
        try:
            tensors, _ = read_safetensors(self._file(digest), key=None)
        except (FileNotFoundError, SafetensorsFileError):  # not cached, or a damaged entry to recompute
            return None
        if any(k not in tensors for k in _FIELDS):
            return None
        return Features(*(tensors[k] for k in _FIELDS))

    def put(self, digest: str, feats: Features) -> None:
        """Store one photo's features atomically."""
        write_safetensors(self._file(digest), {k: getattr(feats, k) for k in _FIELDS})


@torch.no_grad()
def features_of_tensors(model: AestheticModel, images: Tensor, batch_size: int = 32) -> Features:
    """Features of ``[0, 1]`` RGB images N×3×H×W (float16, on the CPU)."""
    device = next(model.parameters()).device
    parts = []
    for start in range(0, images.shape[0], batch_size):
        z1, z2, z3, stats, thumb = model.features(images[start:start + batch_size].to(device))
        # contiguous, as they come back from the cache: the head then runs the same kernels on
        # fresh and cached features, and a profile does not depend on which it was trained on
        parts.append(Features(*(t.half().cpu().contiguous() for t in (z1, z2, z3)), stats.float().cpu().contiguous(),
                              thumb.half().cpu().contiguous()))
    return Features.cat(parts)


def extract_features(
    model: AestheticModel,
    paths: Sequence[str | os.PathLike[str]],
    cache: FeatureCache | None,
    batch_size: int = 32,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[Features, list[int], list[str]]:
    """Features of image files, from the cache where present.

    Returns:
        ``(features of the readable files, their indices into paths, problems)``; each
        problem is one line naming a file that could not be read.
    """
    size = model.spec.input_size
    found: dict[int, Features] = {}
    problems: list[str] = []
    todo: list[tuple[int, str, Tensor]] = []

    def run_batch() -> None:
        if not todo:
            return
        feats = features_of_tensors(model, torch.cat([t for _, _, t in todo]), batch_size)
        for row, (i, digest, _) in enumerate(todo):
            one = feats.rows([row])
            found[i] = one
            if cache is not None:
                cache.put(digest, one)
        if on_progress is not None:
            on_progress(len(todo))
        todo.clear()

    for i, raw in enumerate(paths):
        path = Path(raw)
        try:
            digest = file_digest(path)
        except OSError as exc:
            problems.append(f"{path}: cannot read ({exc.strerror or exc})")
            continue
        cached = cache.get(digest) if cache is not None else None
        if cached is not None:
            found[i] = cached
            if on_progress is not None:
                on_progress(1)
            continue
        try:
            todo.append((i, digest, load_square(path, size)))
        except ImageError as exc:
            problems.append(str(exc))
            continue
        if len(todo) >= batch_size:
            run_batch()
    run_batch()
    order = sorted(found)
    if not order:
        empty = torch.empty(0)
        return Features(*(empty for _ in _FIELDS)), [], problems
    return Features.cat([found[i] for i in order]), order, problems
