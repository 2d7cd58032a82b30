"""Rated reference photos (the paper's AVA) behind one interface, ``ReferenceSet``.

Every reference image carries a histogram over the scores 1..10 (10 bins, rows sum
to 1), the target of the generic regressor's EMD loss. Readers:

- ``read_ava``: AVA.txt (``index image_id c1..c10 tag1 tag2 challenge``; ci = votes for score i).
- ``read_ratings_csv``: long per-person ratings (``participant,image,<rating>``) plus an
  image table (``image,file,...``), e.g. OASIS; ratings on any scale are resampled
  onto the 10 bins.
- ``read_score_csv``: ``file,score`` or ``file,h1..h10``.
- ``load_references``: one spec string for the command line.

Image files are only checked to exist and be non-empty (never decoded here); missing
ones are skipped and reported once each in ``ReferenceSet.problems``.

Resampling a score s on the scale [lo, hi] maps it linearly to s' = 1 + (s-lo)*9/(hi-lo)
and splits its mass between the two nearest bins in proportion to closeness, so mass
is conserved and the histogram mean is exactly the mapped mean.

Example::

    refs = load_references("ratings:oasis/ratings_dev.csv:oasis/images.csv:1-7")
    refs.mean_scores()[:3]     # tensor([5.2, 4.9, 6.1]) on the 1..10 scale
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from persaes.core.model import BINS, distribution_to_score

__all__ = [
    "ReferenceSet",
    "load_references",
    "ratings_to_histogram",
    "read_ava",
    "read_ratings_csv",
    "read_score_csv",
    "resample_histogram",
]

log = logging.getLogger("persaes")


@dataclass
class ReferenceSet:
    """Rated reference images.

    Attributes:
        ids: N image ids (unique).
        paths: N image files.
        hists: float32 tensor N×10, non-negative, rows sum to 1; column i is score i+1.
        problems: human-readable non-fatal problems met while reading.

    Example::

        refs = read_ava("AVA.txt", "ava/images")
        small = refs.subset([0, 5, 9])
        small.mean_scores()   # tensor of 3 means in [1, 10]
    """

    ids: list[str]
    paths: list[Path]
    hists: torch.Tensor
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(self.paths) != n:
            raise ValueError(f"ReferenceSet: {n} ids but {len(self.paths)} paths")
        if self.hists.shape != (n, BINS):
            raise ValueError(f"ReferenceSet: hists must be {n}×{BINS}, got {tuple(self.hists.shape)}")
        if len(set(self.ids)) != n:
            raise ValueError("ReferenceSet: ids contain duplicates")
        if n and (
            not torch.isfinite(self.hists).all()
            or (self.hists < 0).any()
            or not torch.allclose(self.hists.sum(1), torch.ones(n, dtype=self.hists.dtype), atol=1e-4)
        ):
            raise ValueError("ReferenceSet: hists must be finite, non-negative, rows summing to 1")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ReferenceSet:
        """The references at ``indices`` (in that order); problems are carried over."""
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        rows = idx.tolist()
        return ReferenceSet(
            ids=[self.ids[i] for i in rows],
            paths=[self.paths[i] for i in rows],
            hists=self.hists[idx],
            problems=list(self.problems),
        )

    def mean_scores(self) -> torch.Tensor:
        """Mean score Σ i·p_i (i = 1..10) per image: tensor N, values in [1, 10]."""
        return distribution_to_score(self.hists)


def _check_scale(scale: tuple[float, float]) -> tuple[float, float]:
    """``scale`` as two floats, or a clear error unless finite with lo < hi."""
    lo, hi = (float(x) for x in scale)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"rating scale must be two finite numbers lo < hi, got {scale!r}")
    return lo, hi


def _split_mass(
    scores: torch.Tensor, mass: torch.Tensor, rows: torch.Tensor, n_rows: int, scale: tuple[float, float]
) -> torch.Tensor:
    """Scatter each score's mass onto the two nearest of 10 bins; returns n_rows×10 float32.

    ``scores``, ``mass``, ``rows`` are 1-D of equal length; scores lie in ``scale``.
    """
    lo, hi = _check_scale(scale)
    position = (scores.to(torch.float64) - lo) * (BINS - 1) / (hi - lo)  # 0..9
    lower = position.floor().clamp(0, BINS - 2).long()
    upper_weight = position - lower
    out = torch.zeros(n_rows, BINS, dtype=torch.float64)
    mass = mass.to(torch.float64)
    out.index_put_((rows, lower), mass * (1 - upper_weight), accumulate=True)
    out.index_put_((rows, lower + 1), mass * upper_weight, accumulate=True)
    return out.to(torch.float32)


def resample_histogram(hist: torch.Tensor, scale: tuple[float, float]) -> torch.Tensor:
    """Resample histograms over K equally spaced scores on ``scale`` onto scores 1..10.

    Bin k of ``hist`` holds the mass at score lo + k·(hi−lo)/(K−1) (so K = 7 for
    integer ratings 1..7). Mass is conserved (no normalisation) and the mean maps
    linearly: mean' = 1 + (mean − lo)·9/(hi − lo).

    Args:
        hist: tensor (..., K), K >= 2, non-negative (counts or probabilities).
        scale: (lo, hi), the scores of the first and last bin.

    Returns:
        float32 tensor (..., 10).

    Example::

        resample_histogram(torch.tensor([0., 0., 0., 1., 0., 0., 0.]), (1, 7))
        # all mass at 4 on 1..7 -> 5.5 on 1..10: bins 5 and 6 get 0.5 each
    """
    if hist.dim() < 1 or hist.shape[-1] < 2:
        raise ValueError(f"resample_histogram: need at least 2 bins, got shape {tuple(hist.shape)}")
    if not torch.isfinite(hist).all() or (hist < 0).any():
        raise ValueError("resample_histogram: hist must be finite and non-negative")
    lo, hi = _check_scale(scale)
    k = hist.shape[-1]
    flat = hist.reshape(-1, k)
    scores = torch.linspace(lo, hi, k, dtype=torch.float64).repeat(flat.shape[0])
    rows = torch.arange(flat.shape[0]).repeat_interleave(k)
    out = _split_mass(scores, flat.reshape(-1), rows, flat.shape[0], (lo, hi))
    return out.reshape(*hist.shape[:-1], BINS)


def ratings_to_histogram(ratings: torch.Tensor, scale: tuple[float, float]) -> torch.Tensor:
    """Histogram over scores 1..10 of individual ratings on ``scale`` (rows sum to 1).

    Each rating counts as one point of mass, mapped linearly to 1..10 and split between
    the two nearest bins. For integer ratings this equals ``resample_histogram`` of
    their counts, normalised.

    Args:
        ratings: 1-D tensor, non-empty, values in [lo, hi] (need not be integers).
        scale: (lo, hi) of the rating scale.

    Returns:
        float32 tensor (10,), sums to 1, mean = 1 + (mean(ratings) − lo)·9/(hi − lo).

    Example::

        ratings_to_histogram(torch.tensor([1., 7.]), (1, 7))   # 0.5 at score 1, 0.5 at 10
    """
    lo, hi = _check_scale(scale)
    if ratings.dim() != 1 or ratings.numel() == 0:
        raise ValueError(f"ratings_to_histogram: need a non-empty 1-D tensor, got shape {tuple(ratings.shape)}")
    if not torch.isfinite(ratings).all() or (ratings < lo).any() or (ratings > hi).any():
        raise ValueError(f"ratings_to_histogram: ratings must lie in [{lo}, {hi}]")
    n = ratings.numel()
    hist = _split_mass(ratings, torch.ones(n), torch.zeros(n, dtype=torch.long), 1, (lo, hi))[0]
    return hist / n


def _image_problem(path: Path) -> str | None:
    """Why ``path`` can't serve as a reference image (cheap checks only), or None."""
    try:
        info = path.stat()
    except OSError:
        return "missing"
    if not path.is_file():
        return "not a file"
    if info.st_size == 0:
        return "empty file"
    if not os.access(path, os.R_OK):
        return "not readable"
    return None


