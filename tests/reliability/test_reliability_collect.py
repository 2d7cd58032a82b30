"""The preference page as users run it: ``persaes prefs collect`` in its own process, spoken to over HTTP.

Request-level checks of the session live in tests/persaes/app/test_collect.py; these run against the real
command: token, paths out of the album, the listening address, answers surviving a SIGKILL, a rerun,
and names that are not UTF-8.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import reliability_files as rf

ROOT = Path(__file__).resolve().parents[2]


class Page:
    """A running ``persaes prefs collect`` process and requests to it."""

    def __init__(self, process: subprocess.Popen[bytes], url: str) -> None:
        self.process = process
        self.url = url
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.base = f"http://{parts.hostname}:{parts.port}"
        self.token = parse_qs(parts.query)["token"][0]

    def request(self, path: str, body: Any = None, token: str | None = "own",
                raw_path: bool = False) -> tuple[int, bytes]:
        """GET (or POST ``body``); the token goes in the X-Token header unless ``token`` is None."""
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["X-Token"] = self.token if token == "own" else token
        data = None if body is None else json.dumps(body).encode()
        if raw_path:  # urllib would not send some of these paths as they are
            return self._raw("GET" if body is None else "POST", path, headers, data)
        req = urllib.request.Request(self.base + path, data=data, headers=headers,
                                     method="GET" if body is None else "POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def _raw(self, method: str, path: str, headers: dict[str, str], data: bytes | None) -> tuple[int, bytes]:
        import http.client

        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            connection.putrequest(method, path, skip_accept_encoding=True)
            for key, value in {**headers, "Content-Length": str(len(data or b""))}.items():
                connection.putheader(key, value)
            connection.endheaders(data)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def state(self) -> dict[str, Any]:
        status, body = self.request("/api/next")
        assert status == 200, body
        return json.loads(body)


@contextmanager
def collecting(album: Path, answers: Path, *extra: str) -> Iterator[Page]:
    """Start the command, wait for its URL line, kill it (SIGKILL) at the end if still running."""
    process = subprocess.Popen(
        [sys.executable, "-c", "from persaes.cli.main import main; main(prog_name='persaes')",
         "prefs", "collect", str(album), "--out", str(answers), "--no-browser", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        line = process.stdout.readline().decode().strip()
        assert line.startswith("http://"), (line, process.stderr.read().decode() if process.poll() is not None else "")
        yield Page(process, line)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        process.stdout.close()
        process.stderr.close()


@pytest.fixture(scope="module")
def album(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three photos (one in a subfolder, one with a name that is not UTF-8), and links out of the album."""
    base = tmp_path_factory.mktemp("collect")
    album = base / "album"
    (album / "sub").mkdir(parents=True)
    rf.copy_photo(rf.BIRD, album, "bird one.jpg")
    rf.copy_photo(rf.CAT, album / "sub", "cat é.jpg")
    try:
        rf.copy_photo(rf.PHOTOS / "Dog2.jpg", album, os.fsdecode(b"dog-caf\xe9.jpg"))
    except (UnicodeEncodeError, OSError):
        rf.copy_photo(rf.PHOTOS / "Dog2.jpg", album, "dog.jpg")
    outside = base / "outside"
    outside.mkdir()
    rf.copy_photo(rf.PHOTOS / "Car1.jpg", outside, "secret.jpg")
    (album / "link.jpg").symlink_to(outside / "secret.jpg")
    (album / "linked-folder").symlink_to(outside, target_is_directory=True)
    return album


@pytest.fixture(scope="module")
def page(album: Path) -> Iterator[Page]:
    with collecting(album, album.parent / "security.jsonl", "--pairs", "3") as running:
        yield running


def test_it_listens_on_127_0_0_1_only(page: Page) -> None:
    assert page.host == "127.0.0.1"
    with socket.create_connection(("127.0.0.1", page.port), timeout=5):
        pass
    for address, family in (("127.0.0.2", socket.AF_INET), ("::1", socket.AF_INET6)):  # 0.0.0.0 / :: would take these
        with socket.socket(family, socket.SOCK_STREAM) as other:
            other.settimeout(5)
            assert other.connect_ex((address, page.port)) != 0, address


def test_requests_without_the_right_token_are_refused(page: Page, album: Path) -> None:
    pair = page.state()
    answer = {"winner": pair["left_path"], "loser": pair["right_path"]}
    for token in (None, "", "wrong", page.token[:-1], page.token + "x"):
        for path in ("/", "/api/next", pair["left"].split("?")[0]):
            status, body = page.request(path, token=token)
            assert status == 403 and json.loads(body) == {"error": "missing or wrong token"}, (path, token)
        assert page.request("/api/answer", answer, token=token)[0] == 403
        assert page.request("/api/undo", {}, token=token)[0] == 403
    assert page.request(f"/api/next?token={page.token}", token=None)[0] == 200  # the page's own URL form
    assert not (album.parent / "security.jsonl").exists()


