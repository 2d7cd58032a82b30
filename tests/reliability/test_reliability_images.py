"""Bad and odd photos through ``persaes score``, ``personalize`` and ``retouch``.

One album holds every case (see ``reliability_files``); each command runs over it once and
each case is then checked on its own: processed correctly, or named in one line on stderr,
while every other photo is still processed and the exit status says something failed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import reliability_files as rf
from click.testing import CliRunner, Result
from persaes.cli.main import main
from PIL import Image, ImageOps
from safetensors import safe_open

GOOD_CASES = sorted(rf.GOOD)
BAD_CASES = sorted(rf.BAD)
ANCHOR = "sub/cat in sub.jpg"  # a real photo every answer compares against


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def stderr_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def lines_naming(result: Result, path: Path) -> list[str]:
    return [line for line in stderr_lines(result) if str(path) in line]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An album with every odd and bad case, folder link loops and a real photo in a subfolder."""
    album = tmp_path_factory.mktemp("zoo") / "album"
    album.mkdir()
    files = {case: make(album) for case, make in {**rf.GOOD, **rf.BAD}.items()}
    rf.folder_link_loops(album)
    rf.copy_photo(rf.CAT, album / "sub", "cat in sub.jpg")
    return files


@pytest.fixture(scope="module")
def album(zoo: dict[str, Path]) -> Path:
    return zoo["1x1"].parent


@pytest.fixture(scope="module")
def scored(album: Path) -> Result:
    return invoke("score", album, "--json", "--device", "cpu")


@pytest.fixture(scope="module")
def retouched(album: Path) -> tuple[Result, Path]:
    out = album.parent / "out"
    return invoke("retouch", album, out, "--steps", "1", "--device", "cpu"), out


@pytest.fixture(scope="module")
def personalized(album: Path, zoo: dict[str, Path]) -> tuple[Result, Path]:
    """Answers that prefer every case (good or bad) to the anchor photo."""
    prefs = album.parent / "answers.jsonl"
    lines = [json.dumps({"winner": path.relative_to(album).as_posix(), "loser": ANCHOR}, ensure_ascii=False)
             for path in zoo.values()]
    prefs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = album.parent / "me.safetensors"
    return invoke("personalize", album, "--prefs", prefs, "--out", out, "--iterations", "5", "--device", "cpu"), out


# -- score -----------------------------------------------------------------------------------------------------------

def test_score_exit_status_and_summary(scored: Result, zoo: dict[str, Path]) -> None:
    assert scored.exit_code == 1
    assert stderr_lines(scored)[-1] == f"Warning: {len(BAD_CASES)} of {len(zoo) + 1} files could not be scored"
    assert "Traceback" not in scored.output


@pytest.mark.parametrize("case", GOOD_CASES)
def test_score_processes_odd_photos(scored: Result, zoo: dict[str, Path], case: str) -> None:
    rows = {row["path"]: row["score"] for row in json.loads(scored.stdout)}
    assert 1 <= rows[str(zoo[case])] <= 10
    assert not lines_naming(scored, zoo[case])


@pytest.mark.parametrize("case", BAD_CASES)
def test_score_names_bad_photos_in_one_line(scored: Result, zoo: dict[str, Path], case: str) -> None:
    rows = {row["path"] for row in json.loads(scored.stdout)}
    assert str(zoo[case]) not in rows
    (line,) = lines_naming(scored, zoo[case])
    assert line.startswith(f"Warning: {zoo[case]}: ")


def test_folder_link_loops_are_not_followed(scored: Result, album: Path) -> None:
    paths = [Path(row["path"]) for row in json.loads(scored.stdout)]
    assert str(album / ANCHOR) in map(str, paths)
    assert len(paths) == len(set(paths)) == len(GOOD_CASES) + 1
    assert not any({"again", "up"} & set(p.relative_to(album).parts) for p in paths)


def test_bad_photo_messages(scored: Result, zoo: dict[str, Path]) -> None:
    """The reasons given, as docs/reliability.md lists them."""
    reason = {case: lines_naming(scored, zoo[case])[0].split(f"{zoo[case]}: ", 1)[1] for case in BAD_CASES}
    assert reason["zero-byte"] == "empty file"
    assert reason["truncated-jpeg"].startswith("not a readable image (image file is truncated")
    assert reason["text-named-jpg"].startswith("not a readable image (cannot identify image file")
    assert reason["self-link-loop"] == "broken or looping link"
    for case in ("png-bomb-200mp", "jpeg-bomb-200mp"):
        assert reason[case].startswith("refused as a decompression bomb (Image size (200000000 pixels)")


