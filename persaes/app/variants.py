"""Variants of album photos: the same photo under random mild edits (exposure, colour, haze).

Asking "which version do you prefer?" about variants teaches retouching taste directly.
Variants are written into the album's ``_variants/`` folder as ``<stem>__v<k>.jpg`` (``k``
the first free number, so no file is ever overwritten), and ``persaes personalize ALBUM``
sees them as album photos; each edit is described in ``_variants/edits.jsonl`` as
``{"variant", "source", "edit": {...}}``.

Example::

    >>> key = write_variant(Path("album"), "beach.jpg", image, seed=3)   # doctest: +SKIP
    >>> key                                                              # doctest: +SKIP
    '_variants/beach__v1.jpg'
"""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from persaes.io.atomic import atomic_write_bytes
from persaes.io.preferences import json_line
from retouch.degrade import random_edit

VARIANTS_DIR = "_variants"
"""Album subfolder that holds the edited variants."""
VARIANT_MAX_SIDE = 1600
"""Longer side, in pixels, of the variants written."""
JPEG_QUALITY = 92


def is_variant(key: str) -> bool:
    """Whether an album-relative key names a variant."""
    return key.startswith(VARIANTS_DIR + "/")


def jpeg_bytes(image: Image.Image) -> bytes:
    """An image encoded as JPEG (quality :data:`JPEG_QUALITY`)."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """A 1×3×H×W tensor in [0, 1] as an 8-bit RGB image."""
    array = image[0].clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(array)


def _append_json_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line durably (flushed and fsync'ed)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json_line(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _edit_record(description: dict[str, Any]) -> dict[str, Any]:
    """The first (only) image's entries of a ``random_edit`` description, as JSON values."""
    record: dict[str, Any] = {}
    for name, value in description.items():
        first = value[0]
        if isinstance(first, torch.Tensor):
            first = [round(v, 4) for v in first.tolist()] if first.ndim else round(first.item(), 4)
        record[name] = first
    return record


def write_variant(root: Path, source: str, image: torch.Tensor, seed: int,
                  taken: Callable[[str], bool] = lambda key: False) -> str:
    """Write one random edit of ``image`` (album photo ``source``) as a new variant; its album key.

    Args:
        root: the album folder.
        source: the photo's album-relative key.
        image: the photo, 1×3×H×W in ``[0, 1]``.
        seed: with the new key, fixes the edit.
        taken: keys to treat as used besides existing files.
    """
    stem = Path(source).stem
    k = 1
    while taken(key := f"{VARIANTS_DIR}/{stem}__v{k}.jpg") or (root / key).exists():
        k += 1
    generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{key}".encode("utf-8", "surrogateescape")))
    edited, description = random_edit(image, generator)
    path = root / key
    path.parent.mkdir(exist_ok=True)
    atomic_write_bytes(path, jpeg_bytes(tensor_to_pil(edited)))
    _append_json_line(path.parent / "edits.jsonl", {"variant": key, "source": source, "edit": _edit_record(description)})
    return key