@pytest.mark.parametrize("path", [
    "/image/../outside/secret.jpg",
    "/image/sub/../../outside/secret.jpg",
    "/image/%2e%2e/outside/secret.jpg",
    "/image/%2E%2E%2Foutside%2Fsecret.jpg",
    "/image/..%5Coutside%5Csecret.jpg",
    "/image/./link.jpg",
    "/image//{base}/outside/secret.jpg",
    "/image/%2F{base}%2Foutside%2Fsecret.jpg",
    "/image/{base}/outside/secret.jpg",
    "/image/sub%00.jpg",
])
def test_paths_out_of_the_album_are_refused(page: Page, album: Path, path: str) -> None:
    path = path.format(base=str(album.parent).strip("/"))
    status, body = page.request(path, raw_path=True)
    assert status in (403, 404), (path, status)  # 403: not an album-relative path; 404: not an album image
    assert "error" in json.loads(body)


@pytest.mark.parametrize("key", ["link.jpg", "linked-folder/secret.jpg"])
def test_links_out_of_the_album_are_never_offered_nor_served(page: Page, key: str) -> None:
    status, body = page.request(f"/image/{key}")
    assert status == 404 and json.loads(body)["error"] == f"{key!r}: not an image of the album"
    seen = {page.state()[side] for side in ("left_path", "right_path")}
    assert not seen & {"link.jpg", "linked-folder/secret.jpg"}


def test_oversized_and_malformed_bodies_are_refused(page: Page) -> None:
    assert page.request("/api/answer", {"winner": "x" * 70_000, "loser": "y"})[0] == 413
    assert page.request("/api/answer", [1, 2])[0] == 400
    assert page.request("/api/answer", {"winner": "bird one.jpg", "loser": "not offered.jpg"})[0] == 400


def test_answers_survive_a_kill_and_a_rerun_continues(album: Path, tmp_path: Path) -> None:
    """Every answer acknowledged over HTTP is in the file after SIGKILL; a rerun asks only the rest."""
    answers = tmp_path / "answers.jsonl"
    given = []
    with collecting(album, answers, "--pairs", "3") as running:
        state = running.state()
        for _ in range(2):
            status, body = running.request("/api/answer", {"winner": state["right_path"], "loser": state["left_path"]})
            assert status == 200
            given.append({"winner": state["right_path"], "loser": state["left_path"]})
            on_disk = [json.loads(line) for line in answers.read_text(encoding="utf-8").splitlines()]
            assert [{k: a[k] for k in ("winner", "loser")} for a in on_disk] == given  # on disk before the reply
            state = json.loads(body)
        assert state["done"] == 2 and state["total"] == 3
        running.process.send_signal(signal.SIGKILL)
        running.process.wait(timeout=10)
    on_disk = [json.loads(line) for line in answers.read_text(encoding="utf-8").splitlines()]
    assert [{k: a[k] for k in ("winner", "loser")} for a in on_disk] == given
    photos = {p.relative_to(album).as_posix() for p in album.rglob("*.jpg") if p.resolve().is_relative_to(album)}
    assert {a["winner"] for a in given} | {a["loser"] for a in given} <= photos  # names as the album has them

    with collecting(album, answers, "--pairs", "3") as again:
        assert again.process.stderr.readline().decode().startswith("2 / 3 pairs answered")
        state = again.state()
        asked = {frozenset((a["winner"], a["loser"])) for a in given}
        assert state["done"] == 2 and frozenset((state["left_path"], state["right_path"])) not in asked
        status, body = again.request("/api/answer", {"winner": state["left_path"], "loser": state["right_path"]})
        assert status == 200 and json.loads(body)["finished"] is True
    assert len(answers.read_text(encoding="utf-8").splitlines()) == 3


def test_every_photo_is_served_whatever_its_name(page: Page, album: Path) -> None:
    for photo in [p for p in album.rglob("*.jpg") if not p.is_symlink()]:
        key = photo.relative_to(album).as_posix()
        from urllib.parse import quote

        status, body = page.request("/image/" + quote(key, errors="surrogateescape"))
        assert status == 200 and body == photo.read_bytes(), key


def test_unreadable_files_are_named_on_stderr_never_offered_nor_served(tmp_path: Path) -> None:
    """Empty, truncated, not-an-image, bomb and looping files among good photos: each named once, never shown."""
    album = tmp_path / "album"
    album.mkdir()
    good = {rf.copy_photo(photo, album).name for photo in sorted(rf.PHOTOS.glob("*.jpg"))}
    bad = {maker(album).name: kind for kind, maker in rf.BAD.items()}
    answers = tmp_path / "answers.jsonl"
    with collecting(album, answers, "--pairs", "6") as running:
        stderr = []
        while not (line := running.process.stderr.readline().decode()).startswith("0 / 6 pairs answered"):
            assert line, "".join(stderr)
            stderr.append(line)
        named = {name for name in bad for line in stderr if f"{album / name}: " in line}
        assert named == set(bad) and len(stderr) == len(bad), stderr  # one line each, nothing else
        assert all(line.endswith("; skipped, not offered\n") for line in stderr), stderr
        for name in bad:
            status, body = running.request(f"/image/{name}")
            assert status == 404 and json.loads(body)["error"] == f"{name!r}: not offered, cannot be read", name
        offered: set[str] = set()
        state = running.state()
        while not state.get("finished"):
            offered |= {state["left_path"], state["right_path"]}
            status, body = running.request("/api/answer", {"winner": state["left_path"], "loser": state["right_path"]})
            assert status == 200
            state = json.loads(body)
    assert offered == good and state["done"] == 6