class _Collector:
    """Accumulates references, skipping repeated ids and unusable image files."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.ids: list[str] = []
        self.paths: list[Path] = []
        self.hists: list[torch.Tensor] = []
        self.problems: list[str] = []
        self._seen: set[str] = set()
        self._bad_images = 0

    def add(self, image_id: str, path: Path, hist: torch.Tensor, where: str) -> None:
        """Keep one reference (hist: 10 probabilities) unless its id repeats or its file is unusable."""
        if image_id in self._seen:
            self.problems.append(f"{where}: image {image_id!r} listed again; later entry skipped")
            return
        self._seen.add(image_id)
        reason = _image_problem(path)
        if reason is not None:
            self._bad_images += 1
            self.problems.append(f"{where}: image file {path} {reason}; skipped")
            return
        self.ids.append(image_id)
        self.paths.append(path)
        self.hists.append(hist)

    def build(self) -> ReferenceSet:
        """The ReferenceSet; logs one warning summarising unusable image files."""
        if self._bad_images:
            log.warning(
                "%s: %d image file(s) missing or unusable, skipped (see problems)", self.source, self._bad_images
            )
        hists = torch.stack(self.hists) if self.hists else torch.zeros(0, BINS)
        return ReferenceSet(self.ids, self.paths, hists.to(torch.float32), self.problems)


def _require_file(path: Path, what: str) -> None:
    """Fail with a message naming ``path`` and what it should be, when it is not a file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")


