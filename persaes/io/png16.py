"""16-bit PNG files, which Pillow reads at 8 bits (colour) and cannot write: their header, levels and encoding.

:func:`png_header` reads a PNG's IHDR, :func:`decode_png16` its levels losslessly (with torchvision),
:func:`to_levels16` quantizes float to 16-bit levels (rounded half up, as
:func:`persaes.io.images.to_bytes` does to 8 bits) and :func:`encode_png16` writes a PNG of them with
its colour profile, DPI, EXIF and text chunks.

Example:
    >>> levels = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4) * 2000   # 3×2 RGBA, 16 bits
    >>> data = encode_png16(levels, dpi=(300, 300), text={"Title": "été"})
    >>> png_header(data)
    (3, 2, 16, 6)
    >>> bool((decode_png16(data).permute(1, 2, 0).numpy() == levels).all())
    True
    >>> import io
    >>> from PIL import Image
    >>> with Image.open(io.BytesIO(data)) as img:                 # Pillow opens it (at 8 bits)
    ...     img.size, img.mode, round(img.info["dpi"][0]), img.text
    ((3, 2), 'RGBA', 300, {'Title': 'été'})
"""

from __future__ import annotations

import struct
import warnings
import zlib
from collections.abc import Mapping

import numpy as np
import torch
from PIL import PngImagePlugin
from torch import Tensor
from torchvision.io import ImageReadMode, decode_png

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}
"""PNG colour type by number of channels: grey, grey + alpha, RGB, RGBA."""
_IDAT_SIZE = 1 << 20


def png_header(data: bytes) -> tuple[int, int, int, int] | None:
    """``(width, height, bit_depth, colour_type)`` from a PNG's IHDR; None if ``data`` does not start like a PNG."""
    if len(data) < 29 or not data.startswith(SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", data[16:26])
    return width, height, bit_depth, colour_type


def decode_png16(data: bytes) -> Tensor:
    """A PNG's levels as stored (losslessly, 16 bits kept): :math:`(C, H, W)` ``torch.uint16``, C as in the file.

    Pillow reads 16-bit colour at 8 bits; torchvision's decoder keeps every level. torchvision 0.29
    deprecates its image decoders in favour of TorchCodec; they still decode, and the warning it
    gives on every call is not the user's concern, so it is silenced here.

    Raises:
        RuntimeError: not a PNG torchvision can decode.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        return decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.UNCHANGED)


def to_levels16(image: Tensor) -> Tensor:
    """A float tensor's 16-bit levels, rounded to the nearest, halves up (``level / 65535`` gives them back).

    Args:
        image: floating point, any shape; clipped to ``[0, 1]``.

    Returns:
        int32 of the same shape, in ``[0, 65535]`` (torch has few ops for uint16).

    Example:
        >>> to_levels16(torch.tensor([0.0, 0.5, 1.0, 1.5])).tolist()
        [0, 32768, 65535, 65535]
    """
    if not image.is_floating_point():
        raise ValueError(f"image must be a floating-point tensor, got {image.dtype}")
    return (image.clamp(0.0, 1.0) * 65535 + 0.5).to(torch.int32)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _latin1(key: str) -> bytes:
    raw = key.encode("latin-1")  # UnicodeEncodeError is a ValueError
    if not 1 <= len(raw) <= 79 or b"\0" in raw:
        raise ValueError(f"PNG text key must be 1 to 79 Latin-1 characters, got {key!r}")
    return raw


def _text_chunk(key: str, value: str) -> bytes:
    """A tEXt chunk where the text is Latin-1, else iTXt (UTF-8, with the language and key it was read with)."""
    name = _latin1(key)
    if not isinstance(value, PngImagePlugin.iTXt):
        try:
            return _chunk(b"tEXt", name + b"\0" + value.encode("latin-1"))
        except UnicodeEncodeError:
            pass
    lang = (getattr(value, "lang", None) or "").encode("latin-1")
    tkey = (getattr(value, "tkey", None) or "").encode("utf-8")
    return _chunk(b"iTXt", name + b"\0\0\0" + lang + b"\0" + tkey + b"\0" + str(value).encode("utf-8"))


def encode_png16(levels: np.ndarray, *, icc_profile: bytes | None = None, dpi: tuple[float, float] | None = None,
                 exif: bytes | None = None, text: Mapping[str, str] | None = None) -> bytes:
    """A 16-bit PNG file of ``levels`` (Pillow cannot write 16-bit colour).

    Scanlines are 'up'-filtered and zlib-compressed; samples are big-endian.

    Args:
        levels: :math:`(H, W, C)` (or :math:`(H, W)`) uint16; C is 1 (grey), 2 (grey, alpha), 3 (RGB) or 4 (RGBA).
        icc_profile: written as an iCCP chunk.
        dpi: written as a pHYs chunk (pixels per metre, rounded).
        exif: written as an eXIf chunk (without the ``Exif`` prefix it may have).
        text: written as tEXt chunks, iTXt where a text is not Latin-1 (or was read from an iTXt chunk).

    Raises:
        ValueError: levels of another shape or type, or a text key PNG cannot hold.
    """
    levels = np.asarray(levels)
    if levels.ndim == 2:
        levels = levels[..., None]
    if levels.dtype != np.uint16 or levels.ndim != 3 or levels.shape[2] not in COLOR_TYPES or 0 in levels.shape:
        raise ValueError(f"levels must be (H, W, 1 to 4) uint16, got {levels.shape} {levels.dtype}")
    height, width, channels = levels.shape
    raw = np.ascontiguousarray(levels, dtype=">u2").view(np.uint8).reshape(height, width * channels * 2)
    rows = np.empty((height, raw.shape[1] + 1), dtype=np.uint8)
    rows[:, 0] = 2  # 'up': each byte minus the one above (the first row: minus 0)
    rows[0, 1:] = raw[0]
    np.subtract(raw[1:], raw[:-1], out=rows[1:, 1:])  # wraps modulo 256, as the filter does
    compressed = zlib.compress(rows.tobytes(), 6)
    del rows, raw
    parts = [SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, COLOR_TYPES[channels], 0, 0, 0))]
    if icc_profile:
        parts.append(_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc_profile)))
    if dpi:
        parts.append(_chunk(b"pHYs", struct.pack(">IIB", int(dpi[0] / 0.0254 + 0.5), int(dpi[1] / 0.0254 + 0.5), 1)))
    if exif:
        parts.append(_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif))
    for key, value in (text or {}).items():
        parts.append(_text_chunk(key, value))
    parts.extend(_chunk(b"IDAT", compressed[i:i + _IDAT_SIZE]) for i in range(0, len(compressed), _IDAT_SIZE))
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)

