"""Exact cosine k-nearest-neighbour search over reference features.

The paper trains its generic regressor on the K = 50 nearest reference photos of each
album photo. ``KnnIndex`` holds L2-normalised reference features and scans them in
chunks, keeping a running top-k, so 255,000 × 1280 references need no more than one
chunk of similarities at a time per query batch.

Saved as one safetensors file: tensor ``features`` (N×D float32, normalised) and the
metadata key ``persaes_knn`` holding JSON ``{"format": 1, "ids": [...], "dim": D,
"backbone": "..."}``.

Example::

    index = KnnIndex(ref_features, ref_ids, backbone="efficientnet_lite2")
    scores, neighbours = index.search(album_features, k=50)   # Q×50 each
    train_rows = index.union(album_features, k=50)             # sorted unique indices
    index.save("cache/ava_knn.safetensors")
    index = KnnIndex.load("cache/ava_knn.safetensors")
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from persaes.io.safetensors_file import read_safetensors, write_safetensors

__all__ = ["KnnIndex"]

_META_KEY = "persaes_knn"
_FORMAT = 1


def _normalise(x: torch.Tensor, what: str) -> torch.Tensor:
    """Rows of ``x`` (2-D, finite, no zero rows) scaled to unit L2 norm, float32."""
    if x.dim() != 2:
        raise ValueError(f"KnnIndex: {what} must be 2-D (rows × dim), got shape {tuple(x.shape)}")
    x = x.detach().to(device="cpu", dtype=torch.float32)
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)  # NaN/inf in a row make its norm so
    bad = (~torch.isfinite(norms.squeeze(1))).nonzero()
    if bad.numel():
        raise ValueError(f"KnnIndex: {what} row {int(bad[0])} has NaN or infinite values")
    zero = (norms.squeeze(1) == 0).nonzero()
    if zero.numel():
        raise ValueError(f"KnnIndex: {what} row {int(zero[0])} is all zeros (no direction)")
    return x / norms


class KnnIndex:
    """Exact cosine-similarity search over N reference feature vectors.

    Args:
        features: tensor N×D (N >= 1), any float dtype; stored L2-normalised float32.
        ids: N unique reference ids (row i of ``features`` is ``ids[i]``).
        backbone: name of the feature extractor, saved so a cache can be checked.
        chunk_size: references scored at a time; memory ~ Q × chunk_size floats.

    Example::

        index = KnnIndex(torch.randn(1000, 64), [f"r{i}" for i in range(1000)])
        scores, idx = index.search(torch.randn(3, 64), k=5)   # both 3×5, scores in [-1, 1]
    """

    def __init__(
        self,
        features: torch.Tensor,
        ids: list[str],
        backbone: str = "",
        chunk_size: int = 65536,
    ) -> None:
        if features.dim() == 2 and features.shape[0] == 0:
            raise ValueError("KnnIndex: no reference features (N = 0)")
        self.features = _normalise(features, "features")
        if len(ids) != self.features.shape[0]:
            raise ValueError(f"KnnIndex: {self.features.shape[0]} feature rows but {len(ids)} ids")
        if len(set(ids)) != len(ids):
            raise ValueError("KnnIndex: ids contain duplicates")
        if chunk_size < 1:
            raise ValueError(f"KnnIndex: chunk_size must be >= 1, got {chunk_size}")
        self.ids = list(ids)
        self.backbone = backbone
        self.chunk_size = chunk_size

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return self.features.shape[1]

    def search(self, queries: torch.Tensor, k: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
        """The k most cosine-similar references of each query, best first.

        Args:
            queries: tensor Q×D.
            k: neighbours per query, >= 1; clamped to N.

        Returns:
            (scores Q×k float32 in [-1, 1] descending per row, indices Q×k long in [0, N)).

        Example::

            scores, idx = index.search(album_features, k=50)
        """
        if k < 1:
            raise ValueError(f"KnnIndex.search: k must be >= 1, got {k}")
        q = _normalise(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"KnnIndex.search: queries have dim {q.shape[1]}, index has {self.dim}")
        k = min(k, len(self))
        best_scores = torch.empty(q.shape[0], 0)
        best_idx = torch.empty(q.shape[0], 0, dtype=torch.long)
        for start in range(0, len(self), self.chunk_size):
            sims = q @ self.features[start : start + self.chunk_size].T
            scores, idx = sims.topk(min(k, sims.shape[1]), dim=1)
            best_scores = torch.cat([best_scores, scores], dim=1)
            best_idx = torch.cat([best_idx, idx + start], dim=1)
            best_scores, keep = best_scores.topk(min(k, best_scores.shape[1]), dim=1)
            best_idx = best_idx.gather(1, keep)
        return best_scores, best_idx

    def union(self, queries: torch.Tensor, k: int = 50) -> torch.Tensor:
        """Sorted unique indices of all k nearest neighbours of all queries.

        Returns:
            LongTensor M, M <= min(Q·k, N), ascending.

        Example::

            rows = index.union(album_features, k=50)   # training subset of the references
        """
        return torch.unique(self.search(queries, k)[1])

    def union_at_least(self, queries: torch.Tensor, k: int = 50, minimum: int = 0) -> torch.Tensor:
        """:meth:`union` with ``k`` doubled until the union holds at least ``min(minimum, N)`` references.

        A small album's K nearest neighbours cover only a few hundred references, too few for
        the regressor to generalise from (benchmarks/README.md §1); ``minimum = 0`` is the
        paper's hard K.

        Returns:
            LongTensor M, ascending, M >= min(minimum, N).

        Example:
            >>> angles = torch.arange(6) * 0.3
            >>> index = KnnIndex(torch.stack([angles.cos(), angles.sin()], 1), list("abcdef"))
            >>> query = torch.tensor([[1.0, 0.0]])
            >>> index.union(query, k=2).tolist(), index.union_at_least(query, k=2, minimum=3).tolist()
            ([0, 1], [0, 1, 2, 3])
        """
        if minimum < 0:
            raise ValueError(f"KnnIndex.union_at_least: minimum must be >= 0, got {minimum}")
        target = min(minimum, len(self))
        rows = self.union(queries, k)
        if len(rows) >= target:
            return rows
        # One search deep enough for every doubling that can be needed: a single query's
        # ``target`` nearest references already make the union large enough.
        deepest = k
        while deepest < target:
            deepest *= 2
        _, idx = self.search(queries, deepest)
        ranks = torch.arange(idx.shape[1]).expand_as(idx).flatten()
        best = torch.full((len(self),), idx.shape[1]).scatter_reduce_(0, idx.flatten(), ranks, "amin")
        while int((best < k).sum()) < target:
            k *= 2
        return (best < k).nonzero().flatten()

    def save(self, path: str | os.PathLike[str], backbone: str | None = None) -> None:
        """Write the index atomically as safetensors (features + JSON metadata).

        Args:
            path: output file.
            backbone: feature-extractor name to record; defaults to ``self.backbone``.

        Example::

            index.save("cache/ava_knn.safetensors", backbone="efficientnet_lite2")
        """
        meta = {
            "format": _FORMAT,
            "ids": self.ids,
            "dim": self.dim,
            "backbone": self.backbone if backbone is None else backbone,
        }
        write_safetensors(path, {"features": self.features}, meta, key=_META_KEY)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KnnIndex:
        """Read an index written by ``save``.

        Args:
            path: the index file.

        Returns:
            The index, with the backbone name it was saved with.

        Raises:
            FileNotFoundError: ``path`` is not a file.
            ValueError: not a readable persaes KNN index (a
                :class:`~persaes.io.safetensors_file.SafetensorsFileError` when the file itself is at fault).

        Example::

            index = KnnIndex.load("cache/ava_knn.safetensors")
            assert index.backbone == "efficientnet_lite2"
        """
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"{file}: KNN index file not found")
        tensors, meta = read_safetensors(file, key=_META_KEY, what="KNN index")
        features = tensors.get("features")
        if features is None:
            raise ValueError(f"{file}: not a persaes KNN index (no features tensor)")
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{file}: unsupported KNN index format {meta.get('format')!r}")
        if features.dim() != 2 or features.shape[1] != meta["dim"]:
            raise ValueError(f"{file}: features shape {tuple(features.shape)} does not match dim {meta['dim']}")
        return cls(features, meta["ids"], backbone=meta["backbone"])
