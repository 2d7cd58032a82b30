"""``persaes score --out``: one process and two under torchrun (gloo) write the same file; a rerun skips the done."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_testing import one_line_error, run

from persaes.io.scores import partial_path

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", "--no-python"]
PERSAES = shutil.which("persaes")


def torchrun_score(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc-per-node 2 --no-python persaes score ARGS --device cpu`` on a free port, 1 thread each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*TORCHRUN, PERSAES, "score", *args, "--device", "cpu"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def rows(path: Path) -> list[tuple[str, float]]:
    """(path, score) of each row of a score file, in order."""
    if path.suffix == ".json":
        return [(r["path"], r["score"]) for r in json.loads(path.read_text(encoding="utf-8"))]
    with open(path, newline="", encoding="utf-8") as handle:
        return [(r["path"], float(r["score"])) for r in csv.DictReader(handle)]


def same_rows(got: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    """Same files in the same order, scores equal to the printed decimals (a batch of another size may round
    the last decimal the other way)."""
    assert [name for name, _ in got] == [name for name, _ in expected]
    assert all(abs(a - b) <= 0.0011 for (_, a), (_, b) in zip(got, expected)), (got, expected)


@pytest.fixture
def album(photos: list[Path], tmp_path: Path) -> Path:
    """``tmp_path/album``: the four photos, a corrupt file among them, and one more photo in a subfolder."""
    folder = tmp_path / "album"
    (folder / "sub").mkdir(parents=True)
    for p in photos:
        shutil.copy(p, folder / p.name)
    (folder / "Cat4.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    shutil.copy(photos[0], folder / "sub" / "Bird4.jpg")
    return folder


@pytest.mark.skipif(PERSAES is None, reason="the persaes command is not installed")
def test_two_processes_write_what_one_does_and_a_rerun_skips_what_is_done(
        album: Path, tmp_path: Path, photos: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path
    monkeypatch.chdir(cwd)
    single = run("score", "album", "--out", "one.json", "--device", "cpu")
    assert single.exit_code == 1 and "album/Cat4.jpg" in single.stderr
    expected = rows(tmp_path / "one.json")
    names = ["album/Bird3.jpg", "album/Car1.jpg", "album/Cat3.jpg", "album/Dog2.jpg", "album/sub/Bird4.jpg"]
    assert [name for name, _ in expected] == names  # input order, the corrupt file left out

    result = torchrun_score("album", "--out", "two.json", cwd=cwd)
    assert result.returncode == 1, result.stderr  # the corrupt file, as in one process
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 2 and warnings[0].startswith("Warning: album/Cat4.jpg: "), result.stderr
    assert warnings[1] == "Warning: 1 of 6 files could not be scored"
    same_rows(rows(tmp_path / "two.json"), expected)
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["album", "one.json", "two.json"]  # partials removed

    # A rerun: the file's scores stay (one marked so it shows), a killed run's partial file is read (its cut-off
    # last line left out), and only the new photo and the corrupt file are tried again.
    done = [(name, 1.234 if name.endswith("Car1.jpg") else score) for name, score in rows(tmp_path / "two.json")]
    (tmp_path / "two.json").write_text(json.dumps([{"path": n, "score": s} for n, s in done]), encoding="utf-8")
    shutil.copy(photos[1], album / "sub" / "Car2.jpg")
    shutil.copy(photos[2], album / "sub" / "Cat5.jpg")
    partial_path(tmp_path / "two.json", 3).write_text('{"path": "album/sub/Car2.jpg", "score": 2.5}\n{"path": "al',
                                                      encoding="utf-8")
    result = torchrun_score("album", "--out", "two.json", cwd=cwd)
    assert result.returncode == 1, result.stderr
    assert "6 of 8 files already scored in two.json: skipped" in result.stderr
    assert "scoring: 1/1 photos" in result.stderr  # rank 0's share of the 2 left: Cat4.jpg failing, Cat5.jpg
    got = rows(tmp_path / "two.json")
    assert [name for name, _ in got] == names[:4] + ["album/sub/Bird4.jpg", "album/sub/Car2.jpg", "album/sub/Cat5.jpg"]
    assert dict(got)["album/Car1.jpg"] == 1.234 and dict(got)["album/sub/Car2.jpg"] == 2.5
    same_rows(got[-1:], [("album/sub/Cat5.jpg", dict(expected)["album/Cat3.jpg"])])  # a copy of Cat3.jpg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["album", "one.json", "two.json"]


@pytest.mark.skipif(PERSAES is None, reason="the persaes command is not installed")
def test_two_processes_without_out_print_one_list_in_order(album: Path, tmp_path: Path) -> None:
    (album / "Cat4.jpg").unlink()
    expected = json.loads(run("score", str(album), "--json", "--device", "cpu").stdout)
    result = torchrun_score(str(album), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    same_rows([(r["path"], r["score"]) for r in json.loads(result.stdout)], [(r["path"], r["score"]) for r in expected])


def test_one_process_out_csv_is_what_it_prints_and_a_rerun_scores_only_new_files(
        photos: list[Path], tmp_path: Path) -> None:
    album = tmp_path / "album"
    album.mkdir()
    for p in photos[:2]:
        shutil.copy(p, album / p.name)
    printed = run("score", str(album), "--device", "cpu")
    assert printed.exit_code == 0, printed.output
    out = tmp_path / "scores.csv"
    result = run("score", str(album), "--out", str(out), "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines == ["path,score"] + [",".join(line.split("\t")[::-1]) for line in printed.stdout.splitlines()]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["album", "scores.csv"]

    out.write_text(out.read_text(encoding="utf-8").replace(lines[1].split(",")[1], "9.999", 1), encoding="utf-8")
    shutil.copy(photos[2], album / photos[2].name)
    result = run("score", str(album), "--out", str(out), "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "2 of 3 files already scored" in result.stderr and "scoring: 1/1 photos" in result.stderr
    got = rows(out)
    assert [Path(name).name for name, _ in got] == sorted(p.name for p in photos[:3])
    assert got[0][1] == 9.999  # kept, not scored again
    result = run("score", str(album), "--out", str(out), "--device", "cpu")
    assert result.exit_code == 0 and "3 of 3 files already scored" in result.stderr
    assert "scoring" not in result.stderr and rows(out) == got


def test_out_mistakes_are_one_line_errors(photos: list[Path], tmp_path: Path) -> None:
    one_line_error(run("score", str(photos[0]), "--out", str(tmp_path / "s.txt")), "s.txt", ".json or .csv")
    one_line_error(run("score", str(photos[0]), "--out", str(tmp_path / "none" / "s.json")), "does not exist")
    one_line_error(run("score", str(photos[0]), "--out", str(tmp_path / "s.json"), "--json"), "--json", "--out")
    (tmp_path / "notes.json").write_text('{"not": "a list"}', encoding="utf-8")
    one_line_error(run("score", str(photos[0]), "--out", str(tmp_path / "notes.json"), "--device", "cpu"),
                   "notes.json: not a persaes score file")
    assert (tmp_path / "notes.json").read_text(encoding="utf-8") == '{"not": "a list"}'
