"""Pairwise preference answers: the file format, pair sampling and one-step transitivity.

Preference file
---------------
JSON Lines, UTF-8, one answer per line, only ever appended to (never rewritten)::

    {"winner": "beach/IMG_001.jpg", "loser": "IMG_017.jpg", "t": 1717171717.5}
    {"winner": "IMG_003.jpg", "loser": "IMG_009.jpg", "tie": true}
    {"undo": true}

- ``winner`` / ``loser``: image paths relative to the album folder, or absolute.
- ``t`` (optional): a timestamp (seconds, float).
- ``tie`` (optional): ``true`` when the person could not choose; winner and loser are
  then just the two images shown, and the answer trains nothing.
- ``{"undo": true}``: takes back the most recent answer still in effect (ties
  included); several undo lines take back several answers. The preference page appends
  it when the person clicks "undo", so the file never has to be rewritten.

Reading tolerates a crash mid-write (a cut last line), blank lines, bad JSON and
missing keys: each such line is skipped and named in the returned problems.

Transitivity (the paper's one step)
-----------------------------------
From answered a>b and b>c, infer a>c, never chaining further: from a>b, b>c, c>d come
a>c and b>d, not a>d. Pairs answered both ways are contradictions and are dropped.

Example::

    >>> expand_transitive([("I1", "I2"), ("I2", "I3"), ("I3", "I4")]).inferred
    [('I1', 'I3'), ('I2', 'I4')]
"""

from __future__ import annotations

import json
import math
import os
import random
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from persaes.io.jsonl import append_json_line, json_line

__all__ = [
    "Answer",
    "ExpandResult",
    "album_key",
    "append_answer",
    "append_undo",
    "expand_transitive",
    "json_line",
    "pairs_to_indices",
    "read_answers",
    "resolve_answers",
    "sample_pairs",
]


@dataclass(frozen=True)
class Answer:
    """One answer to "which do you prefer?".

    Attributes:
        winner: path of the preferred image (album-relative or absolute).
        loser: path of the other image.
        tie: True when no preference was given (the answer trains nothing).
        t: optional timestamp in seconds.

    Example::

        Answer("IMG_001.jpg", "IMG_002.jpg", t=time.time())
    """

    winner: str
    loser: str
    tie: bool = False
    t: float | None = None

    def __post_init__(self) -> None:
        for name in ("winner", "loser"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"Answer: {name} must be a non-empty string, got {value!r}")
        if self.winner == self.loser:
            raise ValueError(f"Answer: winner and loser are the same image {self.winner!r}")
        if not isinstance(self.tie, bool):
            raise ValueError(f"Answer: tie must be True or False, got {self.tie!r}")
        if self.t is not None and (
            isinstance(self.t, bool) or not isinstance(self.t, (int, float)) or not math.isfinite(self.t)
        ):
            raise ValueError(f"Answer: t must be a finite number or None, got {self.t!r}")

    def to_record(self) -> dict[str, object]:
        """The answer as a preference-file record; optional keys only when set.

        Example:
            >>> Answer("a.jpg", "b.jpg", tie=True).to_record()
            {'winner': 'a.jpg', 'loser': 'b.jpg', 'tie': True}
        """
        record: dict[str, object] = {"winner": self.winner, "loser": self.loser}
        if self.tie:
            record["tie"] = True
        if self.t is not None:
            record["t"] = self.t
        return record


def append_answer(path: str | os.PathLike[str], answer: Answer) -> None:
    """Append ``answer`` as one line to the preference file ``path`` (created if missing).

    The line is flushed and fsync'ed before returning, so a crash never loses an answer
    already given. If the file's last line lacks its newline (an earlier crash), a
    newline is written first so two answers never share a line.

    Example::

        append_answer("album/preferences.jsonl", Answer("a.jpg", "b.jpg", t=time.time()))
    """
    append_json_line(path, answer.to_record())


def append_undo(path: str | os.PathLike[str]) -> None:
    """Append ``{"undo": true}``: take back the most recent answer still in effect.

    Example::

        append_undo("album/preferences.jsonl")
    """
    append_json_line(path, {"undo": True})


