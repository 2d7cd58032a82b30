"""The side-by-side report: generic and personal columns of real photos, an offline page, a contact sheet."""

from __future__ import annotations

import csv
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from persaes.app.report import VERSIONS, Row, compare_folder, render_html
from persaes.app.retouch_folder import RetouchError
from persaes.core.scorer import load_scorer
from retouch.optimize import EditSettings

FAST = EditSettings(steps=1, work_size=64)
OPS = ("exposure",)


@pytest.fixture(scope="module")
def generic():
    return load_scorer("generic", device="cpu")


@pytest.fixture(scope="module")
def personal():
    """The generic weights loaded as a profile: a second scorer, as ``persaes compare --profile`` loads one."""
    return load_scorer("generic", device="cpu")


@pytest.fixture()
def album(tmp_path: Path, photos: list[Path]) -> Path:
    """Three small real photos (one in a subfolder), a broken file and a variant."""
    root = tmp_path / "album"
    (root / "sub").mkdir(parents=True)
    (root / "_variants").mkdir()
    for photo, target in zip(photos, ("sub/Bird3.jpg", "Car1.jpg", "Cat & Dog.jpg")):
        image = Image.open(photo)
        image.thumbnail((96, 96))
        image.save(root / target)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xffnot really")
    shutil.copy(root / "Car1.jpg", root / "_variants" / "Car1__v1.jpg")
    return root


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.headers: list[str] = []
        self._in_th = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.images += [v for k, v in attrs if tag == "img" and k == "src" and v]
        self._in_th = tag == "th"

    def handle_data(self, data: str) -> None:
        if self._in_th:
            self.headers.append(data)
            self._in_th = False


def _scores(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["path"]: row for row in csv.DictReader(handle)}


def test_compare_writes_generic_and_personal_columns_and_an_offline_page(generic, personal, album: Path,
                                                                         tmp_path: Path) -> None:
    report = tmp_path / "report"
    calls: list[tuple[int, int]] = []
    errors: list[str] = []
    rows, failed = compare_folder(album, report, generic, personal, OPS, FAST,
                                  progress=lambda done, total: calls.append((done, total)), on_error=errors.append)
    names = ["Car1.jpg", "Cat & Dog.jpg", "sub/Bird3.jpg"]
    assert [row.name for row in rows] == names  # the variant is not the user's photo
    assert len(failed) == 1 and "broken.jpg" in failed[0] and errors == failed
    # one run over the album's 4 files: each photo's generic edit, then the profile's on top, both written
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    for column in ("generic", "personal"):
        scores = _scores(report / column / "scores.csv")
        assert sorted(scores) == names and {row["model"] for row in scores.values()} == {column}
        assert all(Image.open(report / column / name).size == Image.open(album / name).size for name in names)
    for row in rows:
        assert set(row.thumbs) == set(row.scores) == set(VERSIONS)
        assert all(1.0 <= score <= 10.0 for pair in row.scores.values() for score in pair)
    page = _Page()
    page.feed((report / "index.html").read_text(encoding="utf-8"))
    assert page.headers[:4] == ["photo", "original", "generic", "personalized"]
    assert page.headers[4:] == names
    assert page.images == [row.thumbs[v] for row in rows for v in VERSIONS]
    assert all(not re.match(r"^[a-z]+:", src) and (report / src).is_file() for src in page.images)
    assert "Cat &amp; Dog.jpg" in (report / "index.html").read_text(encoding="utf-8")
    with Image.open(report / "contact_sheet.png") as sheet:
        assert sheet.size == (3 * 240 + 40, 24 + len(rows) * (240 + 18 + 8))


def test_limit_retouches_the_first_photos_and_a_rerun_skips_them(generic, personal, album: Path,
                                                                  tmp_path: Path) -> None:
    report = tmp_path / "report"
    rows, failed = compare_folder(album, report, generic, personal, OPS, FAST, limit=1)
    assert [row.name for row in rows] == ["Car1.jpg"] and failed == []
    assert sorted(p.name for p in (report / "personal").iterdir()) == ["Car1.jpg", "scores.csv"]
    calls: list[tuple[int, int]] = []
    again, _ = compare_folder(album, report, generic, personal, OPS, FAST, limit=1,
                              progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 0)] and again == rows
    calls.clear()
    compare_folder(album, report, generic, personal, OPS, EditSettings(steps=2, work_size=64), limit=1,
                   progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (1, 1)  # other settings: the comparison makes its photos again
    with open(report / "personal" / "scores.csv", newline="", encoding="utf-8") as handle:
        assert '"steps":2' in next(csv.DictReader(handle))["settings"]


def test_bad_folders_and_limits_are_refused(generic, personal, album: Path) -> None:
    with pytest.raises(RetouchError, match="inside the input folder"):
        compare_folder(album, album / "report", generic, personal, OPS, FAST)
    with pytest.raises(ValueError, match="limit"):
        compare_folder(album, album.parent / "report", generic, personal, OPS, FAST, limit=0)


def test_the_page_escapes_names_and_links() -> None:
    scores = {version: (5.0, 6.0) for version in VERSIONS}
    row = Row('<b>"x"</b>.jpg', {version: f"thumbs/{version}/a&b.jpg" for version in VERSIONS}, scores)
    page = render_html([row])
    assert "<b>\"x\"</b>" not in page and "&lt;b&gt;&quot;x&quot;&lt;/b&gt;.jpg" in page
    assert 'src="thumbs/generic/a&amp;b.jpg"' in page
    assert "1 photos. Mean personal score: original 6.000, generic 6.000,\npersonalized 6.000." in page
    assert "generic 5.000 · personal <b>6.000</b>" in page  # as `persaes score` prints scores
