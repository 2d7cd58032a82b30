from __future__ import annotations

import csv
import json
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

    assert Image.open(tmp_path / "out" / "grey.jpg").mode == "L"  # written as greyscale, not as grey RGB


# -- the photo's kind and metadata are kept ---------------------------------------------------------------------------

EDIT = EditSettings(steps=3, work_size=96, fidelity=0.0)  # on a dark photo: an edit that changes the colour


def _dark(photos: list[Path]) -> Image.Image:
    """A small real photo at half its brightness, which the model wants brighter."""
    small = Image.open(photos[0]).convert("RGB").resize((96, 72), Image.Resampling.BICUBIC)
    return Image.fromarray((np.asarray(small) // 2).astype(np.uint8))


def test_alpha_channel_is_carried_over_untouched(scorer, photos: list[Path], tmp_path: Path) -> None:
    album = tmp_path / "in"
    album.mkdir()
    rgba = _dark(photos).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    rgba.save(album / "alpha.png")
    la = _dark(photos).convert("LA")
    la.putalpha(Image.linear_gradient("L").rotate(90).resize(la.size))
    la.save(album / "alpha-grey.png")
    summary = retouch_folder(album, tmp_path / "out", scorer, ("exposure", "color"), EDIT)
    assert summary.done == 2 and not summary.failed
    for name, source in (("alpha.png", rgba), ("alpha-grey.png", la)):
        out = Image.open(tmp_path / "out" / name)
        assert out.mode == source.mode and out.size == source.size
        assert out.getchannel("A").tobytes() == source.getchannel("A").tobytes()
        colour = np.asarray(out, dtype=float)[..., :-1] - np.asarray(source, dtype=float)[..., :-1]
        assert np.abs(colour).mean() > 2  # the edit changed the colour


def test_sixteen_bit_greyscale_is_edited_in_float_and_written_at_sixteen_bits(scorer, photos: list[Path],
                                                                              tmp_path: Path) -> None:
    album = tmp_path / "in"
    album.mkdir()
    grey = Image.fromarray(np.asarray(_dark(photos).convert("L"), dtype=np.float32)).resize((96, 72))
    smooth = Image.fromarray(np.asarray(grey.resize((192, 144), Image.Resampling.BICUBIC)) * 257.0)
    levels = np.clip(np.asarray(smooth) + 0.5, 0, 65535).astype(np.uint16)  # a real photo with 16-bit levels
    Image.fromarray(levels).save(album / "grey16.png")
    Image.fromarray(levels).save(album / "grey16.tif")
    retouch_folder(album, tmp_path / "out", scorer, ("exposure",), EditSettings(steps=2, work_size=96))
    for name in ("grey16.png", "grey16.tif"):
        with Image.open(tmp_path / "out" / name) as out:
            assert out.mode == "I;16" and out.size == (192, 144)
            result = np.asarray(out)
        assert not np.array_equal(result, levels)  # the edit changed it
        assert np.unique(result).size > 256 and (result % 257 != 0).any()  # not 8-bit levels written at 16 bits


def test_exif_icc_profile_dpi_and_png_text_are_kept(scorer, photos: list[Path], tmp_path: Path) -> None:
    from PIL import ExifTags, ImageCms, PngImagePlugin

    album = tmp_path / "in"
    album.mkdir()
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Persaes Camera"
    exif[ExifTags.Base.Orientation] = 6
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "2024:05:06 07:08:09"
    photo = _dark(photos)
    photo.save(album / "photo.jpg", exif=exif, icc_profile=srgb, dpi=(300, 300), quality=95)
    text = PngImagePlugin.PngInfo()
    text.add_text("Title", "Bird")
    text.add_itxt("Description", "un oiseau, été")
    photo.save(album / "photo.png", pnginfo=text, icc_profile=srgb, dpi=(240, 240))
    retouch_folder(album, tmp_path / "out", scorer, ("exposure",), EDIT)

    with Image.open(tmp_path / "out" / "photo.jpg") as out:
        assert out.size == (72, 96) and out.info["icc_profile"] == srgb and out.info["dpi"] == (300, 300)
        kept = out.getexif()
        assert kept[ExifTags.Base.Make] == "Persaes Camera" and kept[ExifTags.Base.Orientation] == 1
        assert kept.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] == "2024:05:06 07:08:09"
    with Image.open(tmp_path / "out" / "photo.png") as out:
        assert out.info["icc_profile"] == srgb and round(out.info["dpi"][0]) == 240
        assert out.text == {"Title": "Bird", "Description": "un oiseau, été"}


def test_sixteen_bit_colour_png_is_written_at_sixteen_bits_with_its_profile_and_dpi(scorer, photos: list[Path],
                                                                                     tmp_path: Path) -> None:
    from PIL import ImageCms

    from persaes.io.png16 import decode_png16, encode_png16, png_header

    album = tmp_path / "in"
    album.mkdir()
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    smooth = np.asarray(_dark(photos).resize((192, 144), Image.Resampling.BICUBIC), dtype=np.float64) * 257.0
    ramp = np.linspace(0, 256, 192)[None, :, None]  # levels between the 8-bit ones
    levels = np.clip(smooth + ramp + 0.5, 0, 65535).astype(np.uint16)  # a real photo with 16-bit levels
    (album / "rgb16.png").write_bytes(encode_png16(levels, icc_profile=srgb, dpi=(240, 240)))
    summary = retouch_folder(album, tmp_path / "out", scorer, ("exposure",), EditSettings(steps=2, work_size=96))
    assert summary.done == 1 and not summary.failed
    data = (tmp_path / "out" / "rgb16.png").read_bytes()
    assert png_header(data) == (192, 144, 16, 2)  # 16 bits per channel, RGB
    result = decode_png16(data).permute(1, 2, 0).numpy()
    assert not np.array_equal(result, levels)  # the edit changed it
    assert all(np.unique(result[..., c]).size > 256 for c in range(3)) and (result % 257 != 0).any()
    with Image.open(tmp_path / "out" / "rgb16.png") as out:
        assert out.size == (192, 144) and out.info["icc_profile"] == srgb and round(out.info["dpi"][0]) == 240


# -- a rerun with other settings -------------------------------------------------------------------------------------

def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def other_scorer(scorer, tmp_path_factory: pytest.TempPathFactory):
    """A profile file whose weights differ from the generic model's."""
    import copy

    from persaes.io.checkpoint import save_checkpoint

    model = copy.deepcopy(scorer.model)
    with torch.no_grad():
        next(model.head.parameters()).add_(0.01)
    path = save_checkpoint(tmp_path_factory.mktemp("profile") / "me.safetensors", model, scorer.metadata)
    return load_scorer(path, device="cpu")


def test_rerun_with_the_same_settings_resumes_and_records_them(scorer, photos: list[Path], tmp_path: Path) -> None:
    album = _album(tmp_path / "in", photos)
    out = tmp_path / "out"
    retouch_folder(album, out, scorer, ("exposure",), FAST, model_name="generic")
    (out / "sub" / "b.png").unlink()
    # the same weights under another name are the same settings
    summary = retouch_folder(album, out, scorer, ("exposure",), FAST, model_name="./generic.safetensors")
    assert (summary.done, summary.skipped) == (1, 1)
    rows = {r["path"]: r for r in csv.DictReader(open(out / "scores.csv", encoding="utf-8"))}
    record = json.loads(rows["a photo é.jpg"]["settings"])
    assert record["model"] == "generic" and record["model_sha256"] == scorer.metadata["tensors_sha256"]
    assert (record["ops"], record["steps"], record["work_size"], record["seed"], record["base"]) == (
        ["exposure"], 1, 96, 0, "none")


def test_rerun_with_other_settings_stops_and_writes_nothing(scorer, other_scorer, photos: list[Path],
                                                            tmp_path: Path) -> None:
    album = _album(tmp_path / "in", photos)
    out = tmp_path / "out"
    retouch_folder(album, out, scorer, ("exposure",), FAST, model_name="generic")
    (out / "sub" / "b.png").unlink()  # a photo still to do: not done either
    before = _snapshot(out)
    originals = _snapshot(album)
    for kwargs, differs in ((dict(scorer=other_scorer, model_name="me.safetensors"), "model generic -> me.safetensors"),
                            (dict(scorer=scorer, settings=EditSettings(steps=0, work_size=96)), "steps 1 -> 0"),
                            (dict(scorer=scorer, ops=("exposure", "color")), "ops exposure -> exposure,color"),
                            (dict(scorer=scorer, seed=1), "seed 0 -> 1"),
                            (dict(scorer=scorer, base=other_scorer, base_name="me"), "base none -> me")):
        kwargs = {"ops": ("exposure",), "settings": FAST, "model_name": "generic", **kwargs}
        with pytest.raises(RetouchError) as error:
            retouch_folder(album, out, **kwargs)
        message = str(error.value)
        assert "\n" not in message and message.startswith(f"{out}: 1 photo there was made with other settings (")
        assert differs in message and "--redo" in message, message
    assert _snapshot(out) == before and _snapshot(album) == originals


def test_redo_replaces_the_outputs_made_with_other_settings(scorer, other_scorer, photos: list[Path],
                                                            tmp_path: Path) -> None:
    album = _album(tmp_path / "in", photos)
    out = tmp_path / "out"
    retouch_folder(album, out, scorer, ("exposure",), EditSettings(steps=0, work_size=96), model_name="generic")
    originals = _snapshot(album)
    old = _snapshot(out)
    summary = retouch_folder(album, out, other_scorer, ("exposure",), FAST, model_name="me.safetensors", redo=True)
    assert (summary.done, summary.skipped) == (2, 0)
    rows = list(csv.DictReader(open(out / "scores.csv", encoding="utf-8")))
    assert sorted(r["path"] for r in rows) == ["a photo é.jpg", "sub/b.png"]
    for row in rows:
        record = json.loads(row["settings"])
        assert row["model"] == record["model"] == "me.safetensors" and record["steps"] == 1
        assert record["model_sha256"] == other_scorer.metadata["tensors_sha256"] != scorer.metadata["tensors_sha256"]
        assert _snapshot(out)[row["path"]][1] != old[row["path"]][1]  # written again
    assert _snapshot(album) == originals
    again = retouch_folder(album, out, other_scorer, ("exposure",), FAST, model_name="me.safetensors")
    assert (again.done, again.skipped) == (0, 2)  # and now they resume under the new settings


def test_base_out_writes_the_base_retouches_of_the_same_run(scorer, other_scorer, photos: list[Path],
                                                            tmp_path: Path) -> None:
    # one fit of each photo's base edit gives both folders what two separate runs give
    album = _album(tmp_path / "in", photos)
    settings = EditSettings(steps=2, work_size=96)
    retouch_folder(album, tmp_path / "generic", scorer, ("exposure",), settings, model_name="generic")
    retouch_folder(album, tmp_path / "personal", other_scorer, ("exposure",), settings, model_name="me",
                   base=scorer, base_name="generic")
    calls: list[tuple[int, int]] = []
    errors: list[str] = []
    summary = retouch_folder(album, tmp_path / "both", other_scorer, ("exposure",), settings, model_name="me",
                             base=scorer, base_name="generic", base_out=tmp_path / "both_generic",
                             progress=lambda done, total: calls.append((done, total)), on_error=errors.append)
    assert (summary.done, summary.skipped, len(summary.failed)) == (2, 0, 1) and errors == summary.failed
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]  # a photo's two retouches count once
    def contents(folder: Path) -> dict[str, bytes]:
        return {path: data for path, (data, _) in _snapshot(folder).items()}

    for alone, shared in (("generic", "both_generic"), ("personal", "both")):
        assert contents(tmp_path / alone) == contents(tmp_path / shared)  # the same files and scores.csv, byte for byte
    records = [json.loads(next(csv.DictReader(open(tmp_path / folder / "scores.csv", encoding="utf-8")))["settings"])
               for folder in ("both_generic", "both")]
    assert [(r["model"], r["base"]) for r in records] == [("generic", "none"), ("me", "generic")]
    (tmp_path / "both_generic" / "sub" / "b.png").unlink()  # missing from one folder only: made again there
    again = retouch_folder(album, tmp_path / "both", other_scorer, ("exposure",), settings, model_name="me",
                           base=scorer, base_name="generic", base_out=tmp_path / "both_generic")
    assert (again.done, again.skipped) == (1, 1)
    assert contents(tmp_path / "generic") == contents(tmp_path / "both_generic")
    with pytest.raises(ValueError, match="base_out"):
        retouch_folder(album, tmp_path / "x", scorer, ("exposure",), settings, base_out=tmp_path / "y")
    with pytest.raises(RetouchError, match="inside the input folder"):
        retouch_folder(album, tmp_path / "x", other_scorer, ("exposure",), settings, base=scorer,
                       base_out=album / "generic")
    assert not (tmp_path / "x").exists() and not (album / "generic").exists()  # refused before anything is written


def test_a_batch_that_fails_is_retried_photo_by_photo(scorer, photos: list[Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import persaes.app.retouch_folder as module

    album = tmp_path / "in"
    album.mkdir()
    for name, photo in zip("abc", photos):
        shutil.copy(photo, album / f"{name}.jpg")
    Image.open(photos[1]).resize((160, 128)).save(album / "b.jpg")  # the photo that fails alone too
    real = module.retouch_images
    sizes: list[int] = []

    def out_of_memory_on_big_batches_and_on_b(images, *args, **kwargs):
        sizes.append(len(images))
        if len(images) > 1 or images[0].shape[-1] == huge:
            raise RuntimeError("out of memory\nallocator detail")
        return real(images, *args, **kwargs)

    huge = 160
    monkeypatch.setattr(module, "retouch_images", out_of_memory_on_big_batches_and_on_b)
    errors: list[str] = []
    summary = retouch_folder(album, tmp_path / "out", scorer, ("exposure",), FAST, on_error=errors.append)
    assert sizes[0] == 3 and sizes[1:] == [1, 1, 1]  # one batch, then each photo alone
    assert summary.done == 2 and errors == [f"{album / 'b.jpg'}: cannot retouch (out of memory)"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg", "c.jpg", "scores.csv"]