def test_odd_formats_score_like_their_plain_rgb_version(tmp_path: Path) -> None:
    """16-bit, CMYK, greyscale, WebP and EXIF-rotated files are scored on the pixels of a plain 8-bit RGB copy."""
    plain = {}
    for make in (rf.rgb16_png, rf.grey16_png, rf.cmyk_jpeg, rf.greyscale_jpeg, rf.webp, rf.exif_rotated):
        path = make(tmp_path)
        with Image.open(path) as img:
            decoded = rf.small() if make is rf.rgb16_png else img.convert("RGB")
            if make is rf.grey16_png:
                decoded = rf.small().convert("L").convert("RGB")
            if make is rf.exif_rotated:  # orientation 6: the stored pixels turned 90° clockwise
                decoded = decoded.transpose(Image.Transpose.ROTATE_270)
        decoded.save(tmp_path / f"plain-{path.stem}.png")
        plain[path.name] = f"plain-{path.stem}.png"
    with Image.open(tmp_path / "rotated.jpg") as img:
        img.convert("RGB").save(tmp_path / "sideways.png")  # what a reader ignoring EXIF would see
    result = invoke("score", tmp_path, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    score = {Path(row["path"]).name: row["score"] for row in json.loads(result.stdout)}
    for name, reference in plain.items():
        assert abs(score[name] - score[reference]) <= 0.01, (name, score)
    assert abs(score["rotated.jpg"] - score["sideways.png"]) > 0.05, score  # orientation matters to the scorer


# -- retouch ---------------------------------------------------------------------------------------------------------

def test_retouch_exit_status_and_summary(retouched: tuple[Result, Path]) -> None:
    result, out = retouched
    assert result.exit_code == 1
    assert result.stdout.strip() == f"{len(GOOD_CASES) + 1} photos retouched into {out}, 0 already done, " \
                                    f"{len(BAD_CASES)} failed"
    assert "Traceback" not in result.output


@pytest.mark.parametrize("case", GOOD_CASES)
def test_retouch_processes_odd_photos(retouched: tuple[Result, Path], album: Path, zoo: dict[str, Path],
                                      case: str) -> None:
    result, out = retouched
    src = zoo[case]
    dst = out / src.relative_to(album)
    dst = dst.with_suffix(".png") if dst.suffix == ".gif" else dst
    with Image.open(dst) as img:
        img.load()
        with Image.open(src) as original:
            upright = ImageOps.exif_transpose(original).size
        assert img.mode == KEPT_MODES.get(case, "RGB") and img.size == upright
        assert img.getexif().get(0x0112, 1) == 1
    assert not lines_naming(result, src)


KEPT_MODES = {"png-alpha": "RGBA", "png-16bit-grey": "I;16", "greyscale": "L"}
"""The cases whose output is not 8-bit RGB: their alpha channel, greyscale and 16 bits are kept (PIL reads 16-bit
colour PNGs at 8 bits)."""


@pytest.mark.parametrize("case", BAD_CASES)
def test_retouch_names_bad_photos_in_one_line(retouched: tuple[Result, Path], album: Path, zoo: dict[str, Path],
                                              case: str) -> None:
    result, out = retouched
    assert not (out / zoo[case].relative_to(album)).exists()
    (line,) = lines_naming(result, zoo[case])
    assert line.startswith(f"Warning: {zoo[case]}: ")


def test_retouch_output_holds_only_finished_photos(retouched: tuple[Result, Path]) -> None:
    _, out = retouched
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    rows = (out / "scores.csv").read_text(encoding="utf-8").splitlines()
    assert len(written) == len(GOOD_CASES) + 2  # the photos, the anchor and scores.csv
    assert len(rows) == len(GOOD_CASES) + 2  # header, photos, anchor
    assert not any(name.startswith(".") for name in written)


def test_retouch_keeps_content_of_odd_formats(tmp_path: Path) -> None:
    """With no optimisation the edit is the identity, so each output shows its source's upright pixels."""
    album = tmp_path / "in"
    album.mkdir()
    for make in (rf.rgba_png, rf.grey16_png, rf.rgb16_png, rf.cmyk_jpeg, rf.palette_gif, rf.webp, rf.one_pixel):
        make(album)
    for orientation in (3, 6, 8):
        rf.exif_rotated(album, orientation, f"rotated{orientation}.jpg")
    result = invoke("retouch", album, tmp_path / "out", "--steps", "0", "--device", "cpu")
    assert result.exit_code == 0, result.output

    small = rf.small()
    expected = {
        "alpha.png": Image.open(album / "alpha.png"),  # alpha channel and colour as they were
        "grey16.png": Image.open(album / "grey16.png"),  # its 16-bit levels
        "rgb16.png": small,
        "cmyk.jpg": small,
        "palette.png": small,
        "photo.webp": small,
        "one.png": Image.new("RGB", (1, 1), (200, 120, 40)),
        "rotated3.jpg": small.transpose(Image.Transpose.ROTATE_180),
        "rotated6.jpg": small.transpose(Image.Transpose.ROTATE_270),
        "rotated8.jpg": small.transpose(Image.Transpose.ROTATE_90),
    }
    for name, want in expected.items():
        got = Image.open(tmp_path / "out" / name)
        assert got.size == want.size and got.mode == want.mode, name
        error = np.abs(np.asarray(got, dtype=float) - np.asarray(want, dtype=float)).mean()
        assert error < 8, (name, error)  # JPEG/WebP and a 64-colour palette; a wrong orientation is ~40
    for name in ("alpha.png", "grey16.png"):  # lossless, and kept at its depth: the very same levels
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / name)), np.asarray(expected[name])), name


