"""The progress callback of the applications' runs over many photos.

Example:
    >>> seen = []
    >>> report: ProgressCallback = lambda done, total: seen.append((done, total))
    >>> for done in range(3):
    ...     report(done, 2)
    >>> seen
    [(0, 2), (1, 2), (2, 2)]
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["ProgressCallback"]

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)``: a run calls it with ``(0, total)`` before its first item and with
``(done, total)`` after each item, failed ones included; each run starts again from 0."""
