"""Variants of album photos: the same photo under random mild edits (exposure, colour, haze).

Asking "which version do you prefer?" about variants teaches retouching taste directly.
Variants are written into the album's ``_variants/`` folder as ``<stem>__v<k>.jpg`` (``k``
the first free number, so no file is ever overwritten), and ``persaes personalize ALBUM``
sees them as album photos; each edit is described in ``_variants/edits.jsonl`` as
``{"variant", "source", "edit": {...}}``.

Example:
    >>> import json, tempfile
    >>> album = Path(tempfile.mkdtemp())
    >>> image = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))   # the photo beach.jpg
    >>> write_variant(album, "beach.jpg", image, seed=3)
    '_variants/beach__v1.jpg'
    >>> key = write_variant(album, "beach.jpg", image, seed=3)   # the next free number: nothing is overwritten
    >>> key, is_variant(key)
    ('_variants/beach__v2.jpg', True)
    >>> with Image.open(album / key) as variant:
    ...     variant.size
    (64, 48)
    >>> records = [json.loads(line) for line in (album / VARIANTS_DIR / "edits.jsonl").read_text().splitlines()]
    >>> [(r["variant"], r["source"]) for r in records]
    [('_variants/beach__v1.jpg', 'beach.jpg'), ('_variants/beach__v2.jpg', 'beach.jpg')]
    >>> sorted(records[0]["edit"])
    ['dehaze', 'ev', 'gains', 'kind', 'saturation']
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from persaes.io.atomic import atomic_write_bytes
from persaes.io.images import to_pil
from persaes.io.jsonl import append_json_line
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

    Returns:
        The variant's album-relative key, ``_variants/<stem>__v<k>.jpg``.

    Raises:
        ValueError: ``image`` is not one photo of shape 1×3×H×W.
    """
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"image must be one photo of shape (1, 3, H, W), got {tuple(image.shape)}")
    stem = Path(source).stem
    k = 1
    while taken(key := f"{VARIANTS_DIR}/{stem}__v{k}.jpg") or (root / key).exists():
        k += 1
    generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{key}".encode("utf-8", "surrogateescape")))
    edited, description = random_edit(image, generator)
    path = root / key
    path.parent.mkdir(exist_ok=True)
    atomic_write_bytes(path, jpeg_bytes(to_pil(edited[0])))
    append_json_line(path.parent / "edits.jsonl", {"variant": key, "source": source, "edit": _edit_record(description)})
    return key
