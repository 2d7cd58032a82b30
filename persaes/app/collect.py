"""A local web page that asks "which do you prefer?" and appends the answers to a preference file.

Only the standard library serves it (``http.server``); the page is the package data file ``collect.html``, its CSS
and JavaScript inline, nothing fetched from elsewhere. The server binds to 127.0.0.1 only and every request must
carry a random token (in the page URL ``/?token=...``, and as an ``X-Token`` header or ``token`` query parameter on
the API), so other users and web sites cannot read the album or answer for you.

Every answer is appended to the preference file (see :mod:`persaes.io.preferences`) the moment it is given, flushed
and fsync'ed, so stopping the server (or a crash) loses nothing; running again with the same file continues
where it stopped: pairs already answered are not asked again and the progress line starts from their count.

Every album image is decoded once when the session starts (JPEGs at reduced scale, so a thousand photos take
seconds); one that cannot be (empty, truncated, not an image) is skipped with a one-line reason naming the file
(:attr:`CollectSession.skipped`), never offered and never served.

Variants mode
-------------
With ``variants=True`` each question shows the same photo under two different random mild edits (exposure,
colour or haze, :func:`retouch.degrade.random_edit`) instead of two different photos. The variants are written
into the album, as JPEG (quality 92, longer side at most :data:`VARIANT_MAX_SIDE`), atomically and never over an
existing file::

    ALBUM/_variants/<stem>__v<k>.jpg      k = 1, 2, ... the first free number
    ALBUM/_variants/edits.jsonl           one line per variant: {"variant", "source", "edit": {...}}

Answers name the variants by their album-relative path (``_variants/Bird2__v3.jpg``), so ``persaes
personalize ALBUM`` sees them as album photos. Plain mode never pairs photos from ``_variants/``.

HTTP API (all need the token)
-----------------------------
- ``GET /``: the page.
- ``GET /api/next``: ``{"left": url, "right": url, "left_path": p, "right_path": p, "done": n, "total": N,
  "can_undo": bool}`` or ``{"finished": true, "done": n, "total": N, "can_undo": bool}``.
- ``GET /image/<album-relative path>``: a readable image of the album listing, nothing else (404).
- ``POST /api/answer`` with ``{"winner": p, "loser": p}`` or ``{"left": p, "right": p, "tie": true}``: answer
  the pair on offer; returns the next state as ``/api/next`` does. Any other pair: 400.
- ``POST /api/undo``: append an undo line; the undone pair is asked again next. Returns the next state.

Example::

    session = CollectSession("~/Pictures/album", "answers.jsonl", pairs=100)
    server = serve(session)
    print(server.url)          # http://127.0.0.1:PORT/?token=...
    server.serve_forever()
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import random
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import torch

from persaes.app.variants import VARIANT_MAX_SIDE, is_variant, jpeg_bytes, write_variant
from persaes.io.images import ImageError, iter_images, open_rgb, to_tensor
from persaes.io.preferences import (
    Answer,
    album_key,
    append_answer,
    append_undo,
    json_line,
    read_answers,
    sample_pairs,
)

__all__ = ["CollectServer", "CollectSession", "RequestError", "album_photos", "serve"]

log = logging.getLogger("persaes")

HOST = "127.0.0.1"
MAX_BODY = 64 * 1024
BROWSER_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"})
"""Served as they are; other image formats (TIFF) are sent as JPEG."""
CHECK_SIDE = 64
"""Longer side album images are decoded at when a session checks them (JPEGs decode at reduced scale)."""

Pair = tuple[str, str]


class RequestError(Exception):
    """A refused request: ``status`` is the HTTP status, ``str(err)`` the one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


Chooser = Callable[[list[Pair]], "Pair | None"]
"""Active questions: answers so far (winner, loser) → the next pair, or None when none is left."""


@dataclass(frozen=True)
class _ActiveTask:
    """A question the chooser picks when it is offered, from the answers given by then."""


@dataclass(frozen=True)
class _VariantTask:
    """A variants-mode question not yet asked: two variants of ``source`` are made when it is first offered."""

    source: str


