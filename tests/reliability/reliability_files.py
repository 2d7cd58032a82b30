"""Odd and broken photo files for the reliability tests, made with PIL (and by hand where PIL can't).

Each maker writes one file into a folder and returns its path. :data:`GOOD` makers give files every
command must process; :data:`BAD` makers give files every command must name on stderr and skip.
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = Path(__file__).resolve().parents[1] / "fixtures" / "photos"
BIRD = PHOTOS / "Bird3.jpg"  # 500x400
CAT = PHOTOS / "Cat3.jpg"

Maker = Callable[[Path], Path]


def small(size: tuple[int, int] = (96, 72)) -> Image.Image:
    """A real photo shrunk, so the retouch runs stay fast."""
    return Image.open(BIRD).convert("RGB").resize(size, Image.Resampling.BICUBIC)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, rows: bytes) -> bytes:
    """A PNG written by hand (PIL cannot write 16-bit RGB, nor lie about its size)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(rows))
            + _png_chunk(b"IEND", b""))


# -- files every command must process -------------------------------------------------------------------------------

def rgba_png(folder: Path) -> Path:
    img = small().convert("RGBA")
    alpha = Image.linear_gradient("L").resize(img.size)
    img.putalpha(alpha)
    img.save(folder / "alpha.png")
    return folder / "alpha.png"


def grey16_png(folder: Path) -> Path:
    array = (np.asarray(small().convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(array).save(folder / "grey16.png")
    assert Image.open(folder / "grey16.png").mode.startswith("I")
    return folder / "grey16.png"


def rgb16_png(folder: Path) -> Path:
    array = np.asarray(small(), dtype=np.uint16) * 257
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)
    path = folder / "rgb16.png"
    path.write_bytes(png_bytes(array.shape[1], array.shape[0], 16, 2, rows))
    return path


def greyscale_jpeg(folder: Path) -> Path:
    small().convert("L").save(folder / "grey.jpg", quality=90)
    return folder / "grey.jpg"


def cmyk_jpeg(folder: Path) -> Path:
    small().convert("CMYK").save(folder / "cmyk.jpg", quality=90)
    assert Image.open(folder / "cmyk.jpg").mode == "CMYK"
    return folder / "cmyk.jpg"


def palette_gif(folder: Path) -> Path:
    small().convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(folder / "palette.gif")
    return folder / "palette.gif"


def webp(folder: Path) -> Path:
    small().save(folder / "photo.webp", quality=90)
    return folder / "photo.webp"


def one_pixel(folder: Path) -> Path:
    Image.new("RGB", (1, 1), (200, 120, 40)).save(folder / "one.png")
    return folder / "one.png"


def panorama(folder: Path) -> Path:
    """12000x300, made by tiling a real photo strip."""
    strip = Image.open(BIRD).convert("RGB").resize((500, 300))
    pano = Image.new("RGB", (12000, 300))
    for x in range(0, 12000, 500):
        pano.paste(strip, (x, 0))
    pano.save(folder / "panorama.jpg", quality=80)
    return folder / "panorama.jpg"


def exif_rotated(folder: Path, orientation: int = 6, name: str = "rotated.jpg") -> Path:
    """A 96x72 photo stored with EXIF orientation ``orientation`` (6: turn 90° clockwise to view)."""
    img = small()
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(folder / name, exif=exif.tobytes(), quality=95)
    return folder / name


def odd_name(folder: Path) -> Path:
    path = folder / "my photo – été 日本 ü.jpg"
    small().save(path, quality=90)
    return path


GOOD: dict[str, Maker] = {
    "png-alpha": rgba_png,
    "png-16bit-grey": grey16_png,
    "png-16bit-rgb": rgb16_png,
    "greyscale": greyscale_jpeg,
    "cmyk-jpeg": cmyk_jpeg,
    "palette-gif": palette_gif,
    "webp": webp,
    "1x1": one_pixel,
    "panorama": panorama,
    "exif-rotated": exif_rotated,
    "space-non-ascii-name": odd_name,
}


# -- files every command must refuse, naming them ----------------------------------------------------------------

def zero_bytes(folder: Path) -> Path:
    (folder / "empty.jpg").write_bytes(b"")
    return folder / "empty.jpg"


def truncated_jpeg(folder: Path) -> Path:
    data = CAT.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return folder / "truncated.jpg"


def text_as_jpeg(folder: Path) -> Path:
    (folder / "notes.jpg").write_text("shopping list: eggs, milk\n")
    return folder / "notes.jpg"


def png_bomb(folder: Path) -> Path:
    """A 69-byte PNG whose header claims 20000x10000 (200 megapixels)."""
    path = folder / "bomb.png"
    path.write_bytes(png_bytes(20000, 10000, 8, 2, b"\x00" * 64))
    return path


def jpeg_bomb(folder: Path) -> Path:
    """A small real JPEG whose SOF header is patched to claim 20000x10000."""
    data = bytearray(_jpeg_bytes())
    i = 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5:i + 9] = struct.pack(">HH", 10000, 20000)  # height, width
            break
        i += 2 + length
    else:
        raise AssertionError("no SOF marker")
    path = folder / "bomb.jpg"
    path.write_bytes(bytes(data))
    return path


def _jpeg_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    small((32, 24)).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def link_loop_file(folder: Path) -> Path:
    """A file link pointing at itself."""
    path = folder / "loop.jpg"
    os.symlink(path.name, path)
    return path


BAD: dict[str, Maker] = {
    "zero-byte": zero_bytes,
    "truncated-jpeg": truncated_jpeg,
    "text-named-jpg": text_as_jpeg,
    "png-bomb-200mp": png_bomb,
    "jpeg-bomb-200mp": jpeg_bomb,
    "self-link-loop": link_loop_file,
}


def folder_link_loops(folder: Path) -> None:
    """Folder links that loop: ``folder/again -> .`` and ``folder/sub/up -> ..``."""
    (folder / "again").symlink_to(".", target_is_directory=True)
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "up").symlink_to("..", target_is_directory=True)


def copy_photo(src: Path, folder: Path, name: str | None = None) -> Path:
    target = folder / (name or src.name)
    shutil.copy(src, target)
    return target
