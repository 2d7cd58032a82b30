"""Reading photos safely: folders, odd formats, EXIF orientation, decompression bombs.

Every failure is an :class:`ImageError` whose message is one line naming the file and the
problem, so callers can report it and carry on with the other files.

Images become float tensors in ``[0, 1]`` with :func:`to_tensor` and go back to 8-bit levels,
rounded half up, with :func:`to_bytes` (as PIL images with :func:`to_pil`).

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
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor, to_pil_image

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
    path = Path(path)
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
                img = ImageOps.exif_transpose(img)
                rgb = _to_rgb(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: refused as a decompression bomb ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"{path}: not a readable image ({reason})") from None
    if max_side is not None and max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return rgb


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