def read_ava(ava_txt: str | os.PathLike[str], image_dir: str | os.PathLike[str]) -> ReferenceSet:
    """Read AVA.txt; image ``image_dir/<image_id>.jpg`` gets its normalised vote counts.

    Lines: ``index image_id c1 ... c10 tag1 tag2 challenge_id``. Malformed lines, lines
    with no votes and missing images are reported and skipped.

    Example::

        refs = read_ava("AVA_dataset/AVA.txt", "AVA_dataset/images")
    """
    ava = Path(ava_txt)
    images = Path(image_dir)
    _require_file(ava, "AVA file")
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: AVA image folder not found")
    out = _Collector(ava)
    with open(ava, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            where = f"{ava}:{number}"
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2 + BINS:
                out.problems.append(f"{where}: expected index, image id and 10 vote counts; skipped")
                continue
            try:
                counts = [int(x) for x in fields[2 : 2 + BINS]]
            except ValueError:
                out.problems.append(f"{where}: vote counts must be integers; skipped")
                continue
            if min(counts) < 0 or sum(counts) == 0:
                out.problems.append(f"{where}: vote counts must be >= 0 with at least one vote; skipped")
                continue
            hist = torch.tensor(counts, dtype=torch.float64)
            out.add(fields[1], images / f"{fields[1]}.jpg", hist / hist.sum(), where)
    return out.build()


def _header(reader: Iterator[list[str]], path: Path) -> list[str]:
    """The stripped header row of a CSV, or a clear error for an empty file."""
    try:
        return [name.strip() for name in next(reader)]
    except StopIteration:
        raise ValueError(f"{path}: empty CSV file, expected a header line") from None


def _read_image_table(table_path: Path, image_root: Path) -> tuple[dict[str, tuple[Path, int]], list[str]]:
    """Parse an image table (``image,file,...``).

    Args:
        table_path: the CSV file.
        image_root: the folder ``file`` is relative to.

    Returns:
        ``(files, problems)``: image name → (its file, its line), in table order, and one line per
        skipped row.
    """
    files: dict[str, tuple[Path, int]] = {}
    problems: list[str] = []
    with open(table_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = _header(reader, table_path)
        if "image" not in header or "file" not in header:
            raise ValueError(f"{table_path}: header must have columns 'image' and 'file', got {header}")
        col_image, col_file = header.index("image"), header.index("file")
        for number, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) <= max(col_image, col_file):
                problems.append(f"{table_path}:{number}: too few columns; skipped")
            elif row[col_image] in files:
                problems.append(f"{table_path}:{number}: image {row[col_image]!r} listed again; skipped")
            else:
                files[row[col_image]] = (image_root / row[col_file], number)
    return files, problems


def _rating_columns(header: list[str], path: Path, rating_column: str | None) -> tuple[int, int, int]:
    """The participant, image and rating columns of a ratings CSV header."""
    if "participant" not in header or "image" not in header or len(header) < 3:
        raise ValueError(f"{path}: header must be participant,image,<rating>, got {header}")
    if rating_column is not None and rating_column not in header:
        raise ValueError(f"{path}: no rating column {rating_column!r} in header {header}")
    col_rating = header.index(rating_column) if rating_column is not None else 2
    return header.index("participant"), header.index("image"), col_rating


def _rating(text: str, lo: float, hi: float) -> float:
    """A rating cell as a number in ``[lo, hi]``; ValueError naming the problem otherwise."""
    try:
        score = float(text)
    except ValueError:
        raise ValueError(f"rating {text!r} is not a number") from None
    if not lo <= score <= hi:
        raise ValueError(f"rating {score:g} outside scale {lo:g}-{hi:g}")
    return score


def _read_ratings(
    ratings_path: Path,
    table_path: Path,
    images: Collection[str],
    excluded: Collection[str],
    scale: tuple[float, float],
    rating_column: str | None,
) -> tuple[list[tuple[str, float]], list[str]]:
    """Parse long per-person ratings (``participant,image,<rating>``).

    Args:
        ratings_path: the CSV file.
        table_path: the image table, named in the problem about an image it lacks.
        images: the image names whose ratings are kept (the table's).
        excluded: participants whose ratings are ignored.
        scale: (lo, hi), already checked.
        rating_column: the rating column's name, or None for the third column.

    Returns:
        ``(ratings, problems)``: (image, rating) in file order, and one line per skipped row or
        unknown image.
    """
    lo, hi = scale
    ratings: list[tuple[str, float]] = []
    unknown: dict[str, int] = {}  # image -> first line
    problems: list[str] = []
    with open(ratings_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        col_person, col_image, col_rating = _rating_columns(_header(reader, ratings_path), ratings_path, rating_column)
        needed = max(col_person, col_image, col_rating)
        for number, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) <= needed:
                problems.append(f"{ratings_path}:{number}: too few columns; skipped")
                continue
            if row[col_person] in excluded:
                continue
            try:
                score = _rating(row[col_rating], lo, hi)
            except ValueError as err:
                problems.append(f"{ratings_path}:{number}: {err}; skipped")
                continue
            if row[col_image] in images:
                ratings.append((row[col_image], score))
            else:
                unknown.setdefault(row[col_image], number)
    return ratings, problems + [f"{ratings_path}:{number}: image {image!r} is not in {table_path}; its ratings skipped"
                                for image, number in unknown.items()]


def read_ratings_csv(
    ratings_csv: str | os.PathLike[str],
    images_csv: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    scale: tuple[float, float] = (1, 7),
    exclude_participants: Collection[str | int] = (),
    rating_column: str | None = None,
) -> ReferenceSet:
    """Per-person ratings → one histogram per image over the ratings of the others.

    Images left with no rating are dropped. Bad rows, images unknown to the table, images
    without ratings and missing files are reported and skipped.

    Args:
        ratings_csv: long ratings, ``participant,image,<rating>`` (columns found by name).
        images_csv: the image table, at least ``image,file``.
        root: the folder ``file`` is relative to (default: the image table's folder); absolute
            files are used as they are.
        scale: (lo, hi) of the rating scale; ratings outside it are reported.
        exclude_participants: participants whose ratings are ignored (e.g. the person being modelled).
        rating_column: the rating column's name; None: the third column, whatever its name
            (``beauty`` in OASIS).

    Returns:
        ReferenceSet in the order of the image table; ids are the ``image`` names.

    Example::

        refs = read_ratings_csv("oasis/ratings_dev.csv", "oasis/images.csv",
                                scale=(1, 7), exclude_participants={"17"})
    """
    ratings_path, table_path = Path(ratings_csv), Path(images_csv)
    _require_file(ratings_path, "ratings CSV")
    _require_file(table_path, "image table CSV")
    lo, hi = _check_scale(scale)
    excluded = {str(p) for p in exclude_participants}
    files, table_problems = _read_image_table(table_path, Path(root) if root is not None else table_path.parent)
    ratings, problems = _read_ratings(ratings_path, table_path, files, excluded, (lo, hi), rating_column)

    order = {image: i for i, image in enumerate(files)}
    rows = torch.tensor([order[image] for image, _ in ratings], dtype=torch.long)
    scores = torch.tensor([score for _, score in ratings], dtype=torch.float64)
    counts = torch.bincount(rows, minlength=len(files)).to(torch.float32)
    sums = _split_mass(scores, torch.ones(len(ratings)), rows, len(files), (lo, hi))
    out = _Collector(ratings_path)
    out.problems = table_problems + problems
    note = f" after excluding {len(excluded)} participant(s)" if excluded else ""
    for image, i in order.items():
        path, number = files[image]
        if counts[i] == 0:
            out.problems.append(f"{table_path}:{number}: image {image!r} has no ratings{note}; skipped")
        else:
            out.add(image, path, sums[i] / counts[i], f"{table_path}:{number}")
    return out.build()


def read_score_csv(csv_file: str | os.PathLike[str]) -> ReferenceSet:
    """Read ``file,score`` (score in 1..10) or ``file,h1,...,h10`` (counts or probabilities).

    A score becomes a histogram by the two-bin split (its mean is the score); h1..h10
    are normalised. ``file`` is relative to the CSV's folder or absolute, and is also
    the id. Bad rows and missing images are reported and skipped.

    Example::

        refs = read_score_csv("my_scores.csv")   # lines like: holiday/IMG_1.jpg,7.5
    """
    path = Path(csv_file)
    _require_file(path, "score CSV")
    hist_columns = [f"h{i}" for i in range(1, BINS + 1)]
    out = _Collector(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = _header(reader, path)
        if header == ["file", "score"]:
            width = 2
        elif header == ["file", *hist_columns]:
            width = 1 + BINS
        else:
            raise ValueError(f"{path}: header must be 'file,score' or 'file,h1,...,h10', got {','.join(header)}")
        for number, row in enumerate(reader, start=2):
            where = f"{path}:{number}"
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != width:
                out.problems.append(f"{where}: expected {width} columns, got {len(row)}; skipped")
                continue
            try:
                values = [float(x) for x in row[1:]]
            except ValueError:
                out.problems.append(f"{where}: values must be numbers; skipped")
                continue
            if width == 2:
                if not 1 <= values[0] <= BINS:
                    out.problems.append(f"{where}: score {values[0]:g} outside 1-10; skipped")
                    continue
                hist = ratings_to_histogram(torch.tensor(values, dtype=torch.float64), (1, BINS))
            else:
                hist = torch.tensor(values, dtype=torch.float64)
                if not torch.isfinite(hist).all() or (hist < 0).any() or hist.sum() <= 0:
                    out.problems.append(f"{where}: h1..h10 must be >= 0 with a positive sum; skipped")
                    continue
                hist = hist / hist.sum()
            out.add(row[0], path.parent / row[0], hist, where)
    return out.build()


_SPEC_HELP = (
    "expected ava:AVA.txt:IMAGE_DIR, ratings:RATINGS.csv:IMAGES.csv[:LO-HI], csv:FILE.csv or a path ending in .csv"
)


def load_references(spec: str) -> ReferenceSet:
    """Read references named by a command-line spec string.

    Specs: ``ava:AVA.txt:IMAGE_DIR``, ``ratings:RATINGS.csv:IMAGES.csv[:LO-HI]``
    (scale default 1-7), ``csv:FILE.csv``, or a bare path ending in ``.csv``.

    Example::

        load_references("ratings:oasis/ratings_dev.csv:oasis/images.csv:1-7")
    """
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    if kind == "ava" and len(parts) == 2 and all(parts):
        return read_ava(parts[0], parts[1])
    if kind == "ratings" and len(parts) in (2, 3) and all(parts):
        scale: tuple[float, float] = (1, 7)
        if len(parts) == 3:
            match = re.fullmatch(r"(-?\d+(?:\.\d+)?)-(-?\d+(?:\.\d+)?)", parts[2])
            if match is None:
                raise ValueError(f"reference spec {spec!r}: scale {parts[2]!r} must look like 1-7")
            scale = (float(match[1]), float(match[2]))
        return read_ratings_csv(parts[0], parts[1], scale=scale)
    if kind == "csv" and len(parts) == 1 and parts[0]:
        return read_score_csv(parts[0])
    if kind not in ("ava", "ratings", "csv") and spec.lower().endswith(".csv"):
        return read_score_csv(spec)
    raise ValueError(f"reference spec {spec!r}: {_SPEC_HELP}")
