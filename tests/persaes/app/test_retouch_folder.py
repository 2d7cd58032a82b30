from __future__ import annotations

import csv
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from persaes.app.retouch_folder import (
    TASTE_FIDELITY_SHARE,
    RetouchError,
    is_greyscale,
    load_retouch_net,
    plan,
    retouch_folder,
    retouch_image,
    save_retouch_net,
    taste_settings,
)
from persaes.core.scorer import load_scorer
from retouch import RetouchNet
from retouch.optimize import EditSettings

FAST = EditSettings(steps=1, work_size=96)


@pytest.fixture(scope="module")
def scorer():
    return load_scorer("generic", device="cpu")


def _album(root: Path, photos: list[Path]) -> Path:
    (root / "sub").mkdir(parents=True)
    shutil.copy(photos[0], root / "a photo é.jpg")
    Image.open(photos[1]).save(root / "sub" / "b.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xffnot really")
    return root


def test_retouch_writes_every_photo_keeps_formats_and_names_bad_files(scorer, photos: list[Path], tmp_path: Path) -> None:
    album = _album(tmp_path / "in", photos)
    before = {p: p.read_bytes() for p in album.rglob("*") if p.is_file()}
    errors: list[str] = []
    summary = retouch_folder(album, tmp_path / "out", scorer, ("exposure",), FAST, on_error=errors.append)
    assert summary.done == 2 and len(summary.failed) == 1 and "broken.jpg" in errors[0]
    assert Image.open(tmp_path / "out" / "a photo é.jpg").format == "JPEG"
    assert Image.open(tmp_path / "out" / "sub" / "b.png").format == "PNG"
    assert {p: p.read_bytes() for p in album.rglob("*") if p.is_file()} == before  # IN untouched
    rows = list(csv.DictReader(open(tmp_path / "out" / "scores.csv", encoding="utf-8")))
    assert sorted(r["path"] for r in rows) == ["a photo é.jpg", "sub/b.png"]
    assert all(1 <= float(r["score_before"]) <= 10 and 1 <= float(r["score_after"]) <= 10 for r in rows)


def test_rerun_skips_finished_photos(scorer, photos: list[Path], tmp_path: Path) -> None:
    album = _album(tmp_path / "in", photos)
    out = tmp_path / "out"
    retouch_folder(album, out, scorer, ("exposure",), FAST)
    (out / "sub" / "b.png").unlink()
    stamp = (out / "a photo é.jpg").stat().st_mtime_ns
    summary = retouch_folder(album, out, scorer, ("exposure",), FAST)
    assert summary.done == 1 and summary.skipped == 1 and (out / "sub" / "b.png").exists()
    assert (out / "a photo é.jpg").stat().st_mtime_ns == stamp
    assert len(list(csv.DictReader(open(out / "scores.csv", encoding="utf-8")))) == 2


def test_out_equal_to_or_inside_in_is_refused(photos: list[Path], tmp_path: Path) -> None:
    album = _album(tmp_path / "in", photos)
    with pytest.raises(RetouchError, match="OUT is the input folder"):
        plan(album, album)
    with pytest.raises(RetouchError, match="inside the input folder"):
        plan(album, album / "out")


def test_exif_rotated_photo_comes_out_upright(scorer, photos: list[Path], tmp_path: Path) -> None:
    album = tmp_path / "in"
    album.mkdir()
    img = Image.open(photos[0])
    exif = img.getexif()
    exif[0x0112] = 6  # stored sideways: rotate 90° clockwise to view
    img.save(album / "rotated.jpg", exif=exif.tobytes())
    retouch_folder(album, tmp_path / "out", scorer, ("exposure",), FAST)
    out = Image.open(tmp_path / "out" / "rotated.jpg")
    assert out.size == (img.height, img.width) and out.getexif().get(0x0112, 1) == 1


