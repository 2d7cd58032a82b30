from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

from click.testing import CliRunner
from persaes.cli.main import main
from PIL import Image

FAST = ["--ops", "exposure", "--steps", "1", "--device", "cpu"]


def scored(*paths: Path) -> dict[str, str]:
    """``persaes score``'s printed score of each file, by file name."""
    result = CliRunner().invoke(main, ["score", *map(str, paths), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return {Path(path).name: value for value, path in (line.split("\t") for line in result.stdout.splitlines())}


def test_score_folder_with_a_corrupt_file(photos: list[Path], tmp_path: Path) -> None:
    album = tmp_path / "album"
    (album / "sub").mkdir(parents=True)
    for p in photos[:2]:
        shutil.copy(p, album / p.name)
    shutil.copy(photos[2], album / "sub" / photos[2].name)
    (album / "sub" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    result = CliRunner().invoke(main, ["score", str(album), "--json", "--device", "cpu"])
    assert result.exit_code == 1
    rows = json.loads(result.stdout)
    assert sorted(Path(r["path"]).name for r in rows) == sorted(p.name for p in photos[:3])
    assert all(1 <= r["score"] <= 10 for r in rows)
    assert "corrupt.jpg" in result.stderr and "Traceback" not in result.stderr


def test_score_plain_lines_and_success_status(photos: list[Path]) -> None:
    result = CliRunner().invoke(main, ["score", str(photos[0]), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    value, path = result.stdout.strip().split("\t")
    assert path == str(photos[0]) and 1 <= float(value) <= 10


def test_score_missing_profile_is_one_line(photos: list[Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["score", str(photos[0]), "--profile", str(tmp_path / "none.safetensors")])
    assert result.exit_code != 0 and "no such weights or profile file" in result.stderr
    assert "Traceback" not in result.output


def test_the_report_shows_the_score_persaes_score_prints(photos: list[Path], tmp_path: Path) -> None:
    """A fixture photo at its own size: the report's scores of the original and of both outputs are those files'."""
    album = tmp_path / "album"
    album.mkdir()
    shutil.copy(photos[0], album / photos[0].name)
    report = tmp_path / "report"
    result = CliRunner().invoke(main, ["compare", str(album), "--profile", "generic", "--out", str(report), *FAST])
    assert result.exit_code == 0, result.output
    page = (report / "index.html").read_text(encoding="utf-8")
    # each cell: generic X · personal <b>Y</b>, in the order original | generic | personalized
    shown = re.findall(r"generic (\S+) · personal <b>(\S+)</b>", page)
    files = [album / photos[0].name, report / "generic" / photos[0].name, report / "personal" / photos[0].name]
    expected = [scored(file)[photos[0].name] for file in files]
    assert shown == [(value, value) for value in expected]  # the profile is the generic weights here


def test_scores_csv_before_is_the_score_persaes_score_prints(photos: list[Path], tmp_path: Path) -> None:
    """A photo larger than the model's input, so how the file is read and resized shows in the score."""
    album = tmp_path / "album"
    album.mkdir()
    with Image.open(photos[0]) as photo:
        photo.resize((1600, 1280), Image.Resampling.BICUBIC).save(album / "big.jpg", quality=92)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["retouch", str(album), str(out), *FAST])
    assert result.exit_code == 0, result.output
    with open(out / "scores.csv", newline="", encoding="utf-8") as handle:
        row = next(csv.DictReader(handle))
    assert row["score_before"] == scored(album / "big.jpg")["big.jpg"]
    assert row["score_after"] == scored(out / "big.jpg")["big.jpg"]
