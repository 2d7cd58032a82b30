"""Tensors plus JSON metadata in one safetensors file: the one writer and the one reader.

A file holds named tensors and, under one key of the safetensors header (``"persaes"`` unless
told otherwise), a JSON object with whatever describes them. Writes are atomic (a file is its
old or its complete new content, :mod:`persaes.io.atomic`); reads never unpickle anything and
turn every problem with the file into a :class:`SafetensorsFileError` whose message is one
line naming the file.

Example:
    >>> import tempfile, torch
    >>> folder = tempfile.mkdtemp()
    >>> path = write_safetensors(f"{folder}/a.safetensors", {"w": torch.ones(2)}, {"format": 1})
    >>> tensors, meta = read_safetensors(path)
    >>> tensors["w"].tolist(), meta
    ([1.0, 1.0], {'format': 1})
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from persaes.io.atomic import atomic_path

__all__ = ["METADATA_KEY", "SafetensorsFileError", "read_safetensors", "write_safetensors"]

METADATA_KEY = "persaes"
"""The header key that holds the JSON metadata unless a caller names another."""

_PICKLE = "a pickle or torch.save file; persaes loads only safetensors (pickles can run code)"


class SafetensorsFileError(ValueError):
    """A safetensors file that cannot be used; the message is one line naming the file."""


def _is_pickle(path: str | os.PathLike[str]) -> bool:
    """Whether a file starts like a pickle (protocol 2+) or a ``torch.save`` zip.

    A valid safetensors file can start with the same bytes, so this only words the error
    for a file that safetensors could not read.

    Args:
        path: the file.

    Returns:
        True for a pickle's or a zip's first bytes; False also for a file that cannot be opened.
    """
    try:
        with open(path, "rb") as handle:
            start = handle.read(4)
    except OSError:
        return False
    return start[:1] == b"\x80" or start == b"PK\x03\x04"


def _check_key(key: str) -> None:
    """Refuse a metadata key that is not a non-empty string."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"metadata key must be a non-empty string, got {key!r}")


def write_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    metadata: dict[str, Any] | None = None,
    key: str = METADATA_KEY,
) -> Path:
    """Write ``tensors`` and ``metadata`` (as JSON under ``key``) to ``path`` atomically.

    The tensors are written as detached, contiguous CPU copies; the metadata as
    ``json.dumps(metadata, sort_keys=True)``, so the same inputs give the same bytes. The
    file's folder is created if missing.

    Args:
        path: the file to (re)write.
        tensors: name → tensor.
        metadata: a JSON-able dict, or None for a file without metadata.
        key: the header key that holds the metadata.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: a name that is not a string, a value that is not a tensor, or metadata
            that is not a JSON-able dict.
    """
    _check_key(key)
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{path}: tensors must map names to tensors, got {name!r}: {type(tensor).__name__}")
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError(f"{path}: metadata must be a dict or None, got {type(metadata).__name__}")
    try:
        header = None if metadata is None else {key: json.dumps(metadata, sort_keys=True)}
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: metadata is not JSON-able ({exc})") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    copies = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(copies, str(tmp), metadata=header)
    return path


def _load(path: Path, key: str | None, what: str) -> tuple[dict[str, torch.Tensor], str | None]:
    """The tensors and the raw ``key`` header entry (None when absent) of a readable file."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = None if key is None else (handle.metadata() or {}).get(key)
            return {name: handle.get_tensor(name) for name in handle.keys()}, raw
    except Exception as exc:  # noqa: BLE001 - whatever safetensors or the file system raise, the file is at fault
        if _is_pickle(path):
            raise SafetensorsFileError(f"{path}: {_PICKLE}") from None
        detail = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SafetensorsFileError(f"{path}: not a valid {what} ({detail})") from None


def read_safetensors(
    path: str | os.PathLike[str], key: str | None = METADATA_KEY, what: str = "safetensors file"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the decoded JSON metadata of a file written by :func:`write_safetensors`.

    Args:
        path: the file.
        key: the header key that holds the metadata, required to be there; None to read
            the tensors alone.
        what: what the file should be, for the message about a file safetensors cannot read
            (``"<path>: not a valid <what> (<reason>)"``).

    Returns:
        ``(tensors, metadata)``: name → CPU tensor, and the metadata dict (empty when ``key``
        is None).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        SafetensorsFileError: a pickle or ``torch.save`` file (refused unread), a file
            safetensors cannot read, or metadata that is missing or not a JSON object.
    """
    if key is not None:
        _check_key(key)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    tensors, raw = _load(path, key, what)
    if key is None:
        return tensors, {}
    if raw is None:
        raise SafetensorsFileError(f"{path}: no {key} metadata in the safetensors header")
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError:
        metadata = None
    if not isinstance(metadata, dict):
        raise SafetensorsFileError(f"{path}: the {key} metadata in the safetensors header is not a JSON object")
    return tensors, metadata