def _parse_line(record: object) -> Answer | str:
    """An Answer, the string "undo", or raise ValueError with the reason."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if "undo" in record:
        if record["undo"] is not True:
            raise ValueError(f'"undo" must be true, got {record["undo"]!r}')
        return "undo"
    missing = [key for key in ("winner", "loser") if key not in record]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)}")
    return Answer(
        winner=record["winner"],
        loser=record["loser"],
        tie=record.get("tie", False),
        t=record.get("t"),
    )


def read_answers(path: str | os.PathLike[str]) -> tuple[list[Answer], list[str]]:
    """Read a preference file; bad lines are skipped and reported, never fatal.

    Undo lines remove the most recent remaining answer (see the module docstring).

    Args:
        path: the JSON Lines preference file.

    Returns:
        (answers in file order, problems) — each problem reads ``"<file>:<line>: <reason>"``.

    Raises:
        FileNotFoundError: the file does not exist.

    Example::

        answers, problems = read_answers("album/preferences.jsonl")
        for p in problems:
            logging.getLogger("persaes").warning(p)
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: preference file not found")
    raw_lines = file.read_bytes().split(b"\n")
    answers: list[Answer] = []
    problems: list[str] = []
    last = len(raw_lines)  # the piece after the last newline ("" when the file ends in one)
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        try:
            parsed = _parse_line(json.loads(raw.decode("utf-8-sig")))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            reason = (
                "incomplete last line (cut off mid-write?)"
                if number == last
                else f"not valid JSON ({err.__class__.__name__}: {err})"
            )
            problems.append(f"{file}:{number}: {reason}; skipped")
            continue
        except ValueError as err:
            problems.append(f"{file}:{number}: {err}; skipped")
            continue
        if parsed == "undo":
            if answers:
                answers.pop()
            else:
                problems.append(f"{file}:{number}: undo with no answer left to take back; ignored")
        else:
            answers.append(parsed)
    return answers, problems


def album_key(path: str, root: Path) -> str | None:
    """The album key of a path given in an answer: album-relative, POSIX, normalised.

    Args:
        path: album-relative or absolute, as a preference file names an image.
        root: the album folder, absolute and normalised (e.g. ``Path(os.path.normpath(album.absolute()))``).

    Returns:
        ``path`` relative to ``root`` with ``/`` separators and ``.``/``..`` resolved lexically (links
        are not followed), or None when an absolute ``path`` lies outside ``root``.

    Raises:
        ValueError: ``root`` is not absolute.

    Example:
        >>> album_key("/photos/album/beach/./IMG_1.jpg", Path("/photos/album"))
        'beach/IMG_1.jpg'
        >>> album_key("beach/../IMG_2.jpg", Path("/photos/album"))
        'IMG_2.jpg'
        >>> album_key("/elsewhere/IMG_3.jpg", Path("/photos/album")) is None
        True
    """
    if not root.is_absolute():
        raise ValueError(f"root must be an absolute folder, got {root}")
    candidate = Path(path)
    if candidate.is_absolute():
        try:
            candidate = Path(os.path.normpath(candidate)).relative_to(root)
        except ValueError:
            return None
    return Path(os.path.normpath(candidate)).as_posix()


