"""Reading photos safely: folders, odd formats, EXIF orientation, decompression bombs.

Every failure is an :class:`ImageError` whose message is one line naming the file and the
problem, so callers can report it and carry on with the other files.

Images become float tensors in ``[0, 1]`` with :func:`to_tensor` and go back to 8-bit levels,
rounded half up, with :func:`to_bytes` (as PIL images with :func:`to_pil`).

A photo to retouch is read with :func:`read_photo` instead: its colour at the file's own precision
(16-bit greyscale, and 16-bit colour PNG, as 16-bit), with its alpha channel and its metadata set aside, so
:meth:`Photo.to_image` gives back an image of the same kind (greyscale or colour, alpha, bit depth).

Example:
    >>> import tempfile
    >>> y, x = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 64), indexing="ij")
    >>> photo = torch.stack([x, y, 1 - x])                     # a 64×48 colour gradient
    >>> path = Path(tempfile.mkdtemp()) / "photo.png"
    >>> to_pil(photo).save(path)
    >>> img = load_image(path)
    >>> img.shape, float(img.min()) >= 0.0, float(img.max()) <= 1.0
    (torch.Size([3, 48, 64]), True, True)
    >>> torch.equal(to_bytes(img), to_bytes(photo))           # PNG keeps the 8-bit levels
    True
    >>> load_image(path, max_side=32).shape
    torch.Size([3, 24, 32])
    >>> try:
    ...     load_image(path.with_name("missing.jpg"))
    ... except ImageError as err:
    ...     print(str(err).endswith("missing.jpg: no such file"))
    True
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch
from kornia.color import rgb_to_grayscale
from PIL import ExifTags, Image, ImageOps
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor, to_pil_image

from persaes.io.png16 import decode_png16, png_header, to_levels16

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
MAX_PIXELS = 100_000_000
"""Images whose header claims more pixels than this are refused (decompression bombs)."""


class ImageError(ValueError):
    """A file that is not a usable image; ``str(err)`` is one line naming the file."""


def is_image_name(path: Path) -> bool:
    """Whether ``path`` has a known image suffix (case-insensitive)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def iter_images(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Image files under ``paths`` (files as given; folders recursively, sorted).

    Symbolic links to folders are not followed (no loops); links to files are kept, broken ones
    too (reading them names the problem). Special files (FIFOs, devices, sockets) are left out:
    reading one could block forever.
    """
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found: list[Path] = []
            for root, dirs, files in os.walk(path, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                names = [Path(root) / f for f in files if not f.startswith(".") and is_image_name(Path(f))]
                found.extend(p for p in names if p.is_file() or not p.exists())
            yield from sorted(found)
        else:
            yield path


def open_rgb(path: str | os.PathLike[str], max_side: int | None = None) -> Image.Image:
    """Open an image as upright 8-bit RGB (EXIF orientation applied, alpha dropped over white).

    Args:
        path: the file.
        max_side: if given, JPEGs are decoded at reduced scale (never below ``max_side``)
            and the result is shrunk so its longer side is at most ``max_side``.

    Raises:
        ImageError: missing, empty, not an image, truncated, or too many pixels.
    """
    rgb = _decode(Path(path), max_side, lambda _, upright: _to_rgb(upright))
    if max_side is not None and max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return rgb


_Decoded = TypeVar("_Decoded")


def _decode(path: Path, max_side: int | None, convert: Callable[[Image.Image, Image.Image], _Decoded]) -> _Decoded:
    """``convert(file, upright)`` of a checked, fully decoded image file and its upright copy (EXIF applied).

    Raises:
        ImageError: missing, empty, not an image, truncated, or too many pixels; or ``convert`` failed.
    """
    if not path.exists():
        raise ImageError(f"{path}: {'broken or looping link' if path.is_symlink() else 'no such file'}")
    if not path.is_file():
        raise ImageError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS is checked below
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise ImageError(f"{path}: {width}x{height} is more than {MAX_PIXELS // 1_000_000} megapixels, "
                                     "refused")
                if max_side is not None and img.format == "JPEG":
                    img.draft("RGB", (max_side, max_side))
                img.load()
                return convert(img, ImageOps.exif_transpose(img))
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: refused as a decompression bomb ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"{path}: not a readable image ({reason})") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(img, dtype=np.float64)
        top = 65535.0 if array.max() > 255 else 255.0
        grey = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
        return grey.convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        base = Image.new("RGB", img.size, (255, 255, 255))
        base.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        return base
    return img.convert("RGB")


def to_tensor(img: Image.Image) -> Tensor:
    """A PIL image as a float tensor in ``[0, 1]``.

    Args:
        img: any mode; converted to RGB first.

    Returns:
        :math:`(3, H, W)` float32, each 8-bit level divided by 255.
    """
    return pil_to_tensor(img.convert("RGB")).float().div_(255.0)


def to_bytes(image: Tensor) -> Tensor:
    """A float tensor's 8-bit levels, rounded to the nearest, halves up (the inverse of :func:`to_tensor`).

    Args:
        image: floating point, any shape; clipped to ``[0, 1]``.

    Returns:
        uint8 of the same shape.
    """
    if not image.is_floating_point():
        raise ValueError(f"image must be a floating-point tensor, got {image.dtype}")
    return (image.clamp(0.0, 1.0) * 255 + 0.5).to(torch.uint8)


def to_pil(image: Tensor) -> Image.Image:
    """A float image as an 8-bit RGB PIL image, its levels from :func:`to_bytes`.

    Args:
        image: :math:`(3, H, W)` in ``[0, 1]`` (clipped), on the CPU.

    Returns:
        An RGB image of size ``W×H``.

    Example:
        >>> to_pil(torch.full((3, 2, 4), 0.5)).getpixel((0, 0))
        (128, 128, 128)
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must have shape (3, H, W), got {tuple(image.shape)}")
    return to_pil_image(to_bytes(image), "RGB")


def load_image(path: str | os.PathLike[str], max_side: int | None = None) -> Tensor:
    """Read a file as a float tensor 3×H×W in ``[0, 1]`` (see :func:`open_rgb`)."""
    return to_tensor(open_rgb(path, max_side))


_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_LAYOUT_TAGS = frozenset({254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 317, 320,
                          322, 323, 324, 325, 338, 339, 340, 341, 513, 514, 530, 531, 532, 34675})
"""EXIF (TIFF) tags that say how a file stores its pixels (size, depth, strips, thumbnail, colour profile): a TIFF
lists them among its EXIF, and carried over they would describe the output's pixels wrongly."""


@dataclass
class Photo:
    """A photo read for retouching: its colour at the file's precision, its alpha and metadata set aside.

    An edit applies to :attr:`color` only; :meth:`to_image` puts the edited colour back into an image
    of the file's kind (greyscale or colour, 8 or 16 bits) with the alpha channel as it was read;
    16-bit colour, which PIL cannot hold, is given at 16 bits by :meth:`to_levels` instead.

    Attributes:
        color: :math:`(3, H, W)` float32 in ``[0, 1]``, upright; a greyscale photo's three channels are equal.
        alpha: the alpha channel as read (mode ``"L"``; ``"I;16"`` for a 16-bit colour PNG), or None.
        grey: whether the file is greyscale.
        bits: bits per level: 16 for 16-bit greyscale and 16-bit colour PNG (a 16-bit colour TIFF is read at 8).
        metadata: what to write back beside the pixels, where the file had it: ``exif`` (bytes,
            orientation upright, storage tags left out), ``icc_profile`` (only one for the output's
            colour space: RGB, or grey), ``dpi``, ``text`` (PNG text chunks), ``comment`` and ``xmp``.
    """

    color: Tensor
    alpha: Image.Image | None = None
    grey: bool = False
    bits: int = 8
    metadata: dict[str, Any] = field(default_factory=dict)

    def over_white(self, color: Tensor | None = None) -> Tensor:
        """The photo as shown over white (its alpha applied), with ``color`` (:math:`(*, 3, H, W)`) for its colour."""
        color = self.color if color is None else color
        if self.alpha is None:
            return color
        alpha = self._alpha().to(color.device, color.dtype)
        return color * alpha + (1.0 - alpha)

    def _alpha(self) -> Tensor:
        """The alpha channel, :math:`(1, H, W)` float32 in ``[0, 1]``."""
        assert self.alpha is not None
        if self.alpha.mode in _SIXTEEN_BIT:
            return torch.from_numpy(np.asarray(self.alpha, dtype=np.float32) / 65535.0)[None]
        return pil_to_tensor(self.alpha).float().div_(255.0)

    def to_levels(self, color: Tensor) -> np.ndarray:
        """The 16-bit levels of a 16-bit colour photo with ``color`` for its colour and the alpha channel as read.

        Args:
            color: :math:`(3, H, W)` in ``[0, 1]`` (clipped), e.g. the retouched :attr:`color`.

        Returns:
            :math:`(H, W, 3)` or, with alpha, :math:`(H, W, 4)` uint16, levels rounded half up
            (:func:`~persaes.io.png16.to_levels16`); write them with :func:`~persaes.io.png16.encode_png16`.
        """
        color = color.detach().cpu().float()
        if color.shape != self.color.shape:
            raise ValueError(f"color must have the photo's shape {tuple(self.color.shape)}, got {tuple(color.shape)}")
        if self.grey or self.bits != 16:
            raise ValueError("to_levels is for 16-bit colour photos; use to_image")
        levels = to_levels16(color).permute(1, 2, 0).numpy().astype(np.uint16)
        if self.alpha is None:
            return levels
        alpha = np.asarray(self.alpha).astype(np.uint16)
        return np.concatenate([levels, alpha[..., None]], axis=2)

    def to_image(self, color: Tensor) -> Image.Image:
        """An image of the photo's kind with ``color`` for its colour and the alpha channel as read.

        Args:
            color: :math:`(3, H, W)` in ``[0, 1]`` (clipped), e.g. the retouched :attr:`color`.

        Returns:
            Mode ``"I;16"`` (16-bit greyscale), ``"L"``/``"LA"`` (greyscale) or ``"RGB"``/``"RGBA"``
            (16-bit colour too, at 8 bits: its 16 bits are :meth:`to_levels`).
        """
        color = color.detach().cpu().float()
        if color.shape != self.color.shape:
            raise ValueError(f"color must have the photo's shape {tuple(self.color.shape)}, got {tuple(color.shape)}")
        if not self.grey:
            img = to_pil(color)
        elif self.bits == 16:
            levels = (rgb_to_grayscale(color).clamp(0.0, 1.0)[0] * 65535 + 0.5).to(torch.int32)
            img = Image.fromarray(levels.numpy().astype(np.uint16))
        else:
            img = to_pil_image(to_bytes(rgb_to_grayscale(color)), "L")
        if self.alpha is not None:
            img.putalpha(self.alpha if self.alpha.mode == "L" else to_pil_image(to_bytes(self._alpha()), "L"))
        return img


def read_photo(path: str | os.PathLike[str]) -> Photo:
    """Read a photo to retouch: upright, at the file's precision, alpha and metadata set aside (see :class:`Photo`).

    Greyscale files (1-bit, 8-bit, 16-bit) stay greyscale, RGBA/LA and palette or RGB files with a
    transparent colour keep their alpha; other modes (CMYK, YCbCr, ...) are read as RGB. A 16-bit
    colour PNG (RGB or RGBA, which PIL reads at 8 bits) is decoded at 16 bits by
    :func:`~persaes.io.png16.decode_png16`, its alpha kept at 16 bits (see :meth:`Photo.to_levels`).

    Raises:
        ImageError: missing, empty, not an image, truncated, or too many pixels.

    Example:
        >>> import tempfile
        >>> levels = np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)
        >>> path = Path(tempfile.mkdtemp()) / "grey16.png"
        >>> Image.fromarray(levels).save(path)                           # 3,072 levels of grey, 16 bits
        >>> photo = read_photo(path)
        >>> photo.color.shape, photo.grey, photo.bits, photo.alpha is None
        (torch.Size([3, 48, 64]), True, 16, True)
        >>> again = photo.to_image(photo.color)
        >>> again.mode, bool((np.asarray(again) == levels).all())
        ('I;16', True)
    """
    path = Path(path)
    return _decode(path, None, lambda original, upright: _photo(original, upright, path))


_TRANSPOSES: dict[int, Callable[[Tensor], Tensor]] = {
    2: lambda t: t.flip(-1), 3: lambda t: t.flip(-2, -1), 4: lambda t: t.flip(-2),
    5: lambda t: t.transpose(-2, -1), 6: lambda t: t.rot90(-1, (-2, -1)), 7: lambda t: t.transpose(-2, -1).flip(-2, -1),
    8: lambda t: t.rot90(1, (-2, -1))}
"""What :func:`PIL.ImageOps.exif_transpose` does for each EXIF orientation, on a :math:`(C, H, W)` tensor."""


def _photo16(original: Image.Image, upright: Image.Image, path: Path) -> Photo | None:
    """A 16-bit RGB or RGBA PNG decoded at 16 bits (PIL reads it at 8); None for any other file."""
    if original.format != "PNG":
        return None
    with open(path, "rb") as handle:
        header = png_header(handle.read(29))
    if header is None or header[2] != 16 or header[3] not in (2, 6):
        return None
    levels = decode_png16(path.read_bytes()).to(torch.int32)  # few ops take uint16
    try:
        orientation = int(original.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # noqa: BLE001 - EXIF PIL cannot parse: exif_transpose left the pixels as they are too
        orientation = 1
    if orientation in _TRANSPOSES:  # as exif_transpose turned ``upright``
        levels = _TRANSPOSES[orientation](levels)
    if levels.shape[0] not in (3, 4) or (levels.shape[2], levels.shape[1]) != upright.size:
        raise ImageError(f"{path}: 16-bit levels of shape {tuple(levels.shape)} do not match the image")
    alpha = levels[3] if levels.shape[0] == 4 else None
    transparent = original.info.get("transparency")
    if alpha is None and isinstance(transparent, tuple) and len(transparent) == 3:  # a tRNS colour: alpha 0 there
        key = torch.tensor(transparent, dtype=torch.int32)[:, None, None]
        alpha = torch.where((levels[:3] == key).all(0), 0, 65535)
    color = levels[:3].float().div_(65535.0).contiguous()
    alpha_image = None if alpha is None else Image.fromarray(alpha.numpy().astype(np.uint16))
    return Photo(color, alpha_image, False, 16, _metadata(original, upright, False))


def _photo(original: Image.Image, upright: Image.Image, path: Path) -> Photo:
    sixteen = _photo16(original, upright, path)
    if sixteen is not None:
        return sixteen
    img = upright
    if img.mode in ("L", "RGB", "P") and img.has_transparency_data:
        img = img.convert("LA" if img.mode == "L" else "RGBA")
    elif img.mode in ("1", "La"):
        img = img.convert("L" if img.mode == "1" else "LA")
    elif img.mode in ("P", "PA", "RGBa"):
        img = img.convert("RGBA" if img.mode != "P" else "RGB")
    alpha = img.getchannel("A") if img.mode in ("LA", "RGBA") else None
    grey, bits = img.mode in ("L", "LA", "I") or img.mode in _SIXTEEN_BIT, 8
    if img.mode in _SIXTEEN_BIT or img.mode == "I":
        levels = np.asarray(img).astype(np.float32)
        bits = 16 if img.mode != "I" or levels.max() > 255 else 8
        color = torch.from_numpy(np.clip(levels / (2.0**bits - 1), 0.0, 1.0))[None].expand(3, -1, -1).contiguous()
    elif grey:
        color = to_tensor(img.getchannel("L"))
    else:
        color = to_tensor(img)
    return Photo(color, alpha, grey, bits, _metadata(original, upright, grey))


def _metadata(original: Image.Image, upright: Image.Image, grey: bool) -> dict[str, Any]:
    """What of the file's metadata to write back (see :attr:`Photo.metadata`), read while the file is open."""
    metadata: dict[str, Any] = {}
    try:
        exif = original.getexif()
        for ifd in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo):  # read now: the file closes before the output is written
            if ifd in exif:
                exif.get_ifd(ifd)
        for tag in _LAYOUT_TAGS & set(exif):
            del exif[tag]
        if len(exif):
            exif[ExifTags.Base.Orientation] = 1  # the pixels are upright now
            metadata["exif"] = exif.tobytes()
    except Exception:  # noqa: BLE001 - EXIF PIL cannot parse or rewrite is left out; the photo is still read
        metadata.pop("exif", None)
    icc = upright.info.get("icc_profile")
    if icc and icc[16:20] == (b"GRAY" if grey else b"RGB "):  # a CMYK photo's profile would misdescribe RGB output
        metadata["icc_profile"] = icc
    for key in ("dpi", "comment", "xmp"):
        if original.info.get(key):
            metadata[key] = original.info[key]
    text = getattr(original, "text", None)
    if text:
        metadata["text"] = dict(text)
    return metadata
