"""Score files: what ``persaes score --out FILE`` writes, and reads back to skip the files already scored.

* ``FILE.json``: the list ``persaes score --json`` prints, ``[{"path": "a.jpg", "score": 6.123}, …]``.
* ``FILE.csv``: a header ``path,score`` and one row per file, the score as ``persaes score`` prints it.

Either is written whole and atomically (:mod:`persaes.io.atomic`), its rows in the order of the files
given. While a run scores, each process appends every finished batch to its own partial file beside the
output, ``FILE.json.part<rank>.jsonl`` (JSON Lines ``{"path": …, "score": …}``, durable per batch), so a
killed run keeps what it had scored; :func:`done_scores` reads the output and the partial files, and
:func:`remove_partials` clears them once the output holds their scores. Scores are matched by path.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> out = Path(tempfile.mkdtemp()) / "scores.csv"
    >>> append_partial(out, 0, [("a.jpg", 6.12345)])
    >>> done_scores(out)
    {'a.jpg': 6.123}
    >>> write_scores(out, [("a.jpg", 6.12345), ("b.jpg", 4.5)])
    >>> remove_partials(out)
    >>> print(out.read_text(encoding="utf-8"), end="")
    path,score
    a.jpg,6.123
    b.jpg,4.500
    >>> done_scores(out)
    {'a.jpg': 6.123, 'b.jpg': 4.5}
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from persaes.core.scorer import format_score
from persaes.io.atomic import atomic_write_bytes
from persaes.io.jsonl import append_json_lines

__all__ = ["FORMATS", "append_partial", "check_score_file", "done_scores", "partial_path", "read_scores",
           "remove_partials", "score_records", "write_scores"]

FORMATS = (".json", ".csv")
"""The suffixes of score files, which choose their format."""

_SURROGATES = "surrogateescape"
"""How a file name that is not UTF-8 is written to CSV: its own bytes, which read back as the same name."""


def check_score_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as a :class:`~pathlib.Path` if it can be a score file: a known suffix, in an existing folder.

    Raises:
        ValueError: another suffix, a missing folder, or a folder at ``path``.
    """
    file = Path(path)
    if file.suffix.lower() not in FORMATS:
        raise ValueError(f"{file}: a score file ends in {' or '.join(FORMATS)}")
    if not file.parent.is_dir():
        raise ValueError(f"{file}: cannot write, folder {file.parent} does not exist")
    if file.is_dir():
        raise ValueError(f"{file}: is a folder")
    return file


def _rounded(score: float) -> float:
    return float(format_score(score))


def score_records(rows: Sequence[tuple[str, float]]) -> list[dict[str, str | float]]:
    """``rows`` (path, score) as the JSON list ``persaes score --json`` prints: ``{"path", "score"}`` objects.

    Example:
        >>> score_records([("a.jpg", 6.12345)])
        [{'path': 'a.jpg', 'score': 6.123}]
    """
    return [{"path": name, "score": _rounded(score)} for name, score in rows]


def write_scores(path: str | os.PathLike[str], rows: Sequence[tuple[str, float]]) -> None:
    """Write ``rows`` (path, score), in order, as the JSON or CSV score file ``path``, atomically.

    Args:
        path: ``….json`` or ``….csv``; its folder must exist.
        rows: each file's path as given and its score (shown with the decimals ``persaes score`` prints).
    """
    file = check_score_file(path)
    if file.suffix.lower() == ".json":
        records = score_records(rows)
        text = json.dumps(records, indent=1, ensure_ascii=False) + "\n"
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # a file name that is not UTF-8: JSON's own \udcXX escapes
            data = (json.dumps(records, indent=1) + "\n").encode("ascii")
    else:
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "score"])
        writer.writerows((name, format_score(score)) for name, score in rows)
        data = buffer.getvalue().encode("utf-8", _SURROGATES)
    atomic_write_bytes(file, data)


def _checked(rows: list[tuple[object, object]], file: Path) -> dict[str, float]:
    scores = {}
    for name, value in rows:
        try:
            score = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            score = math.nan
        if not isinstance(name, str) or isinstance(value, bool) or not math.isfinite(score):
            raise ValueError(f"{file}: not a persaes score file (row {name!r}, {value!r}); "
                             "remove it or choose another --out")
        scores[name] = score
    return scores


def read_scores(path: str | os.PathLike[str]) -> dict[str, float]:
    """The scores in the score file ``path`` by path (empty when there is no such file).

    Raises:
        ValueError: ``path`` is not a JSON or CSV score file as :func:`write_scores` writes them.
    """
    file = check_score_file(path)
    if not file.is_file():
        return {}
    data = file.read_bytes()
    try:
        if file.suffix.lower() == ".json":
            records = json.loads(data.decode("utf-8", _SURROGATES))
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise ValueError("not a JSON list of {path, score} objects")
            return _checked([(r.get("path"), r.get("score")) for r in records], file)
        reader = csv.DictReader(io.StringIO(data.decode("utf-8", _SURROGATES), newline=""))
        if reader.fieldnames != ["path", "score"]:
            raise ValueError(f"CSV header {reader.fieldnames} is not path,score")
        return _checked([(row["path"], row["score"]) for row in reader], file)
    except (ValueError, csv.Error) as exc:
        if str(exc).startswith(str(file)):
            raise
        raise ValueError(f"{file}: not a persaes score file ({exc}); remove it or choose another --out") from None


def partial_path(path: str | os.PathLike[str], rank: int) -> Path:
    """The partial file of process ``rank`` beside the score file ``path`` (``scores.json.part0.jsonl``)."""
    file = Path(path)
    return file.with_name(f"{file.name}.part{rank}.jsonl")


def _partials(path: str | os.PathLike[str]) -> list[Path]:
    """Every partial file beside the score file ``path``, whatever the number of processes that wrote them."""
    file = Path(path)
    return sorted(Path(p) for p in glob.glob(os.path.join(glob.escape(str(file.parent)),
                                                          glob.escape(file.name) + ".part*.jsonl")))


def append_partial(path: str | os.PathLike[str], rank: int, rows: Sequence[tuple[str, float]]) -> None:
    """Append ``rows`` (path, score) to process ``rank``'s partial file beside ``path``, durably."""
    append_json_lines(partial_path(path, rank), score_records(rows))


def _read_partial(file: Path) -> dict[str, float]:
    """The scores of a partial file; a line cut off by a killed run (or otherwise unreadable) is left out."""
    scores = {}
    for line in file.read_bytes().decode("utf-8", _SURROGATES).splitlines():
        try:
            record = json.loads(line)
            name, score = record["path"], float(record["score"])
        except (ValueError, TypeError, KeyError):
            continue
        if isinstance(name, str) and math.isfinite(score):
            scores[name] = score
    return scores


def done_scores(path: str | os.PathLike[str]) -> dict[str, float]:
    """The scores already made for ``path``: the score file's, and those of partial files a killed run left.

    Raises:
        ValueError: ``path`` exists but is not a score file (:func:`read_scores`).
    """
    scores = read_scores(path)
    for file in _partials(path):
        scores.update(_read_partial(file))
    return scores


def remove_partials(path: str | os.PathLike[str], rank: int | None = None) -> None:
    """Remove process ``rank``'s partial file beside ``path``, or every one (``rank`` None)."""
    for file in _partials(path) if rank is None else [partial_path(path, rank)]:
        file.unlink(missing_ok=True)