def resolve_answers(
    answers: Iterable[Answer],
    album_root: str | os.PathLike[str],
    album_files: Iterable[str],
) -> tuple[list[tuple[str, str]], list[str]]:
    """Turn answers into training pairs ``(winner_key, loser_key)`` of album images.

    Paths in answers (album-relative or absolute) are matched against ``album_files``
    (album-relative keys, e.g. ``"beach/IMG_001.jpg"``); the returned pairs use the
    keys exactly as given in ``album_files``. Ties are left out (they train nothing).
    Answers naming an image that is not in the album are skipped, reported once per
    image; exact repeats of a (winner, loser) pair are kept once, reported as a count.
    Contradictions (a>b and b>a) are kept here: ``expand_transitive`` handles them.

    Returns:
        (pairs in first-seen order, problems)

    Example::

        pairs, problems = resolve_answers(answers, "/photos/album", ["a.jpg", "b.jpg"])
    """
    root = Path(os.path.normpath(Path(album_root).absolute()))
    keys = {Path(os.path.normpath(f)).as_posix(): f for f in album_files}
    missing: Counter[str] = Counter()
    pairs: dict[tuple[str, str], None] = {}
    repeats = 0
    for answer in answers:
        if answer.tie:
            continue
        resolved = []
        for image in (answer.winner, answer.loser):
            key = album_key(image, root)
            if key is None or key not in keys:
                missing[image] += 1
            else:
                resolved.append(keys[key])
        if len(resolved) != 2:
            continue
        pair = (resolved[0], resolved[1])
        if pair in pairs:
            repeats += 1
        else:
            pairs[pair] = None
    problems = [
        f"image {image!r} (in {count} answer(s)) is not in the album {root}; those answers skipped"
        for image, count in missing.items()
    ]
    if repeats:
        problems.append(f"{repeats} repeated answer(s) (same winner and loser again) counted once")
    return list(pairs), problems


def sample_pairs(
    items: Sequence[str],
    n: int,
    seed: int,
    exclude: Iterable[frozenset[str]] = (),
) -> list[tuple[str, str]]:
    """Draw ``n`` distinct unordered pairs of ``items`` at random, none in ``exclude``.

    Deterministic for a given ``seed``. Which image of a pair comes first is also
    random (so screen side is not tied to item order). When fewer than ``n`` pairs are
    possible, all of them are returned (in random order). Small ``n`` is drawn by
    rejection sampling, so 10,000 items never enumerate their 50 million pairs.

    Args:
        items: distinct image keys.
        n: number of pairs wanted, >= 0.
        seed: random seed.
        exclude: unordered pairs already asked, e.g. ``{frozenset(("a.jpg", "b.jpg"))}``.

    Returns:
        list of ``(first, second)`` tuples, length ``min(n, possible pairs)``.

    Example::

        sample_pairs(["a", "b", "c"], 2, seed=0)   # e.g. [('c', 'a'), ('b', 'c')]
    """
    if n < 0:
        raise ValueError(f"sample_pairs: n must be >= 0, got {n}")
    m = len(items)
    if len(set(items)) != m:
        raise ValueError("sample_pairs: items contain duplicates")
    position = {item: i for i, item in enumerate(items)}
    excluded: set[int] = set()
    for pair in exclude:
        pair = frozenset(pair)
        if len(pair) == 2 and pair <= position.keys():
            i, j = sorted(position[x] for x in pair)
            excluded.add(i * m + j)
    rng = random.Random(seed)
    available = m * (m - 1) // 2 - len(excluded)
    if 2 * n < available:
        chosen: dict[int, None] = {}
        while len(chosen) < n:
            i, j = rng.randrange(m), rng.randrange(m)
            if i == j:
                continue
            key = min(i, j) * m + max(i, j)
            if key not in excluded and key not in chosen:
                chosen[key] = None
        keys = list(chosen)
    else:
        keys = [i * m + j for i in range(m) for j in range(i + 1, m) if i * m + j not in excluded]
        keys = rng.sample(keys, min(n, len(keys)))
    pairs = []
    for key in keys:
        i, j = divmod(key, m)
        pairs.append((items[i], items[j]) if rng.random() < 0.5 else (items[j], items[i]))
    return pairs


@dataclass(frozen=True)
class ExpandResult:
    """Result of one-step transitive expansion.

    Attributes:
        answered: consistent answered pairs (winner, loser), repeats removed, in order.
        inferred: new pairs from one transitive step, sorted by first appearance of the
            winner then of the loser in ``answered``.
        contradictions: pairs answered both ways, each once as first seen; both
            directions are dropped from ``answered``.
    """

    answered: list[tuple[str, str]]
    inferred: list[tuple[str, str]]
    contradictions: list[tuple[str, str]]