def test_retouch_net_round_trip_and_one_pass(scorer, photos: list[Path], tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = RetouchNet(("exposure", "color"))
    torch.nn.init.normal_(net.head.weight, std=0.01)
    path = save_retouch_net(tmp_path / "net.safetensors", net, {"profile": "generic"})
    loaded, meta = load_retouch_net(path)
    x = torch.rand(1, 3, 64, 48)
    assert meta["ops"] == ["exposure", "color"] and torch.allclose(loaded(x), net(x))
    album = tmp_path / "in"
    album.mkdir()
    shutil.copy(photos[0], album / "a.jpg")
    summary = retouch_folder(album, tmp_path / "out", scorer, net=loaded)
    assert summary.done == 1
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(RetouchError, match="not a valid retouching model"):
        load_retouch_net(tmp_path / "junk.safetensors")


def test_greyscale_photos_stay_greyscale(scorer, photos: list[Path], tmp_path: Path) -> None:
    album = tmp_path / "in"
    album.mkdir()
    Image.open(photos[0]).convert("L").save(album / "grey.jpg")
    retouch_folder(album, tmp_path / "out", scorer, ("exposure", "color"), EditSettings(steps=3, work_size=96))
    out = torch.from_numpy(np.array(Image.open(tmp_path / "out" / "grey.jpg").convert("RGB"))).int()
    assert (out[..., 0] - out[..., 2]).abs().max() <= 3 and (out[..., 0] - out[..., 1]).abs().max() <= 3


def test_is_greyscale_allows_8_bit_rounding_only() -> None:
    grey = torch.rand(1, 1, 6, 5).expand(1, 3, 6, 5).clone()
    assert is_greyscale(grey)
    grey[0, 2, 1, 1] += 1 / 255  # what JPEG rounding leaves in a grey photo
    assert is_greyscale(grey)
    grey[0, 0, 3, 2] += 4 / 255
    assert not is_greyscale(grey)


def test_a_stacked_greyscale_photo_stays_grey_at_every_stage() -> None:
    torch.manual_seed(0)
    image = (torch.rand(1, 1, 40, 56) * 0.5).expand(1, 3, 40, 56).contiguous()
    settings = EditSettings(steps=5, work_size=32, fidelity=0.5)
    stacked = retouch_image(image, _warmer, ("color",), settings, base=_brighter)
    assert is_greyscale(stacked) and torch.equal(stacked[:, 0], stacked[:, 2])
    assert stacked.mean() > image.mean() + 0.02  # the base's brightening stays


def _warmer(images: torch.Tensor) -> torch.Tensor:
    return 5.0 * (images[:, 2].mean() - images[:, 0].mean())


def _brighter(images: torch.Tensor) -> torch.Tensor:
    return 5.0 * (1.0 - images.mean())


def _indifferent(images: torch.Tensor) -> torch.Tensor:
    return images.sum() * 0.0


def test_a_profile_edit_on_top_of_the_base_keeps_the_base_correction() -> None:
    torch.manual_seed(0)
    image = torch.rand(1, 3, 40, 56) * 0.5
    settings = EditSettings(steps=5, work_size=32, fidelity=0.5)
    brightened = retouch_image(image, _brighter, ("exposure",), settings)
    alone = retouch_image(image, _indifferent, ("exposure",), settings)
    stacked = retouch_image(image, _indifferent, ("exposure",), settings, base=_brighter)
    assert brightened.mean() > image.mean() + 0.02
    assert torch.allclose(alone, image, atol=1e-5)  # no taste and no base: the identity
    assert torch.allclose(stacked, brightened, atol=1e-5)  # no taste on top: the base's edit stays
    eager = retouch_image(image, _brighter, ("exposure",), settings, base=_brighter)
    assert eager.mean() > brightened.mean()  # a taste on top moves further from the base's result


def _mildly_brighter(images: torch.Tensor) -> torch.Tensor:
    return 3.0 * (1.0 - images.mean())


def test_a_profile_edit_on_top_of_the_base_is_held_with_a_share_of_the_fidelity() -> None:
    torch.manual_seed(0)
    image = torch.rand(1, 3, 40, 56) * 0.5
    settings = EditSettings(steps=5, work_size=32, fidelity=2.0)
    # the base keeps the photo; held with the full fidelity weight, the taste would not move it either
    stacked = retouch_image(image, _mildly_brighter, ("exposure",), settings, base=_indifferent)
    shared = taste_settings(settings)
    assert shared == replace(settings, fidelity=settings.fidelity * TASTE_FIDELITY_SHARE)
    assert TASTE_FIDELITY_SHARE < 0.75
    assert torch.allclose(stacked, retouch_image(image, _mildly_brighter, ("exposure",), shared), atol=1e-5)
    assert stacked.mean() > image.mean() + 0.02
    assert torch.allclose(retouch_image(image, _mildly_brighter, ("exposure",), settings), image, atol=1e-5)


def test_a_retouching_model_takes_no_base() -> None:
    with pytest.raises(ValueError, match="one pass"):
        retouch_image(torch.rand(1, 3, 8, 8), _brighter, ("exposure",), FAST, net=RetouchNet(("exposure",)),
                      base=_brighter)
