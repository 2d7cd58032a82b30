"""Variants of album photos: new JPEGs only, written atomically, listed in edits.jsonl, the same for a seed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from persaes.app.collect import album_photos
from persaes.app.variants import VARIANTS_DIR, is_variant, write_variant
from persaes.io.images import load_image
from retouch import EDITS


@pytest.fixture()
def photo(photos: list[Path]) -> torch.Tensor:
    return load_image(photos[0], max_side=64)[None]


def _edits(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / VARIANTS_DIR / "edits.jsonl").read_text().splitlines()]


def test_variants_are_new_jpegs_of_mild_edits_listed_in_edits_jsonl(photo: torch.Tensor, tmp_path: Path) -> None:
    (tmp_path / VARIANTS_DIR).mkdir()
    (tmp_path / VARIANTS_DIR / "Bird3__v1.jpg").write_bytes(b"someone's file")
    keys = [write_variant(tmp_path, "sub/Bird3.jpg", photo, seed=0) for _ in range(2)]
    keys.append(write_variant(tmp_path, "sub/Bird3.jpg", photo, seed=0, taken=lambda key: key.endswith("__v4.jpg")))
    assert keys == ["_variants/Bird3__v2.jpg", "_variants/Bird3__v3.jpg", "_variants/Bird3__v5.jpg"]
    assert all(is_variant(key) for key in keys)
    assert (tmp_path / VARIANTS_DIR / "Bird3__v1.jpg").read_bytes() == b"someone's file"  # never overwritten
    for key in keys:
        with Image.open(tmp_path / key) as written:
            assert written.format == "JPEG" and written.size == (photo.shape[-1], photo.shape[-2])
        change = float((load_image(tmp_path / key) - photo[0]).abs().mean())
        assert 0.005 < change < 0.25  # an edit, a mild one
    edits = _edits(tmp_path)
    assert [(e["variant"], e["source"]) for e in edits] == [(key, "sub/Bird3.jpg") for key in keys]
    assert all(e["edit"]["kind"] in EDITS and set(e["edit"]) >= {"ev", "gains", "saturation", "dehaze"}
               for e in edits)
    assert sorted(p.name for p in (tmp_path / VARIANTS_DIR).iterdir()) == [
        "Bird3__v1.jpg", "Bird3__v2.jpg", "Bird3__v3.jpg", "Bird3__v5.jpg", "edits.jsonl"]  # no temporary files


def test_variants_are_the_same_for_a_seed(photo: torch.Tensor, tmp_path: Path) -> None:
    made = {}
    for album, seed in (("a", 7), ("b", 7), ("c", 8)):
        root = tmp_path / album
        root.mkdir()
        keys = [write_variant(root, "Bird3.jpg", photo, seed=seed) for _ in range(2)]
        made[album] = ([(root / key).read_bytes() for key in keys], _edits(root))
    assert made["a"] == made["b"]
    assert made["a"][0][0] != made["a"][0][1]  # each variant its own edit
    assert made["a"][0] != made["c"][0]


def test_variants_are_album_files_but_not_question_material(photos: list[Path], photo: torch.Tensor,
                                                            tmp_path: Path) -> None:
    Image.open(photos[0]).save(tmp_path / "Bird3.jpg")
    key = write_variant(tmp_path, "Bird3.jpg", photo, seed=0)
    keys, files = album_photos(tmp_path)
    assert keys == ["Bird3.jpg"] and files == [tmp_path.resolve() / "Bird3.jpg"] and (tmp_path / key).is_file()


def test_a_failed_write_leaves_no_file(photo: torch.Tensor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(source: str, target: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space"):
        write_variant(tmp_path, "Bird3.jpg", photo, seed=0)
    assert list((tmp_path / VARIANTS_DIR).iterdir()) == []  # neither a partial photo nor its edit line


def test_only_one_photo_at_a_time(photo: torch.Tensor, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one photo"):
        write_variant(tmp_path, "Bird3.jpg", photo.expand(2, -1, -1, -1), seed=0)
    with pytest.raises(ValueError, match="one photo"):
        write_variant(tmp_path, "Bird3.jpg", photo[0], seed=0)