def album_photos(album_root: str | os.PathLike[str]) -> tuple[list[str], list[Path]]:
    """The photos questions are made from: album keys and files, without ``_variants/``, in key order."""
    listing = _album_listing(Path(album_root).expanduser().resolve())
    keys = sorted(key for key in listing if not is_variant(key))
    return keys, [listing[key] for key in keys]


def _readable(listing: dict[str, Path], on_skip: Callable[[str], None] | None = None
              ) -> tuple[dict[str, Path], dict[str, str]]:
    """Split an album listing into the images that decode and those that do not.

    Each file is decoded in full, at reduced scale (:data:`CHECK_SIDE`, as :func:`open_rgb` does), a few at once.

    Args:
        listing: album key → file.
        on_skip: told each unreadable file's one-line reason (naming the file), in key order.

    Returns:
        The readable part of ``listing``, and album key → reason for the rest.
    """

    def problem(path: Path) -> str | None:
        try:
            open_rgb(path, max_side=CHECK_SIDE)
        except ImageError as err:
            return str(err)
        except OSError as err:  # e.g. the file vanished while the album was listed
            return f"{path}: cannot be read ({err.strerror or err})"
        return None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        problems = list(pool.map(problem, listing.values()))
    readable, skipped = {}, {}
    for (key, path), reason in zip(listing.items(), problems):
        if reason is None:
            readable[key] = path
            continue
        skipped[key] = reason
        if on_skip is not None:
            on_skip(f"{reason}; skipped, not offered")
    return readable, skipped


def _album_listing(root: Path) -> dict[str, Path]:
    """Album-relative key → file, for every image whose real path lies inside ``root`` (a resolved folder).

    A link that loops is listed: :func:`_readable` names it and leaves it out.
    """
    return {path.relative_to(root).as_posix(): path for path in iter_images([root]) if _inside(path, root)}


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path``'s real path lies inside ``root`` (True for a link that loops: it has no real path)."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return True


