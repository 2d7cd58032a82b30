"""Feature extraction and its on-disk cache: one backbone pass per photo, damaged entries recomputed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from persaes.core.features import FeatureCache, Features, extract_features, features_of_tensors, file_digest
from persaes.core.model import STATS, THUMB, load_square


def _features(n: int, seed: int = 0) -> Features:
    g = torch.Generator().manual_seed(seed)
    return Features(torch.rand(n, 4, 3, 3, generator=g), torch.rand(n, 5, 3, 3, generator=g),
                    torch.rand(n, 6, generator=g), torch.rand(n, STATS, generator=g),
                    torch.rand(n, 3, 8, 8, generator=g))


def test_file_digest_follows_the_content_not_the_name(photos: list[Path], tmp_path: Path) -> None:
    copy = tmp_path / "renamed.jpg"
    shutil.copy(photos[0], copy)
    assert file_digest(copy) == file_digest(photos[0]) != file_digest(photos[1])


def test_rows_take_and_cat_keep_photos_in_order() -> None:
    feats = _features(4)
    assert len(feats) == 4 and feats.pooled().shape == (4, 6)
    again = Features.cat([feats.rows([2, 3]), feats.rows([0])])
    assert torch.equal(again.z3, feats.z3[[2, 3, 0]]) and torch.equal(again.thumb, feats.thumb[[2, 3, 0]])
    taken = feats.take([1, 0])
    assert [t.dtype for t in taken] == [torch.float32] * 5 and torch.equal(taken[1], feats.z2[[1, 0]])


def test_cache_round_trip_and_a_damaged_entry_reads_as_missing(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, "efficientnet_lite2", "pretrained")
    one = _features(1)
    assert cache.get("ab" * 32) is None
    cache.put("ab" * 32, one)
    back = cache.get("ab" * 32)
    assert back is not None and all(torch.equal(a, b) for a, b in zip(back.tensors(), one.tensors()))
    (entry,) = tmp_path.rglob("*.safetensors")
    entry.write_bytes(entry.read_bytes()[:40])  # cut short, as by a full disk
    assert cache.get("ab" * 32) is None


def test_caches_of_other_backbones_or_weights_are_separate(tmp_path: Path) -> None:
    FeatureCache(tmp_path, "efficientnet_lite2", "pretrained").put("cd" * 32, _features(1))
    assert FeatureCache(tmp_path, "vgg16", "pretrained").get("cd" * 32) is None
    assert FeatureCache(tmp_path, "efficientnet_lite2", "random").get("cd" * 32) is None


def test_extract_features_names_bad_files_and_meets_the_backbone_once_per_photo(
        pretrained_model, photos: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "empty.jpg"
    bad.write_bytes(b"")
    cache = FeatureCache(tmp_path / "cache", "efficientnet_lite2", "pretrained")
    files = [photos[0], bad, photos[1]]
    seen: list[int] = []
    feats, order, problems = extract_features(pretrained_model, files, cache, on_progress=seen.append)
    assert order == [0, 2] and len(feats) == 2 and sum(seen) == 2
    assert len(problems) == 1 and "empty.jpg" in problems[0] and "\n" not in problems[0]
    size = pretrained_model.spec.input_size
    direct = features_of_tensors(pretrained_model, load_square(photos[0], size))
    # the same photo alone: the same features up to float16 rounding (batch size changes the kernels' sums)
    assert torch.allclose(direct.z3.float(), feats.z3[:1].float(), rtol=1e-2, atol=1e-2)
    assert feats.thumb.shape[-1] == THUMB

    def no_backbone(*args, **kwargs):
        raise AssertionError("a cached photo met the backbone again")

    monkeypatch.setattr("persaes.core.features.features_of_tensors", no_backbone)
    again, order_again, _ = extract_features(pretrained_model, files, cache)
    assert order_again == order and torch.equal(again.z3, feats.z3)
