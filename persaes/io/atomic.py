r"""Atomic file writes: a file is either its old content or its complete new content.

Every write goes to a temporary file in the same folder, is flushed to disk, and is
then renamed over the target with ``os.replace`` (atomic on POSIX and Windows when
both names are on the same file system, which the same folder guarantees). If
anything fails before the rename, the temporary file is removed and the target is
left untouched.

Example::

    from persaes.io.atomic import atomic_path, atomic_write_text

    atomic_write_text("model/config.json", '{"k": 50}\n')
    with atomic_path("out/photo.png") as tmp:
        image.save(tmp, "PNG")   # renamed when the block ends

Safetensors files are written with :func:`persaes.io.safetensors_file.write_safetensors`, which uses
:func:`atomic_path`.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "remove_stale_temp_files"]

_TEMP_NAME = re.compile(r"\..+\.(?:[a-z0-9_]{8}|[0-9a-f]{12})\.tmp")
"""Names of the temporary files :func:`_new_temp_file` makes, ``.<target name>.<8 random characters>.tmp``
(:func:`tempfile.mkstemp`'s letters, digits and underscores), and of those earlier persaes versions made
(12 hex digits), which a run of one killed mid-write can have left."""


def _read_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


_UMASK = _read_umask()
"""The process umask, read once at import (reading it means setting it, which is not thread-safe)."""


def _new_temp_file(target: Path) -> Path:
    """Create an empty, uniquely named temporary file next to ``target``.

    :func:`tempfile.mkstemp` creates it exclusively (never an existing file), readable only by
    its owner; its final mode is set by :func:`_final_mode` just before the rename.
    """
    folder = target.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"{target}: cannot write, folder {folder} does not exist")
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    return folder / os.path.basename(name)


def _final_mode(target: Path) -> int:
    """The mode the written file gets: the old file's, else 0o666 filtered by the umask."""
    if target.exists():
        return stat.S_IMODE(target.stat().st_mode)
    return 0o666 & ~_UMASK


def _fsync_file(path: Path) -> None:
    """Flush the content of ``path`` to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Flush a folder entry (the rename) to disk; a no-op where folders can't be opened."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    The caller writes the complete new content to the yielded path (any writer that
    takes a file name works). When the ``with`` block ends without an exception the
    temporary file is flushed to disk and renamed over ``path``; on an exception it
    is removed and ``path`` keeps its old content.

    Args:
        path: the file to (re)write; its folder must exist.

    Yields:
        A path in the same folder as ``path`` (an existing empty file).

    Example::

        with atomic_path("out/photo.png") as tmp:
            image.save(tmp, "PNG")
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{target}: cannot write, it is a folder")
    tmp = _new_temp_file(target)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"{target}: the writer removed its temporary file {tmp}")
        os.chmod(tmp, _final_mode(target))  # some writers recreate the file with mode 0600
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace the content of ``path`` with ``data`` atomically.

    Args:
        path: the file to (re)write; its folder must exist.
        data: the complete new content.

    Example::

        atomic_write_bytes("out/thumb.jpg", jpeg_bytes)
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    r"""Replace the content of ``path`` with ``text`` atomically (no newline translation).

    Args:
        path: the file to (re)write; its folder must exist.
        text: the complete new content.
        encoding: text encoding, UTF-8 by default.

    Example::

        atomic_write_text("model/config.json", json.dumps(cfg, indent=2) + "\n")
    """
    atomic_write_bytes(path, text.encode(encoding))


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files that writes into ``folder`` (and its subfolders) left when killed.

    Call it only while nothing else writes there: a running write's temporary file looks the same.

    Returns:
        The removed files.

    Example::

        remove_stale_temp_files("out")   # after a killed run, before resuming it
    """
    removed = []
    for root, _, files in os.walk(folder):
        for name in files:
            if _TEMP_NAME.fullmatch(name):
                path = Path(root) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