class CollectSession:
    """The questions of one collection run, the answers so far, and the album images that may be shown.

    Thread-safe: the server calls it from one thread per request.

    Args:
        album_root: the album folder (images found recursively, as :func:`persaes.io.images.iter_images` does).
        out_file: the preference file (JSON Lines); read first if it exists, then only appended to.
        pairs: how many answered pairs to reach, counting those already in ``out_file``.
        variants: ask about two random edits of the same photo (see the module docstring).
        seed: random seed of the pair plan and of the edits.
        chooser: picks each next pair of photos from the answers so far (active questions,
            :class:`persaes.core.active.ActivePairs`); without it the pairs are drawn at random. A
            pair it returns that is already answered or names a file outside the album's
            photos is refused (``ValueError``).
        on_skip: told, while the session starts, each album image that cannot be decoded (empty, truncated,
            not an image): one line naming the file and the problem. Such images are never offered nor served.

    Raises:
        FileNotFoundError: the album or the folder of ``out_file`` is missing.
        IsADirectoryError: ``out_file`` is a folder.
        ValueError: too few photos (two, or one in variants mode).

    Attributes:
        root: the album folder, resolved.
        problems: skipped lines of ``out_file``, one line each.
        skipped: album key → one-line reason, for each album image that cannot be decoded.
        total: the number of pairs of this run, answered ones included.
        appended: lines this session appended to ``out_file`` (answers and undos).
    """

    def __init__(
        self,
        album_root: str | os.PathLike[str],
        out_file: str | os.PathLike[str],
        pairs: int = 100,
        variants: bool = False,
        seed: int = 0,
        chooser: Chooser | None = None,
        on_skip: Callable[[str], None] | None = None,
    ) -> None:
        if pairs < 0:
            raise ValueError(f"pairs must be >= 0, got {pairs}")
        self.root = Path(album_root).expanduser().resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"{album_root}: album folder not found")
        self.out_file = Path(out_file).expanduser()
        if not self.out_file.parent.is_dir():
            raise FileNotFoundError(f"{out_file}: cannot write answers, folder {self.out_file.parent} does not exist")
        if self.out_file.is_dir():
            raise IsADirectoryError(f"{out_file}: is a folder, expected a preference file")
        self.variants = variants
        self.seed = seed
        if chooser is not None and variants:
            raise ValueError("active questions compare different photos; they do not apply to variants mode")
        self.chooser = chooser
        self.images, self.skipped = _readable(_album_listing(self.root), on_skip)
        self.appended = 0
        self._lock = threading.Lock()
        self._history, self.problems = self._read_history()
        self._offered: Pair | None = None
        self._pending: deque[Pair | _VariantTask | _ActiveTask] = deque(self._plan(max(0, pairs - self.done)))
        self.total = self.done + len(self._pending)

    # -- planning -------------------------------------------------------------------------------------------------

    def _read_history(self) -> tuple[list[Pair | None], list[str]]:
        """The answers in effect in ``out_file`` and the file's skipped lines.

        Answers are in order, as pairs of album keys (None: an image outside the album).
        """
        if not self.out_file.exists():
            return [], []
        answers, problems = read_answers(self.out_file)
        history: list[Pair | None] = []
        for answer in answers:
            winner, loser = album_key(answer.winner, self.root), album_key(answer.loser, self.root)
            history.append((winner, loser) if winner is not None and loser is not None else None)
        return history, problems

    def _sources(self) -> list[str]:
        """The photos questions are made from: the album without ``_variants/``."""
        sources = sorted(key for key in self.images if not is_variant(key))
        needed = 1 if self.variants else 2
        if len(sources) < needed:
            unreadable = sum(1 for key in self.skipped if not is_variant(key))
            also = f" ({unreadable} more cannot be read)" if unreadable else ""
            raise ValueError(f"{self.root}: found {len(sources)} photo(s){also}, need at least {needed}")
        return sources

    def _in_scope(self, pair: Pair | None) -> bool:
        """Whether an answered pair counts for this run: album images, variants exactly in variants mode."""
        return pair is not None and all(key in self.images and is_variant(key) == self.variants for key in pair)

    def _plan(self, count: int) -> list[Pair | _VariantTask | _ActiveTask]:
        """``count`` new questions, none already answered."""
        sources = self._sources()
        if self.chooser is not None:
            return [_ActiveTask() for _ in range(count)]
        if self.variants:
            order = sources[:]
            random.Random(self.seed).shuffle(order)
            start = self.done
            return [_VariantTask(order[(start + i) % len(order)]) for i in range(count)]
        answered = [frozenset(pair) for pair in self._history if self._in_scope(pair)]
        return list(sample_pairs(sources, count, self.seed, exclude=answered))

    @property
    def done(self) -> int:
        """Answered pairs of this run (answers in effect in the file that this mode would ask)."""
        return sum(1 for pair in self._history if self._in_scope(pair))

    # -- variants -------------------------------------------------------------------------------------------------

    def _make_variant(self, source: str, image: torch.Tensor) -> str:
        """Write one random edit of ``image`` (from ``source``) as a new variant file; its album key."""
        key = write_variant(self.root, source, image, self.seed, taken=lambda k: k in self.images)
        self.images[key] = self.root / key
        return key

    def _make_variant_pair(self, source: str) -> Pair:
        image = to_tensor(open_rgb(self.images[source], max_side=VARIANT_MAX_SIDE)).unsqueeze(0)
        return self._make_variant(source, image), self._make_variant(source, image)

    # -- questions and answers ------------------------------------------------------------------------------------

    def _choose(self) -> Pair | None:
        """The chooser's next pair, checked: two album photos, not yet answered."""
        assert self.chooser is not None
        answered = [pair for pair in self._history if self._in_scope(pair)]
        pair = self.chooser(answered)  # type: ignore[arg-type]
        sources = set(self._sources())
        if pair is not None and (len(set(pair)) != 2 or not set(pair) <= sources
                                 or frozenset(pair) in {frozenset(p) for p in answered}):
            raise ValueError(f"the active chooser offered {pair!r}, not two unanswered album photos")
        return pair

    def _offer(self) -> Pair | None:
        """The pair on offer (made now for a variants or active task), or None when all are answered."""
        while self._pending and isinstance(self._pending[0], _ActiveTask):
            pair = self._choose()
            if pair is not None:
                self._pending[0] = pair
                break
            self._pending.popleft()
            self.total -= 1
        while self._pending and isinstance(self._pending[0], _VariantTask):
            source = self._pending[0].source
            try:
                self._pending[0] = self._make_variant_pair(source)
            except ImageError as err:
                log.warning("%s; skipped", err)
                self._pending.popleft()
                self.total -= 1
        self._offered = self._pending[0] if self._pending else None
        return self._offered

    def state(self) -> dict[str, Any]:
        """The pair on offer and the progress.

        Returns:
            ``{"left_path", "right_path", "done", "total", "can_undo"}``, or ``{"finished": True, "done", "total",
            "can_undo"}`` when every pair is answered.
        """
        with self._lock:
            pair = self._offer()
            progress = {"done": self.done, "total": self.total, "can_undo": bool(self._history)}
            if pair is None:
                return {"finished": True, **progress}
            return {"left_path": pair[0], "right_path": pair[1], **progress}

    def answer(self, winner: str, loser: str, tie: bool = False) -> None:
        """Record an answer to the pair on offer (appended to the file at once).

        Raises:
            RequestError: 400 when ``{winner, loser}`` is not the pair on offer.
        """
        with self._lock:
            offered = self._offered
            if offered is None or {winner, loser} != set(offered):
                raise RequestError(HTTPStatus.BAD_REQUEST, f"the pair {winner!r}, {loser!r} is not on offer")
            append_answer(self.out_file, Answer(winner, loser, tie=tie, t=round(time.time(), 3)))
            self.appended += 1
            self._history.append(offered)
            self._pending.popleft()
            self._offered = None

    def undo(self) -> None:
        """Take back the latest answer in effect (an undo line is appended); its pair is asked again next.

        Raises:
            RequestError: 400 when there is no answer to take back.
        """
        with self._lock:
            if not self._history:
                raise RequestError(HTTPStatus.BAD_REQUEST, "no answer to undo")
            append_undo(self.out_file)
            self.appended += 1
            pair = self._history.pop()
            if pair is not None and self._in_scope(pair):
                self._pending.appendleft(pair)
            self._offered = None

    def image_file(self, key: str) -> Path:
        """The file of album image ``key`` (an album-relative path), if it may be shown.

        Raises:
            RequestError: 403 for traversal (``..``, absolute paths, links out of the album), 404 for a path
                that is not an album image or one that cannot be decoded.
        """
        parts = key.split("/")
        if key.startswith("/") or "\\" in key or "\0" in key or any(p in ("", ".", "..") for p in parts):
            raise RequestError(HTTPStatus.FORBIDDEN, f"{key!r}: not an album-relative path")
        path = self.images.get(key)
        if key in self.skipped:
            raise RequestError(HTTPStatus.NOT_FOUND, f"{key!r}: not offered, cannot be read")
        if path is None:
            raise RequestError(HTTPStatus.NOT_FOUND, f"{key!r}: not an image of the album")
        if not _inside(path, self.root):  # a link that loops now: reading it fails, a 404
            raise RequestError(HTTPStatus.FORBIDDEN, f"{key!r}: points outside the album")
        return path


