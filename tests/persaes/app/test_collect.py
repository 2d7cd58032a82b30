"""The preference-collection server: token, path safety, durable answers, undo, rerun, variants mode."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from persaes.app.collect import CollectServer, CollectSession, serve
from persaes.io.images import iter_images
from persaes.io.preferences import read_answers, resolve_answers

Response = tuple[int, bytes]


class Client:
    """Requests to a running server, with its token unless told otherwise."""

    def __init__(self, server: CollectServer) -> None:
        self.server = server
        self.base = f"http://127.0.0.1:{server.server_port}"

    def request(self, path: str, body: Any = None, token: str | None = "default", header: bool = False) -> Response:
        token = self.server.token if token == "default" else token
        headers = {"Content-Type": "application/json"}
        if token is not None and header:
            headers["X-Token"] = token
        elif token is not None:
            path += ("&" if "?" in path else "?") + f"token={token}"
        data = None if body is None else json.dumps(body).encode()
        method = "GET" if body is None else "POST"
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def state(self) -> dict[str, Any]:
        status, body = self.request("/api/next")
        assert status == 200
        return json.loads(body)

    def post(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        status, raw = self.request(path, body if body is not None else {})
        return status, json.loads(raw)


@pytest.fixture()
def client_for(running: Callable) -> Callable:
    """``with client_for(session) as client``: a :class:`Client` of a running server."""

    @contextmanager
    def run(session: CollectSession) -> Iterator[Client]:
        with running(session) as server:
            yield Client(server)

    return run


@pytest.fixture()
def album(tmp_path: Path, photos: list[Path]) -> Path:
    """Four photos, one of them in a subfolder, plus a non-image file."""
    root = tmp_path / "album"
    (root / "sub").mkdir(parents=True)
    for photo in photos[1:]:
        shutil.copy(photo, root / photo.name)
    shutil.copy(photos[0], root / "sub" / photos[0].name)
    (root / "notes.txt").write_text("not an image")
    return root


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_request_needs_the_token(client_for: Callable, album: Path, tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    with client_for(CollectSession(album, out, pairs=3)) as client:
        pair = client.state()
        for token in (None, "", "wrong-token", client.server.token[:-1]):
            for path in ("/", "/api/next", f"/image/{pair['left_path']}"):
                assert client.request(path, token=token)[0] == 403, (path, token)
            answer = {"winner": pair["left_path"], "loser": pair["right_path"]}
            assert client.request("/api/answer", answer, token=token)[0] == 403
            assert client.request("/api/undo", {}, token=token)[0] == 403
        assert not out.exists()
        assert client.request("/")[0] == 200
        assert client.request("/api/next", header=True)[0] == 200
        assert client.request(pair["left"].split("?")[0], header=True)[0] == 200
        assert client.request(pair["left"], token=None)[0] == 200  # the URL carries the token


def test_page_has_the_controls(client_for: Callable, album: Path, tmp_path: Path) -> None:
    with client_for(CollectSession(album, tmp_path / "a.jsonl")) as client:
        status, body = client.request("/")
    page = body.decode()
    assert status == 200
    for element in ('id="left"', 'id="right"', 'id="same"', 'id="undo"', 'id="progress"', "object-fit: contain"):
        assert element in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere
    assert body == resources.files("persaes.app").joinpath("collect.html").read_bytes()  # the package data file


@pytest.mark.parametrize("path", [
    "../secret.jpg",
    "sub/../../secret.jpg",
    "%2e%2e/secret.jpg",
    "%2E%2E%2Fsecret.jpg",
    "sub%2F..%2F..%2Fsecret.jpg",
    "/{outside}/secret.jpg",
    "%2F{outside}%2Fsecret.jpg",
    "..%5Csecret.jpg",
])
def test_paths_out_of_the_album_are_refused(client_for: Callable, album: Path, tmp_path: Path, path: str) -> None:
    secret = tmp_path / "secret.jpg"
    shutil.copy(next(album.glob("*.jpg")), secret)
    with client_for(CollectSession(album, tmp_path / "a.jsonl")) as client:
        status, body = client.request("/image/" + path.format(outside=str(tmp_path).strip("/")))
    assert status == 403
    assert body != secret.read_bytes()


def test_links_out_of_the_album_are_refused(client_for: Callable, album: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.jpg"
    shutil.copy(next(album.glob("*.jpg")), secret)
    (album / "link.jpg").symlink_to(secret)
    session = CollectSession(album, tmp_path / "a.jsonl")
    assert "link.jpg" not in session.images  # never offered
    with client_for(session) as client:
        assert client.request("/image/link.jpg")[0] == 404
        swapped = next(key for key in session.images if key.endswith(".jpg"))
        (album / swapped).unlink()
        (album / swapped).symlink_to(secret)  # an album photo replaced by a link after listing
        status, body = client.request(f"/image/{swapped}")
    assert status == 403
    assert body != secret.read_bytes()


def test_album_images_are_served_and_nothing_else(client_for: Callable, album: Path, tmp_path: Path) -> None:
    with client_for(CollectSession(album, tmp_path / "a.jsonl")) as client:
        for file in iter_images([album]):
            key = file.relative_to(album).as_posix()
            assert client.request(f"/image/{key}") == (200, file.read_bytes())
        assert client.request("/image/notes.txt")[0] == 404
        assert client.request("/image/missing.jpg")[0] == 404
        assert client.request("/nowhere")[0] == 404


def test_unreadable_photos_are_named_never_offered_nor_served(client_for: Callable, album: Path,
                                                              tmp_path: Path) -> None:
    good = {p.relative_to(album).as_posix() for p in iter_images([album])}
    whole = (album / "Car1.jpg").read_bytes()
    (album / "empty.jpg").write_bytes(b"")
    (album / "sub" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (album / "text.jpg").write_text("not an image, only named like one")
    bad = {"empty.jpg": "empty file", "sub/truncated.jpg": "truncated", "text.jpg": "not a readable image"}
    warnings: list[str] = []
    session = CollectSession(album, tmp_path / "a.jsonl", pairs=6, on_skip=warnings.append)
    assert len(warnings) == 3 and all("\n" not in line for line in warnings)
    for line, (key, problem) in zip(warnings, sorted(bad.items())):
        assert line.startswith(f"{album / key}: ") and problem in line.removeprefix(f"{album / key}: "), line
    assert sorted(session.skipped) == sorted(bad) and set(session.images) == good
    offered: set[str] = set()
    with client_for(session) as client:
        for key in bad:
            status, body = client.request(f"/image/{key}")
            assert status == 404 and json.loads(body) == {"error": f"{key!r}: not offered, cannot be read"}
        while not (state := client.state()).get("finished"):
            offered |= {state["left_path"], state["right_path"]}
            assert client.post("/api/answer", {"winner": state["left_path"], "loser": state["right_path"]})[0] == 200
    assert state["done"] == 6 and offered == good  # every pair of the four good photos, none of the others


def test_answers_are_appended_at_once(client_for: Callable, album: Path, tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    with client_for(CollectSession(album, out, pairs=3)) as client:
        first = client.state()
        assert (first["done"], first["total"]) == (0, 3)
        status, second = client.post("/api/answer", {"winner": first["right_path"], "loser": first["left_path"]})
        assert status == 200
        records = lines(out)  # on disk while the server still runs
        assert [(r["winner"], r["loser"]) for r in records] == [(first["right_path"], first["left_path"])]
        assert "tie" not in records[0] and isinstance(records[0]["t"], float)
        assert (second["done"], second["total"]) == (1, 3)
        assert {second["left_path"], second["right_path"]} != {first["left_path"], first["right_path"]}
        status, third = client.post("/api/answer", {"left": second["left_path"], "right": second["right_path"],
                                                    "tie": True})
        assert status == 200 and third["done"] == 2
        tie = lines(out)[1]
        assert (tie["winner"], tie["loser"], tie["tie"]) == (second["left_path"], second["right_path"], True)
        client.post("/api/answer", {"winner": third["left_path"], "loser": third["right_path"]})
        assert client.state() == {"finished": True, "done": 3, "total": 3, "can_undo": True}
    assert len(lines(out)) == 3


def test_undo_appends_a_line_and_asks_the_pair_again(client_for: Callable, album: Path, tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    with client_for(CollectSession(album, out, pairs=3)) as client:
        first = client.state()
        assert first["can_undo"] is False
        assert client.post("/api/undo")[0] == 400  # nothing to undo yet
        client.post("/api/answer", {"winner": first["left_path"], "loser": first["right_path"]})
        status, again = client.post("/api/undo")
        assert status == 200
        assert lines(out)[-1] == {"undo": True}
        assert (again["left_path"], again["right_path"]) == (first["left_path"], first["right_path"])
        assert (again["done"], again["total"], again["can_undo"]) == (0, 3, False)
        assert read_answers(out) == ([], [])


def test_only_the_pair_on_offer_can_be_answered(client_for: Callable, album: Path, tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    with client_for(CollectSession(album, out, pairs=2)) as client:
        pair = client.state()
        other = next(key for key in client.server.session.images if key not in (pair["left_path"], pair["right_path"]))
        for body in (
            {"winner": pair["left_path"], "loser": other},
            {"winner": pair["left_path"], "loser": pair["left_path"]},
            {"left": other, "right": pair["right_path"], "tie": True},
            {"winner": pair["left_path"]},
            {"winner": 1, "loser": 2},
        ):
            assert client.post("/api/answer", body)[0] == 400, body
        assert client.request("/api/answer", ["not", "an", "object"])[0] == 400
        assert not out.exists()
        answer = {"winner": pair["left_path"], "loser": pair["right_path"]}
        assert client.post("/api/answer", answer)[0] == 200
        assert client.post("/api/answer", answer)[0] == 400  # a double click answers once
    assert len(lines(out)) == 1


def test_a_rerun_continues_where_it_stopped(album: Path, tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    first = CollectSession(album, out, pairs=5)
    answered = []
    for _ in range(3):
        state = first.state()
        first.answer(state["left_path"], state["right_path"])
        answered.append(frozenset((state["left_path"], state["right_path"])))
    first.undo()
    answered.pop()
    out.write_text(out.read_text() + '{"winner": "cut off')  # a crash mid-write
    rerun = CollectSession(album, out, pairs=5)
    assert (rerun.done, rerun.total) == (2, 5)
    assert len(rerun.problems) == 1
    asked = []
    while not (state := rerun.state()).get("finished"):
        assert state["done"] == 2 + len(asked)
        asked.append(frozenset((state["left_path"], state["right_path"])))
        rerun.answer(state["right_path"], state["left_path"])
    assert len(asked) == 3 and not set(asked) & set(answered)
    assert len(read_answers(out)[0]) == 5


def test_too_few_photos_or_no_album(tmp_path: Path, photos: list[Path]) -> None:
    with pytest.raises(FileNotFoundError, match="album folder not found"):
        CollectSession(tmp_path / "missing", tmp_path / "a.jsonl")
    shutil.copy(photos[0], tmp_path / photos[0].name)
    with pytest.raises(ValueError, match="found 1 photo"):
        CollectSession(tmp_path, tmp_path / "a.jsonl")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CollectSession(tmp_path, tmp_path / "no" / "a.jsonl", variants=True)


def test_the_server_binds_to_localhost_only(album: Path, tmp_path: Path) -> None:
    session = CollectSession(album, tmp_path / "a.jsonl")
    for host in ("0.0.0.0", "localhost", "::", ""):
        with pytest.raises(ValueError, match="127.0.0.1"):
            serve(session, host=host)
    server = serve(session, token="fixed")
    try:
        assert server.server_address[0] == "127.0.0.1"
        assert server.url == f"http://127.0.0.1:{server.server_port}/?token=fixed"
    finally:
        server.server_close()
    assert len(serve(session).token) >= 20 and serve(session).token != serve(session).token


def test_a_browser_hanging_up_is_not_an_error(album: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    server = serve(CollectSession(album, tmp_path / "a.jsonl"), token="fixed")
    try:
        for error in (BrokenPipeError(32, "Broken pipe"), ConnectionResetError(104, "reset")):
            try:
                raise error
            except OSError:
                server.handle_error(None, ("127.0.0.1", 1))
        assert capsys.readouterr().err == ""
        try:
            raise RuntimeError("a real bug")
        except RuntimeError:
            server.handle_error(None, ("127.0.0.1", 1))
        assert "RuntimeError: a real bug" in capsys.readouterr().err
    finally:
        server.server_close()


def test_variants_mode_writes_edits_into_the_album(client_for: Callable, album: Path, tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    stems = [p.stem for p in iter_images([album])]
    variants = album / "_variants"
    variants.mkdir()
    for stem in stems:
        (variants / f"{stem}__v1.jpg").write_bytes(b"existing")  # never overwritten
    session = CollectSession(album, out, pairs=2, variants=True, seed=3)
    with client_for(session) as client:
        state = client.state()
        left, right = state["left_path"], state["right_path"]
        source = left.removeprefix("_variants/").rsplit("__v", 1)[0]
        assert (left, right) == (f"_variants/{source}__v2.jpg", f"_variants/{source}__v3.jpg")
        assert client.request(f"/image/{left}") == (200, (album / left).read_bytes())
        status, following = client.post("/api/answer", {"winner": right, "loser": left})
        assert status == 200 and following["left_path"].startswith("_variants/")  # the next pair, made now
    assert all((variants / f"{stem}__v1.jpg").read_bytes() == b"existing" for stem in stems)
    with Image.open(album / left) as a, Image.open(album / right) as b:
        assert a.format == b.format == "JPEG" and a.size == b.size
        assert a.tobytes() != b.tobytes()
    edits = lines(variants / "edits.jsonl")
    assert [e["variant"] for e in edits] == [left, right, following["left_path"], following["right_path"]]
    assert all(e["edit"]["kind"] in ("exposure", "color", "haze") for e in edits)
    assert edits[0]["source"] == edits[1]["source"] and Path(edits[0]["source"]).stem == source
    assert [(r["winner"], r["loser"]) for r in lines(out)] == [(right, left)]
    keys = [p.relative_to(album).as_posix() for p in iter_images([album])]  # as `persaes personalize` lists it
    assert resolve_answers(read_answers(out)[0], album, keys)[0] == [(right, left)]
    assert CollectSession(album, out, pairs=2, variants=True).done == 1
    assert CollectSession(album, out, pairs=2).done == 0  # plain mode neither counts nor pairs variants