def _one_step(src: torch.Tensor, dst: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inferred (a, c) index pairs from the win-edge list ``src[i] > dst[i]`` on n nodes.

    Uses a sparse product W2 = W @ W on the answered subgraph; a candidate a>c survives
    if a != c, neither a>c nor c>a was answered, and c>a was not also inferred.
    """
    if src.numel() == 0:
        empty = torch.empty(0, dtype=torch.long)
        return empty, empty
    w = torch.sparse_coo_tensor(
        torch.stack([src, dst]), torch.ones(src.numel()), (n, n), check_invariants=True
    ).coalesce()
    with warnings.catch_warnings():  # torch routes COO @ COO through CSR and warns "beta"
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        a, c = torch.sparse.mm(w, w).coalesce().indices()
    answered_keys = torch.cat([src * n + dst, dst * n + src])
    keep = (a != c) & ~torch.isin(a * n + c, answered_keys)
    a, c = a[keep], c[keep]
    keep = ~torch.isin(c * n + a, a * n + c)
    return a[keep], c[keep]


def expand_transitive(pairs: Sequence[tuple[str, str]]) -> ExpandResult:
    """Drop contradictions, then add the paper's one-step transitive pairs.

    From answered a>b and b>c add a>c — one step only (no chains). An inferred pair is
    never one already answered (either way); if one step infers both a>c and c>a,
    both are dropped. Works on the subgraph of images that appear in answers with a
    sparse matrix product, so 20,000 answers over 10,000 images take milliseconds.

    Args:
        pairs: answered (winner, loser) pairs; repeats allowed.

    Returns:
        ExpandResult(answered, inferred, contradictions).

    Example::

        >>> r = expand_transitive([("I1", "I2"), ("I2", "I3"), ("I3", "I4"), ("I4", "I3")])
        >>> r.inferred, r.contradictions
        ([('I1', 'I3')], [('I3', 'I4')])
    """
    unique = list(dict.fromkeys((winner, loser) for winner, loser in pairs))
    for winner, loser in unique:
        if winner == loser:
            raise ValueError(f"expand_transitive: pair ({winner!r}, {loser!r}) has the same image twice")
    answered_set = set(unique)
    contradictions: list[tuple[str, str]] = []
    reported: set[frozenset[str]] = set()
    answered: list[tuple[str, str]] = []
    for winner, loser in unique:
        if (loser, winner) not in answered_set:
            answered.append((winner, loser))
        elif frozenset((winner, loser)) not in reported:
            reported.add(frozenset((winner, loser)))
            contradictions.append((winner, loser))
    nodes = list(dict.fromkeys(image for pair in answered for image in pair))
    index = {image: i for i, image in enumerate(nodes)}
    src = torch.tensor([index[winner] for winner, _ in answered], dtype=torch.long)
    dst = torch.tensor([index[loser] for _, loser in answered], dtype=torch.long)
    a, c = _one_step(src, dst, len(nodes))
    inferred = [(nodes[i], nodes[j]) for i, j in zip(a.tolist(), c.tolist())]
    return ExpandResult(answered=answered, inferred=inferred, contradictions=contradictions)


def pairs_to_indices(pairs: Sequence[tuple[str, str]], keys: Sequence[str]) -> torch.Tensor:
    """Index tensor for training: row i is ``(keys.index(winner), keys.index(loser))``.

    Args:
        pairs: (winner, loser) pairs of keys.
        keys: the image keys, in the order of the feature rows.

    Returns:
        LongTensor N×2, values in [0, len(keys)).

    Example::

        pairs_to_indices([("b", "a")], ["a", "b"])   # tensor([[1, 0]])
    """
    position = {key: i for i, key in enumerate(keys)}
    if len(position) != len(keys):
        raise ValueError("pairs_to_indices: keys contain duplicates")
    rows = []
    for winner, loser in pairs:
        for image in (winner, loser):
            if image not in position:
                raise KeyError(f"pairs_to_indices: image {image!r} is not among the keys")
        rows.append((position[winner], position[loser]))
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 2)
