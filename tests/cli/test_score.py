from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner
from persaes.cli.main import main


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
