"""Exact cosine k-nearest-neighbour search over reference features.

The paper trains its generic regressor on the K = 50 nearest reference photos of each
album photo. ``KnnIndex`` holds L2-normalised reference features and scans them in
chunks, keeping a running top-k, so 255,000 × 1280 references need no more than one
chunk of similarities at a time per query batch.

Saved as one safetensors file: tensor ``features`` (N×D float32, normalised) and the
metadata key ``persaes_knn`` holding JSON ``{"format": 1, "ids": [...], "dim": D,
"backbone": "..."}``.

For reference sets too large to hold as float32 (10 M × 1280 floats are 51 GB), the optional
``persaes[scale]`` extra (``faiss-cpu``) adds ``ApproximateKnnIndex``: the same ``search`` and
``union`` over a FAISS index, by default ``SQ8`` (each dimension quantised to one byte, a quarter of
the memory, scanned in full), whose recall@50 against the exact search is 0.983 on 255,000 random
1280-d references (``benchmarks/components.py --parts faiss``). Any FAISS factory string can be
given instead (``"IVF4096,SQ8"`` with ``params="nprobe=64"`` on clustered real features).

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
from typing import Any

import torch

from persaes.io.safetensors_file import read_safetensors, write_safetensors

__all__ = ["DEFAULT_FACTORY", "ApproximateKnnIndex", "KnnIndex"]

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


class _Neighbours:
    """What both indexes share: the union of the neighbours of an album, from ``search`` and ``len``."""

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        raise NotImplementedError

    def search(self, queries: torch.Tensor, k: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
        """The k most cosine-similar references of each query, best first (see :meth:`KnnIndex.search`)."""
        raise NotImplementedError

    def _queries(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, int]:
        """``queries`` normalised and checked against the index, and ``k`` clamped to its size."""
        name = f"{type(self).__name__}.search"
        if k < 1:
            raise ValueError(f"{name}: k must be >= 1, got {k}")
        q = _normalise(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"{name}: queries have dim {q.shape[1]}, index has {self.dim}")
        return q, min(k, len(self))

    def union(self, queries: torch.Tensor, k: int = 50) -> torch.Tensor:
        """Sorted unique indices of all k nearest neighbours of all queries.

        Returns:
            LongTensor M, M <= min(Q·k, N), ascending.

        Example::

            rows = index.union(album_features, k=50)   # training subset of the references
        """
        idx = self.search(queries, k)[1]
        return torch.unique(idx[idx >= 0])  # an approximate index marks the neighbours it did not find -1

    def union_at_least(self, queries: torch.Tensor, k: int = 50, minimum: int = 0) -> torch.Tensor:
        """:meth:`union` with ``k`` doubled until the union holds at least ``min(minimum, N)`` references.

        A small album's K nearest neighbours cover only a few hundred references, too few for
        the regressor to generalise from (benchmarks/README.md §1); ``minimum = 0`` is the
        paper's hard K.

        Returns:
            LongTensor M, ascending, M >= min(minimum, N) (an approximate index: or all it finds, if fewer).

        Example:
            >>> angles = torch.arange(6) * 0.3
            >>> index = KnnIndex(torch.stack([angles.cos(), angles.sin()], 1), list("abcdef"))
            >>> query = torch.tensor([[1.0, 0.0]])
            >>> index.union(query, k=2).tolist(), index.union_at_least(query, k=2, minimum=3).tolist()
            ([0, 1], [0, 1, 2, 3])
        """
        if minimum < 0:
            raise ValueError(f"{type(self).__name__}.union_at_least: minimum must be >= 0, got {minimum}")
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
        found = idx >= 0
        ranks = torch.arange(idx.shape[1]).expand_as(idx)[found]
        never = torch.iinfo(torch.long).max  # the rank of a reference no search found
        best = torch.full((len(self),), never).scatter_reduce_(0, idx[found], ranks, "amin")
        while int((best < k).sum()) < target and k < idx.shape[1]:  # an approximate index may find fewer
            k *= 2
        return (best < k).nonzero().flatten()


class KnnIndex(_Neighbours):
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
        q, k = self._queries(queries, k)
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


DEFAULT_FACTORY = "SQ8"
"""FAISS index of :class:`ApproximateKnnIndex` unless told otherwise: one byte per dimension, scanned in full."""


def _faiss() -> Any:
    """The ``faiss`` module, or an ImportError naming the extra that installs it."""
    try:
        import faiss
    except ImportError:
        raise ImportError("approximate KNN needs FAISS: pip install 'persaes[scale]' (faiss-cpu)") from None
    return faiss


class ApproximateKnnIndex(_Neighbours):
    """Approximate cosine-similarity search over N references in a FAISS index (the ``persaes[scale]`` extra).

    The references are L2-normalised and searched by inner product. The index keeps only FAISS's codes
    (with :data:`DEFAULT_FACTORY`, one byte per dimension), not the float features, and grows by
    :meth:`add`, so references read in chunks never need to be in memory all at once. Scores are the
    index's estimate of the cosine similarity; where an index finds fewer than k neighbours (an IVF index
    probing few lists), the missing ones are index -1 with FAISS's lowest float as score.

    Args:
        features: tensor N×D (N >= 1), the first references; a trained index (``IVF…``, ``SQ…``) is
            trained on them, so they should be a fair sample (for IVF, at least 39 per list).
        ids: N unique reference ids.
        backbone: name of the feature extractor.
        factory: a FAISS ``index_factory`` string (``"SQ8"``, ``"SQfp16"``, ``"IVF4096,SQ8"``, ``"HNSW32"``).
        params: FAISS search parameters, e.g. ``"nprobe=64"`` or ``"efSearch=512"``.

    Raises:
        ImportError: FAISS is not installed (``pip install 'persaes[scale]'``).

    Example::

        index = ApproximateKnnIndex(ref_features, ref_ids)        # SQ8: a quarter of the memory
        index.add(more_features, more_ids)                        # the next chunk of references
        rows = index.union(album_features, k=50)
    """

    def __init__(self, features: torch.Tensor, ids: list[str], backbone: str = "",
                 factory: str = DEFAULT_FACTORY, params: str = "") -> None:
        faiss = _faiss()
        if features.dim() == 2 and features.shape[0] == 0:
            raise ValueError("ApproximateKnnIndex: no reference features (N = 0)")
        first = _normalise(features, "features")
        try:
            self.index = faiss.index_factory(first.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
            if not self.index.is_trained:
                self.index.train(first.numpy())
            if params:
                faiss.ParameterSpace().set_index_parameters(self.index, params)
        except RuntimeError as exc:  # FAISS's own errors: a bad factory string or parameter
            message = str(exc).strip().splitlines()
            raise ValueError(f"ApproximateKnnIndex: FAISS refused {factory!r} {params!r}: "
                             f"{message[-1] if message else exc}") from None
        self.factory, self.params, self.backbone = factory, params, backbone
        self.ids: list[str] = []
        self._known: set[str] = set()
        self.add(first, ids)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return int(self.index.d)

    def add(self, features: torch.Tensor, ids: list[str]) -> None:
        """Add references (rows N×D, L2-normalised here) with their ids, unique over the whole index."""
        rows = _normalise(features, "features")
        if rows.shape[1] != self.dim:
            raise ValueError(f"ApproximateKnnIndex: features have dim {rows.shape[1]}, index has {self.dim}")
        if len(ids) != rows.shape[0]:
            raise ValueError(f"ApproximateKnnIndex: {rows.shape[0]} feature rows but {len(ids)} ids")
        new = set(ids)
        if len(new) != len(ids) or not new.isdisjoint(self._known):
            raise ValueError("ApproximateKnnIndex: ids contain duplicates")
        self.index.add(rows.numpy())
        self.ids.extend(ids)
        self._known |= new

    @property
    def nbytes(self) -> int:
        """Bytes the FAISS index takes (its serialised size: codes, plus lists or graph where it has them)."""
        faiss, total = _faiss(), 0

        def count(chunk: bytes) -> int:
            nonlocal total
            total += len(chunk)
            return len(chunk)

        faiss.write_index(self.index, faiss.PyCallbackIOWriter(count))  # counted as written, never copied whole
        return total

    def search(self, queries: torch.Tensor, k: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
        """The k references of each query the index finds most cosine-similar, best first.

        Args:
            queries: tensor Q×D.
            k: neighbours per query, >= 1; clamped to N.

        Returns:
            (scores Q×k float32 descending per row, indices Q×k long in [0, N), -1 where none was found).

        Example::

            scores, idx = index.search(album_features, k=50)
        """
        q, k = self._queries(queries, k)
        scores, idx = self.index.search(q.numpy(), k)
        return torch.from_numpy(scores), torch.from_numpy(idx).long()