def _image_bytes(path: Path) -> tuple[bytes, str]:
    """The bytes to send for an image and their content type (formats browsers can't show become JPEG)."""
    if path.suffix.lower() in BROWSER_SUFFIXES:
        return path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return jpeg_bytes(open_rgb(path)), "image/jpeg"


class CollectServer(ThreadingHTTPServer):
    """The preference page's HTTP server (127.0.0.1 only); ``url`` is the page's address with its token."""

    daemon_threads = True

    def __init__(self, session: CollectSession, port: int, token: str) -> None:
        super().__init__((HOST, port), _Handler)
        self.session = session
        self.token = token

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A browser that closes a connection mid-answer (a reload, a closed tab) is normal: stay quiet.

        Anything else is still reported by the base class (a traceback on stderr).
        """
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        """The page's address, token included."""
        return f"http://{HOST}:{self.server_port}/?token={quote(self.token)}"


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the session; checks the token first."""

    server: CollectServer
    server_version = "persaes"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Silent: request lines would print the token."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._dispatch({"/": self._page, "/api/next": self._next}, prefix=("/image/", self._image))

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self._dispatch({"/api/answer": self._answer, "/api/undo": self._undo})

    def _dispatch(self, routes: dict[str, Callable[[], None]],
                  prefix: tuple[str, Callable[[str], None]] | None = None) -> None:
        url = urlsplit(self.path)
        try:
            self._check_token(url.query)
            if url.path in routes:
                routes[url.path]()
            elif prefix is not None and url.path.startswith(prefix[0]):
                prefix[1](unquote(url.path[len(prefix[0]):], errors="surrogateescape"))
            else:
                raise RequestError(HTTPStatus.NOT_FOUND, f"{url.path}: no such page")
        except RequestError as err:
            self._send_json({"error": str(err)}, err.status)

    def _check_token(self, query: str) -> None:
        given = self.headers.get("X-Token") or parse_qs(query).get("token", [""])[0]
        if not secrets.compare_digest(given.encode(), self.server.token.encode()):
            raise RequestError(HTTPStatus.FORBIDDEN, "missing or wrong token")

    def _send(self, body: bytes, content_type: str, status: int = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", _CSP)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, record: dict[str, Any], status: int = HTTPStatus.OK) -> None:
        self._send(json_line(record).encode(), "application/json; charset=utf-8", status)

    def _read_json(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "Content-Length required") from None
        if not 0 <= length <= MAX_BODY:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
        try:
            record = json.loads(self.rfile.read(length) or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise RequestError(HTTPStatus.BAD_REQUEST, "body is not JSON") from None
        if not isinstance(record, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
        return record

    def _state(self) -> dict[str, Any]:
        """The session's state with image URLs (token included) added."""
        state = self.server.session.state()
        for side in ("left", "right"):
            if f"{side}_path" in state:
                path = quote(state[f"{side}_path"], errors="surrogateescape")  # names that are not UTF-8 too
                state[side] = f"/image/{path}?token={quote(self.server.token)}"
        return state

    def _page(self) -> None:
        self._send(_PAGE, "text/html; charset=utf-8")

    def _next(self) -> None:
        self._send_json(self._state())

    def _image(self, key: str) -> None:
        path = self.server.session.image_file(key)
        try:
            body, content_type = _image_bytes(path)
        except (OSError, ImageError) as err:
            raise RequestError(HTTPStatus.NOT_FOUND, f"{key!r}: cannot be read ({err})") from None
        self._send(body, content_type)

    def _answer(self) -> None:
        record = self._read_json()
        if record.get("tie") is True:
            winner, loser, tie = record.get("left"), record.get("right"), True
        else:
            winner, loser, tie = record.get("winner"), record.get("loser"), False
        if not isinstance(winner, str) or not isinstance(loser, str):
            raise RequestError(HTTPStatus.BAD_REQUEST,
                               'expected {"winner": path, "loser": path} or {"left": path, "right": path, "tie": true}')
        self.server.session.answer(winner, loser, tie)
        self._send_json(self._state())

    def _undo(self) -> None:
        self.server.session.undo()
        self._send_json(self._state())


def serve(session: CollectSession, host: str = HOST, port: int = 0, token: str | None = None) -> CollectServer:
    """Bind the preference page's server (not yet serving: call ``serve_forever``, e.g. in a thread).

    Args:
        session: the questions and the answer file.
        host: must be ``"127.0.0.1"``; anything else is refused.
        port: TCP port; 0 picks a free one (``server.server_port`` tells which).
        token: the secret every request must carry; default a fresh ``secrets.token_urlsafe(16)``.

    Raises:
        ValueError: ``host`` is not 127.0.0.1.
        OSError: the port cannot be bound.

    Example::

        server = serve(CollectSession("album", "answers.jsonl"))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        webbrowser.open(server.url)
    """
    if host != HOST:
        raise ValueError(f"refusing to serve on {host!r}: the preference page binds to {HOST} only")
    return CollectServer(session, port, token or secrets.token_urlsafe(16))


_CSP = ("default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_PAGE = resources.files(__package__).joinpath("collect.html").read_bytes()
"""The preference page, UTF-8."""