def test_retouch_drops_a_colour_profile_of_another_colour_space(tmp_path: Path) -> None:
    """A CMYK photo's CMYK ICC profile must not label the RGB output (colours would be wrong)."""
    album = tmp_path / "in"
    album.mkdir()
    cmyk_profile = bytes(16) + b"CMYK" + bytes(108)
    rgb_profile = bytes(16) + b"RGB " + bytes(108)
    rf.small().convert("CMYK").save(album / "cmyk.jpg", icc_profile=cmyk_profile)
    rf.small().save(album / "rgb.jpg", icc_profile=rgb_profile)
    result = invoke("retouch", album, tmp_path / "out", "--steps", "0", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "out" / "cmyk.jpg").info.get("icc_profile") is None
    assert Image.open(tmp_path / "out" / "rgb.jpg").info.get("icc_profile") == rgb_profile


# -- personalize -----------------------------------------------------------------------------------------------------

def test_personalize_exit_status_and_summary(personalized: tuple[Result, Path]) -> None:
    result, out = personalized
    assert result.exit_code == 1
    assert f"profile written to {out} ({len(GOOD_CASES)} answers, 0 inferred pairs" in result.stdout
    assert stderr_lines(result)[-1] == f"Warning: {len(BAD_CASES)} problems (listed above) were skipped"
    with safe_open(str(out), "pt") as handle:
        assert json.loads(handle.metadata()["persaes"])["trained_on"]["answers"] == len(GOOD_CASES)
    assert "Traceback" not in result.output


@pytest.mark.parametrize("case", BAD_CASES)
def test_personalize_names_bad_photos_in_one_line(personalized: tuple[Result, Path], zoo: dict[str, Path],
                                                  case: str) -> None:
    (line,) = lines_naming(personalized[0], zoo[case])
    assert line.startswith(f"Warning: {zoo[case]}: ")


def test_a_clean_album_exits_zero(tmp_path: Path) -> None:
    album = tmp_path / "album"
    album.mkdir()
    for name in ("Bird3.jpg", "Car1.jpg", "Dog2.jpg"):
        Image.open(rf.PHOTOS / name).resize((120, 96)).save(album / name)
    prefs = tmp_path / "answers.jsonl"
    prefs.write_text('{"winner": "Bird3.jpg", "loser": "Car1.jpg"}\n{"winner": "Car1.jpg", "loser": "Dog2.jpg"}\n')
    assert invoke("score", album, "--device", "cpu").exit_code == 0
    assert invoke("retouch", album, tmp_path / "out", "--steps", "1", "--device", "cpu").exit_code == 0
    result = invoke("personalize", album, "--prefs", prefs, "--out", tmp_path / "me.safetensors", "--iterations", "5",
                    "--device", "cpu")
    assert result.exit_code == 0 and "(2 answers, 1 inferred pairs" in result.stdout, result.output


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Raise TimeoutError in the block after ``seconds`` (a blocked read of a FIFO would hang forever)."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_fifo_named_jpg_is_skipped_in_folders_and_refused_by_name(tmp_path: Path) -> None:
    album = tmp_path / "album"
    album.mkdir()
    for name in ("Bird3.jpg", "Car1.jpg"):
        Image.open(rf.PHOTOS / name).resize((120, 96)).save(album / name)
    os.mkfifo(album / "pipe.jpg")
    prefs = tmp_path / "answers.jsonl"
    prefs.write_text('{"winner": "Bird3.jpg", "loser": "Car1.jpg"}\n{"winner": "pipe.jpg", "loser": "Car1.jpg"}\n')
    with deadline(120):
        scored = invoke("score", album, "--json", "--device", "cpu")
        assert scored.exit_code == 0 and len(json.loads(scored.stdout)) == 2, scored.output
        named = invoke("score", album / "pipe.jpg", "--device", "cpu")
        assert named.exit_code == 1 and f"Warning: {album / 'pipe.jpg'}: not a regular file" in named.stderr
        retouched = invoke("retouch", album, tmp_path / "out", "--steps", "0", "--device", "cpu")
        assert retouched.exit_code == 0 and "2 photos retouched" in retouched.stdout, retouched.output
        result = invoke("personalize", album, "--prefs", prefs, "--out", tmp_path / "me.safetensors", "--iterations",
                        "5", "--device", "cpu")
    assert result.exit_code == 1 and "Warning: image 'pipe.jpg' (in 1 answer(s)) is not in the album" in result.stderr


