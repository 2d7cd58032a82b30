r"""JSON Lines files that are only ever appended to, one durable line per record.

Each record is one line of UTF-8 JSON (other scripts kept readable) ending in a newline. An
append is flushed and fsync'ed before it returns, so a crash never loses a line already
written; a last line cut off by an earlier crash is ended first, so two records never share a
line (the cut one stays unreadable, the new one reads back).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "answers.jsonl"
    >>> append_json_line(path, {"winner": "café.jpg", "loser": "b.jpg"})
    >>> path.read_text(encoding="utf-8")
    '{"winner": "café.jpg", "loser": "b.jpg"}\n'
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

__all__ = ["append_json_line", "append_json_lines", "json_line"]


def json_line(record: dict[str, Any]) -> str:
    r"""``record`` as one line of JSON (no newline), other scripts kept readable.

    A file name that is not UTF-8 (lone surrogates where the file system had other bytes) becomes
    JSON ``\udcXX`` escapes, which read back as the same name.

    Args:
        record: a JSON-able dict.

    Returns:
        The JSON text, without a line break.

    Example:
        >>> json_line({"name": "été", "odd": "\udcff.jpg"})
        '{"name": "été", "odd": "\\udcff.jpg"}'
    """
    return json.dumps(record, ensure_ascii=False).encode("utf-8", "backslashreplace").decode("utf-8")


def append_json_line(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append ``record`` as one line to the JSON Lines file ``path`` (created if missing), durably.

    Args:
        path: the file; its folder must exist.
        record: a JSON-able dict.

    Raises:
        ValueError: ``record`` is not a dict.
    """
    append_json_lines(path, [record])


def append_json_lines(path: str | os.PathLike[str], records: Sequence[dict[str, Any]]) -> None:
    """Append ``records``, one line each, to the JSON Lines file ``path`` (created if missing), durably.

    One flush and fsync for them all: a batch of records costs one write to disk.

    Args:
        path: the file; its folder must exist.
        records: JSON-able dicts (none: nothing is written).

    Raises:
        ValueError: a record is not a dict.
    """
    for record in records:
        if not isinstance(record, dict):
            raise ValueError(f"{path}: a JSON line must hold a dict, got {type(record).__name__}")
    if not records:
        return
    line = "".join(json_line(record) + "\n" for record in records).encode("utf-8")
    with open(path, "a+b") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                line = b"\n" + line
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
