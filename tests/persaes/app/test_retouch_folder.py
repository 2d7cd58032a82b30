from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from persaes.app.retouch_folder import RetouchError, plan, retouch_folder
from persaes.core.scorer import load_scorer
from persaes.io.retouch_net_file import load_retouch_net, save_retouch_net
from persaes.io.safetensors_file import SafetensorsFileError
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


def test_retouch_writes_every_photo_keeps_formats_and_names_bad_files(scorer, photos: list[Path],
                                                                      tmp_path: Path) -> None:
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
    with pytest.raises(SafetensorsFileError, match="not a valid retouching model"):
        load_retouch_net(tmp_path / "junk.safetensors")


def test_greyscale_photos_stay_greyscale(scorer, photos: list[Path], tmp_path: Path) -> None:
    album = tmp_path / "in"
    album.mkdir()
    Image.open(photos[0]).convert("L").save(album / "grey.jpg")
    retouch_folder(album, tmp_path / "out", scorer, ("exposure", "color"), EditSettings(steps=3, work_size=96))
    out = torch.from_numpy(np.array(Image.open(tmp_path / "out" / "grey.jpg").convert("RGB"))).int()
    assert (out[..., 0] - out[..., 2]).abs().max() <= 3 and (out[..., 0] - out[..., 1]).abs().max() <= 3