# -- decompression bombs: memory stays bounded -----------------------------------------------------------------------

_PEAK = """
import resource, sys
from persaes.io.images import ImageError, open_rgb
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    open_rgb(sys.argv[1])
except ImageError as err:
    print(err)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_bombs_are_refused_before_decoding(tmp_path: Path) -> None:
    """A header claiming 200 (or 108) megapixels is refused with its reason, and the peak memory barely moves."""
    bombs = [rf.png_bomb(tmp_path), rf.jpeg_bomb(tmp_path), tmp_path / "108mp.png"]
    bombs[2].write_bytes(rf.png_bytes(12000, 9000, 8, 2, b"\x00" * 64))
    reasons = ["decompression bomb", "decompression bomb", "12000x9000 is more than 100 megapixels"]
    for bomb, reason in zip(bombs, reasons):
        run = subprocess.run([sys.executable, "-c", _PEAK, str(bomb)], capture_output=True, text=True, check=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        message, grown_kib = run.stdout.strip().splitlines()
        assert message.startswith(f"{bomb}: ") and reason in message
        assert int(grown_kib) < 20_000, grown_kib  # decoding would take 300-600 MB


def test_score_of_a_bomb_uses_no_more_memory_than_a_tiny_photo(tmp_path: Path) -> None:
    """The whole command, run in a child process: peak RSS with a 200 MP bomb vs a 1x1 photo."""
    peaks = {}
    for make in (rf.one_pixel, rf.png_bomb):
        path = make(tmp_path)
        code = ("import resource, subprocess, sys; "
                "subprocess.run([sys.executable, '-c', 'from persaes.cli.main import main; main()', "
                f"'--quiet', 'score', {str(path)!r}, '--device', 'cpu']); "
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=Path(__file__).resolve().parents[2])
        peaks[make.__name__] = int(run.stdout.strip().splitlines()[-1])
        if make is rf.png_bomb:
            assert run.stderr.strip().splitlines()[0].startswith(f"Warning: {path}: refused as a decompression bomb")
    assert peaks["png_bomb"] < peaks["one_pixel"] + 30_000, peaks


# -- names the file system can hold ----------------------------------------------------------------------------------

@pytest.fixture()
def undecodable(tmp_path: Path) -> tuple[Path, Path]:
    """An album with a photo whose name is not UTF-8 (Latin-1 "café", as old cameras and Windows copies make)."""
    album = tmp_path / "album"
    album.mkdir()
    name = os.fsdecode(b"caf\xe9.jpg")
    try:
        shutil.copy(rf.BIRD, album / name)
    except (UnicodeEncodeError, OSError):
        pytest.skip("the file system refuses names that are not UTF-8")
    Image.open(rf.CAT).resize((120, 96)).save(album / "cat.jpg")
    return album, album / name


def test_score_and_retouch_a_name_that_is_not_utf8(undecodable: tuple[Path, Path], tmp_path: Path) -> None:
    album, photo = undecodable
    scored = invoke("score", album, "--json", "--device", "cpu")
    assert scored.exit_code == 0, scored.output
    assert sorted(Path(row["path"]) for row in json.loads(scored.stdout)) == [photo, album / "cat.jpg"]
    plain = invoke("score", photo, "--device", "cpu")
    assert plain.exit_code == 0 and plain.stdout.endswith("caf\\udce9.jpg\n")  # escaped, not a crash
    result = invoke("retouch", album, tmp_path / "out", "--steps", "1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / photo.name).is_file()
    rows = (tmp_path / "out" / "scores.csv").read_bytes().splitlines()
    assert any(row.startswith(b"caf\xe9.jpg,") for row in rows)  # the name as the file system has it
    rerun = invoke("retouch", album, tmp_path / "out", "--steps", "1", "--device", "cpu")
    assert rerun.exit_code == 0 and "0 photos retouched" in rerun.stdout and "2 already done" in rerun.stdout


def test_personalize_a_name_that_is_not_utf8(undecodable: tuple[Path, Path], tmp_path: Path) -> None:
    album, photo = undecodable
    prefs = tmp_path / "answers.jsonl"
    prefs.write_text(json.dumps({"winner": photo.name, "loser": "cat.jpg"}) + "\n")
    result = invoke("personalize", album, "--prefs", prefs, "--out", tmp_path / "me.safetensors", "--iterations", "5",
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
