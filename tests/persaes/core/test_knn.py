"""Exact cosine KNN: equals brute force, chunked or not; union, grown to a minimum size; save/load."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from persaes.core.knn import KnnIndex


def _brute_force(features: torch.Tensor, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    f = torch.nn.functional.normalize(features.double(), dim=1)
    q = torch.nn.functional.normalize(queries.double(), dim=1)
    return (q @ f.T).topk(k, dim=1)


def _data(n: int = 500, d: int = 32, q: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(n, d, generator=gen) * torch.rand(n, 1, generator=gen) * 5  # varied norms
    return features, torch.randn(q, d, generator=gen), [f"r{i}" for i in range(n)]


@pytest.mark.parametrize("chunk_size", [65536, 64, 37, 1])
def test_search_equals_brute_force(chunk_size: int) -> None:
    features, queries, ids = _data()
    index = KnnIndex(features, ids, chunk_size=chunk_size)
    scores, idx = index.search(queries, k=50)
    expected_scores, expected_idx = _brute_force(features, queries, 50)
    assert scores.shape == idx.shape == (7, 50)
    assert idx.dtype == torch.long
    assert torch.equal(idx, expected_idx)
    assert torch.allclose(scores.double(), expected_scores, atol=1e-5)
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_k_clamped_to_size() -> None:
    features, queries, ids = _data(n=10)
    scores, idx = KnnIndex(features, ids, chunk_size=3).search(queries, k=50)
    assert idx.shape == (7, 10)
    assert torch.equal(idx.sort(dim=1).values, torch.arange(10).expand(7, 10))


def test_query_matching_a_reference_finds_it_first() -> None:
    features, _, ids = _data()
    scores, idx = KnnIndex(features, ids, chunk_size=100).search(features[[3, 250]] * 7, k=1)
    assert idx[:, 0].tolist() == [3, 250]
    assert torch.allclose(scores[:, 0], torch.ones(2))


def test_union() -> None:
    features, queries, ids = _data()
    index = KnnIndex(features, ids, chunk_size=128)
    union = index.union(queries, k=20)
    expected = torch.unique(_brute_force(features, queries, 20)[1])
    assert torch.equal(union, expected)
    assert (union[1:] > union[:-1]).all()


def test_union_at_least_grows_k_until_the_union_is_large_enough() -> None:
    features, queries, ids = _data()
    index = KnnIndex(features, ids, chunk_size=128)
    assert torch.equal(index.union_at_least(queries, k=5, minimum=0), index.union(queries, k=5))
    grown = index.union_at_least(queries, k=5, minimum=150)
    assert len(grown) >= 150
    k = 5
    while len(index.union(queries, k)) < 150:
        k *= 2
    assert torch.equal(grown, index.union(queries, k))  # the smallest doubling of k that is enough
    assert len(index.union(queries, k // 2)) < 150
    assert torch.equal(index.union_at_least(queries, k=5, minimum=10_000), torch.arange(500))  # all, no endless loop
    with pytest.raises(ValueError, match="minimum"):
        index.union_at_least(queries, k=5, minimum=-1)


def test_save_load_round_trip(tmp_path: Path) -> None:
    features, queries, _ = _data(n=50, d=8)
    ids = [f"ава/{i}.jpg" for i in range(50)]  # non-ASCII ids survive
    index = KnnIndex(features, ids, backbone="tiny")
    path = tmp_path / "knn.safetensors"
    index.save(path)
    loaded = KnnIndex.load(path)
    assert loaded.ids == ids and loaded.backbone == "tiny" and loaded.dim == 8 and len(loaded) == 50
    assert torch.allclose(loaded.features, index.features)
    assert torch.equal(loaded.search(queries, 5)[1], index.search(queries, 5)[1])
    index.save(path, backbone="other")
    assert KnnIndex.load(path).backbone == "other"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["knn.safetensors"]


def test_input_checks(tmp_path: Path) -> None:
    features, queries, ids = _data(n=5, d=4)
    with pytest.raises(ValueError, match="5 feature rows but 4 ids"):
        KnnIndex(features, ids[:4])
    with pytest.raises(ValueError, match="row 1 is all zeros"):
        KnnIndex(torch.tensor([[1.0, 0], [0, 0]]), ["a", "b"])
    with pytest.raises(ValueError, match="row 0 has NaN or infinite"):
        KnnIndex(torch.tensor([[float("nan"), 1.0], [1.0, 1.0]]), ["a", "b"])
    with pytest.raises(ValueError, match="duplicates"):
        KnnIndex(torch.ones(2, 3), ["a", "a"])
    with pytest.raises(ValueError, match="N = 0"):
        KnnIndex(torch.zeros(0, 3), [])
    index = KnnIndex(features, ids)
    with pytest.raises(ValueError, match="queries have dim 3, index has 4"):
        index.search(torch.ones(2, 3))
    with pytest.raises(ValueError, match="must be 2-D"):
        index.search(torch.ones(4))
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(queries[:, :4], k=0)
    with pytest.raises(FileNotFoundError, match="KNN index file not found"):
        KnnIndex.load(tmp_path / "none.safetensors")


def _recall(found: torch.Tensor, exact: torch.Tensor) -> float:
    return sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, exact)) / exact.numel()


def test_approximate_index_recall_against_exact_search() -> None:
    pytest.importorskip("faiss")
    from persaes.core.knn import ApproximateKnnIndex

    gen = torch.Generator().manual_seed(1)
    features, queries = torch.randn(6000, 256, generator=gen), torch.randn(40, 256, generator=gen)
    ids = [f"r{i}" for i in range(6000)]
    exact = KnnIndex(features, ids)
    approximate = ApproximateKnnIndex(features[:4000], ids[:4000], backbone="tiny")
    approximate.add(features[4000:], ids[4000:])  # grown in chunks, as references read from disk
    assert len(approximate) == 6000 and approximate.dim == 256 and approximate.ids == ids
    scores, idx = approximate.search(queries, k=50)
    exact_scores, exact_idx = exact.search(queries, k=50)
    assert scores.shape == idx.shape == (40, 50) and idx.dtype == torch.long
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    assert _recall(idx, exact_idx) >= 0.95
    assert torch.allclose(scores[:, 0], exact_scores[:, 0], atol=0.01)  # similarities estimated closely
    assert approximate.nbytes < exact.features.numel() * 4 / 3  # one byte per dimension, not four
    union = approximate.union(queries, k=50)
    assert len(set(union.tolist()) & set(exact.union(queries, k=50).tolist())) >= 0.95 * len(union)
    assert len(approximate.union_at_least(queries, k=5, minimum=1000)) >= 1000


def test_approximate_index_that_finds_fewer_than_k() -> None:
    pytest.importorskip("faiss")
    from persaes.core.knn import ApproximateKnnIndex

    features, queries, ids = _data(n=640, d=16)
    index = ApproximateKnnIndex(features, ids, factory="IVF16,Flat", params="nprobe=1")  # lists of ~40
    scores, idx = index.search(queries, k=100)
    assert (idx == -1).any() and (idx >= -1).all() and (idx < 640).all()
    union = index.union(queries, k=100)
    assert (union >= 0).all() and torch.equal(union, torch.unique(idx[idx >= 0]))
    grown = index.union_at_least(queries, k=10, minimum=300)  # k doubled past what the probed lists hold
    assert (grown >= 0).all() and set(grown.tolist()) <= set(idx[idx >= 0].tolist())
    assert (scores[idx == -1] < -1e30).all() and (scores[idx >= 0].abs() <= 1.001).all()


def test_approximate_index_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from persaes.core.knn import ApproximateKnnIndex

    features, queries, ids = _data(n=50, d=8)
    monkeypatch.setitem(sys.modules, "faiss", None)  # not installed
    with pytest.raises(ImportError, match=r"pip install 'persaes\[scale\]' \(faiss-cpu\)"):
        ApproximateKnnIndex(features, ids)
    monkeypatch.undo()
    pytest.importorskip("faiss")
    with pytest.raises(ValueError, match="FAISS refused 'NoSuchIndex'"):
        ApproximateKnnIndex(features, ids, factory="NoSuchIndex")
    with pytest.raises(ValueError, match="N = 0"):
        ApproximateKnnIndex(torch.zeros(0, 8), [])
    with pytest.raises(ValueError, match="50 feature rows but 49 ids"):
        ApproximateKnnIndex(features, ids[:49])
    index = ApproximateKnnIndex(features, ids)
    with pytest.raises(ValueError, match="duplicates"):
        index.add(features[:1], ["r3"])
    with pytest.raises(ValueError, match="features have dim 4, index has 8"):
        index.add(features[:1, :4], ["new"])
    with pytest.raises(ValueError, match="queries have dim 3, index has 8"):
        index.search(torch.ones(2, 3))
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(queries, k=0)
    with pytest.raises(ValueError, match="row 0 is all zeros"):
        index.search(torch.zeros(1, 8))
    assert len(index) == 50 and index.search(queries, k=80)[1].shape == (7, 50)  # k clamped to N
