"""Tensor <-> PIL conversions: torchvision's give the hand-written ones' values, one 8-bit quantizer."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image, ImageOps

from persaes.io.images import open_rgb, read_photo, to_bytes, to_pil, to_tensor
from persaes.io.png16 import decode_png16, encode_png16, png_header, to_levels16


def _images(photos: list[Path]) -> list[Image.Image]:
    rgb = open_rgb(photos[0])
    return [open_rgb(photo) for photo in photos] + [rgb.convert("L"), rgb.convert("RGBA"), rgb.convert("P"),
                                                      rgb.crop((0, 0, 1, 7))]


def test_to_tensor_gives_the_levels_over_255_of_the_rgb_image(photos: list[Path]) -> None:
    for image in _images(photos):
        by_hand = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
        tensor = to_tensor(image)
        assert tensor.dtype == torch.float32 and tensor.shape == (3, image.height, image.width)
        assert torch.equal(tensor, by_hand.float().div_(255.0))


def test_to_pil_gives_the_image_of_the_levels_and_inverts_to_tensor(photos: list[Path]) -> None:
    for image in _images(photos):
        tensor = to_tensor(image)
        by_hand = Image.fromarray(to_bytes(tensor).permute(1, 2, 0).numpy(), "RGB")
        pil = to_pil(tensor)
        assert pil.mode == "RGB" and pil.size == image.size
        assert pil.tobytes() == by_hand.tobytes() == image.convert("RGB").tobytes()
        assert torch.equal(to_tensor(pil), tensor)


def test_to_bytes_rounds_halves_up_and_clips() -> None:
    levels = torch.arange(255, dtype=torch.float32)
    halves = (levels + 0.5) / 255
    assert torch.equal(halves * 255, levels + 0.5)  # exact halves in float32: where rounding rules differ
    assert torch.equal(to_bytes(halves), (levels + 1).to(torch.uint8))
    assert not torch.equal(halves.mul(255).round(), levels + 1)  # half to even would take every other one down
    assert to_bytes(torch.tensor([-0.2, 1.7])).tolist() == [0, 255]
    assert np.asarray(to_pil(halves[:3].reshape(3, 1, 1))).tolist() == [[[1, 2, 3]]]


def test_conversions_refuse_what_they_cannot_convert() -> None:
    with pytest.raises(ValueError, match="floating-point"):
        to_bytes(torch.zeros(3, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="shape"):
        to_pil(torch.rand(1, 3, 2, 2))


def _small(photos: list[Path]) -> Image.Image:
    return Image.open(photos[0]).convert("RGB").resize((64, 48), Image.Resampling.BICUBIC)


def test_read_photo_sets_an_alpha_channel_aside_and_gives_it_back_unchanged(photos: list[Path],
                                                                            tmp_path: Path) -> None:
    rgba = _small(photos).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    rgba.save(tmp_path / "alpha.png")
    photo = read_photo(tmp_path / "alpha.png")
    assert not photo.grey and photo.bits == 8 and photo.alpha is not None
    assert torch.equal(photo.color, to_tensor(rgba.convert("RGB")))  # the colour itself, not over white
    assert photo.to_image(photo.color).tobytes() == rgba.tobytes()
    alpha = torch.from_numpy(np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255)
    assert torch.allclose(photo.over_white(), photo.color * alpha + 1 - alpha)

    la = _small(photos).convert("LA")
    la.putalpha(Image.linear_gradient("L").rotate(90).resize(la.size))
    la.save(tmp_path / "la.png")
    photo = read_photo(tmp_path / "la.png")
    assert photo.grey and torch.equal(photo.color[0], photo.color[2])
    again = photo.to_image(photo.color)
    assert again.mode == "LA" and again.tobytes() == la.tobytes()


def test_read_photo_keeps_sixteen_bit_greyscale_in_float(tmp_path: Path) -> None:
    levels = np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)  # 3,072 levels
    Image.fromarray(levels).save(tmp_path / "grey16.png")
    Image.fromarray(levels).save(tmp_path / "grey16.tif")
    for name in ("grey16.png", "grey16.tif"):
        photo = read_photo(tmp_path / name)
        assert photo.grey and photo.bits == 16 and photo.alpha is None
        assert torch.unique(photo.color).numel() == 48 * 64  # not quantized to 256 levels
        again = photo.to_image(photo.color)
        assert again.mode == "I;16" and np.array_equal(np.asarray(again), levels)


def test_read_photo_reads_other_modes_as_colour_or_grey(photos: list[Path], tmp_path: Path) -> None:
    small = _small(photos)
    small.convert("L").save(tmp_path / "grey.jpg", quality=95)
    small.convert("CMYK").save(tmp_path / "cmyk.jpg", icc_profile=bytes(16) + b"CMYK" + bytes(108))
    palette = small.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(tmp_path / "transparent.gif", transparency=0)
    palette.save(tmp_path / "opaque.gif")
    kinds = {name: read_photo(tmp_path / name) for name in ("grey.jpg", "cmyk.jpg", "transparent.gif", "opaque.gif")}
    assert kinds["grey.jpg"].grey and kinds["grey.jpg"].to_image(kinds["grey.jpg"].color).mode == "L"
    assert kinds["cmyk.jpg"].to_image(kinds["cmyk.jpg"].color).mode == "RGB"
    assert "icc_profile" not in kinds["cmyk.jpg"].metadata  # a CMYK profile would misdescribe the RGB output
    assert kinds["transparent.gif"].to_image(kinds["transparent.gif"].color).mode == "RGBA"
    assert kinds["opaque.gif"].to_image(kinds["opaque.gif"].color).mode == "RGB"


def test_read_photo_keeps_exif_upright_without_the_files_storage_tags(photos: list[Path], tmp_path: Path) -> None:
    small = _small(photos)
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Persaes Camera"
    exif[ExifTags.Base.Orientation] = 6
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "2024:05:06 07:08:09"
    small.save(tmp_path / "photo.jpg", exif=exif, dpi=(300, 300), comment=b"a comment")
    small.save(tmp_path / "photo.tif", exif=exif)
    for name in ("photo.jpg", "photo.tif"):
        photo = read_photo(tmp_path / name)
        assert photo.color.shape == (3, small.width, small.height)  # turned upright
        kept = Image.Exif()
        kept.load(photo.metadata["exif"])
        assert kept[ExifTags.Base.Make] == "Persaes Camera" and kept[ExifTags.Base.Orientation] == 1
        assert not {256, 257, 258, 273, 279} & set(kept)  # width, height, depth, strips: the output has its own
    jpeg = read_photo(tmp_path / "photo.jpg").metadata
    kept.load(jpeg["exif"])
    assert kept.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] == "2024:05:06 07:08:09"  # a sub-IFD
    assert jpeg["dpi"] == (300, 300) and jpeg["comment"] == b"a comment"


def _levels16(height: int, width: int, channels: int) -> np.ndarray:
    """16-bit ramps, a different one per channel: a level per pixel (thousands)."""
    ramp = np.linspace(0, 1, height * width).reshape(height, width)
    planes = [ramp, 1 - ramp, ramp * 7 % 1, np.sqrt(ramp)][:channels]
    return np.clip(np.stack(planes, axis=2) * 65535 + 0.5, 0, 65535).astype(np.uint16)


def test_a_sixteen_bit_png_written_by_encode_png16_decodes_the_same_in_pillow_and_torchvision(tmp_path: Path) -> None:
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Persaes Camera"
    for channels, mode in ((3, "RGB"), (4, "RGBA"), (1, "I;16"), (2, "RGBA")):  # PIL opens 16-bit LA as RGBA
        levels = _levels16(37, 53, channels)
        icc = srgb if channels > 2 else None  # an RGB profile does not fit a grey PNG
        data = encode_png16(levels, icc_profile=icc, dpi=(300, 150), exif=exif.tobytes(),
                            text={"Title": "Bird", "Description": "un oiseau, été", "Note": "中文"})
        assert png_header(data) == (53, 37, 16, {1: 0, 2: 4, 3: 2, 4: 6}[channels])
        assert np.array_equal(decode_png16(data).permute(1, 2, 0).numpy(), levels.reshape(37, 53, channels))
        (tmp_path / "x.png").write_bytes(data)
        with Image.open(tmp_path / "x.png") as img:
            img.load()
            assert img.mode == mode and img.size == (53, 37)
            assert img.info.get("icc_profile") == icc and tuple(round(d) for d in img.info["dpi"]) == (300, 150)
            assert img.text == {"Title": "Bird", "Description": "un oiseau, été", "Note": "中文"}
            assert img.getexif()[ExifTags.Base.Make] == "Persaes Camera"
            if mode == "I;16":
                assert np.array_equal(np.asarray(img), levels[..., 0])
            elif mode == "RGB":
                assert np.array_equal(np.asarray(img), (levels >> 8).astype(np.uint8))  # PIL keeps the high byte
    with pytest.raises(ValueError, match="uint16"):
        encode_png16(levels.astype(np.uint8))
    with pytest.raises(ValueError, match="text key"):
        encode_png16(levels, text={"": "no key"})


def test_to_levels16_rounds_halves_up_and_inverts_division_by_65535() -> None:
    levels = torch.arange(65536, dtype=torch.int32)
    assert torch.equal(to_levels16(levels.float() / 65535), levels)
    halves = (torch.arange(0, 65535, 1001, dtype=torch.float64) + 0.5) / 65535
    assert torch.equal(to_levels16(halves), torch.arange(0, 65535, 1001, dtype=torch.int32) + 1)
    assert to_levels16(torch.tensor([-0.5, 2.0])).tolist() == [0, 65535]


@pytest.mark.parametrize("channels", [3, 4])
def test_read_photo_keeps_sixteen_bit_colour_png_at_sixteen_bits(tmp_path: Path, channels: int) -> None:
    from PIL import ImageCms

    from persaes.app.retouch_folder import encode_photo

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    levels = _levels16(48, 64, channels)
    (tmp_path / "rgb16.png").write_bytes(encode_png16(levels, icc_profile=srgb, dpi=(240, 240)))
    photo = read_photo(tmp_path / "rgb16.png")
    assert not photo.grey and photo.bits == 16 and (photo.alpha is not None) == (channels == 4)
    assert photo.metadata["icc_profile"] == srgb and round(photo.metadata["dpi"][0]) == 240
    assert all(torch.unique(plane).numel() > 256 for plane in photo.color)  # not quantized to 256 levels
    assert np.array_equal(photo.to_levels(photo.color), levels)  # no edit: the very same levels

    data = encode_photo(photo.color, tmp_path / "out.png", photo)
    assert png_header(data)[2:] == (16, 2 if channels == 3 else 6)
    assert np.array_equal(decode_png16(data).permute(1, 2, 0).numpy(), levels)
    (tmp_path / "out.png").write_bytes(data)
    again = read_photo(tmp_path / "out.png")
    assert again.metadata["icc_profile"] == srgb and torch.equal(again.color, photo.color)

    edited = photo.to_levels(photo.color * 0.5)
    assert np.array_equal(edited[..., :3], to_levels16(photo.color * 0.5).permute(1, 2, 0).numpy())
    if channels == 4:
        assert np.array_equal(edited[..., 3], levels[..., 3])  # the alpha channel, at its 16 bits
        alpha = torch.from_numpy(levels[..., 3].astype(np.float32) / 65535)
        assert torch.allclose(photo.over_white(), photo.color * alpha + 1 - alpha, atol=1e-6)
        assert photo.to_image(photo.color).mode == "RGBA"  # PIL's nearest: 8 bits
    assert encode_photo(photo.color, tmp_path / "out.jpg", photo)[:2] == b"\xff\xd8"  # other formats: 8 bits


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_sixteen_bit_colour_png_is_turned_upright_as_pillow_turns_it(tmp_path: Path, orientation: int) -> None:
    levels = _levels16(24, 40, 3)
    levels[:6, :10] = 0  # a dark corner shows where the top left went
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    (tmp_path / "rotated.png").write_bytes(encode_png16(levels, exif=exif.tobytes()))
    photo = read_photo(tmp_path / "rotated.png")
    with Image.open(tmp_path / "rotated.png") as img:
        upright = np.asarray(ImageOps.exif_transpose(img))
    assert np.array_equal((photo.to_levels(photo.color) >> 8).astype(np.uint8), upright)


def test_a_sixteen_bit_rgb_png_with_a_transparent_colour_gets_a_sixteen_bit_alpha(tmp_path: Path) -> None:
    levels = _levels16(8, 8, 3)
    levels[2, 3] = (1000, 2000, 3000)
    data = bytearray(encode_png16(levels))
    at = data.index(b"IDAT") - 4
    trns = struct.pack(">HHH", 1000, 2000, 3000)
    chunk = struct.pack(">I", 6) + b"tRNS" + trns + struct.pack(">I", zlib.crc32(b"tRNS" + trns))
    (tmp_path / "trns.png").write_bytes(bytes(data[:at]) + chunk + bytes(data[at:]))
    photo = read_photo(tmp_path / "trns.png")
    assert photo.bits == 16 and photo.alpha is not None
    alpha = photo.to_levels(photo.color)[..., 3]
    assert alpha[2, 3] == 0 and (alpha == 65535).sum() == 63
