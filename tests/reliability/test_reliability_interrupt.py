"""``persaes retouch`` and ``persaes personalize`` killed with SIGKILL: mid-run, and mid-write of a file.

The mid-write kills are made certain by a wrapper that writes half of the file and then waits to be killed;
the preference page's kill is in test_reliability_collect.py.
"""

from __future__ import annotations

import csv
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import reliability_files as rf
from click.testing import CliRunner
from persaes.cli.main import main
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
RUN_CLI = "from persaes.cli.main import main; main(prog_name='persaes')"
HALF_WRITE = """
import sys, time
{patch}
def half_then_wait(data: bytes, path) -> None:
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    print("HALF-WRITTEN", path, flush=True)
    time.sleep(600)
""" + RUN_CLI

PATCH_PHOTO = """
import pathlib
pathlib.Path.write_bytes = lambda self, data: half_then_wait(data, self)  # save_photo's write of the temp file
"""
PATCH_PROFILE = """
import safetensors.torch
from safetensors.torch import save  # bytes of the whole file
safetensors.torch.save_file = lambda tensors, path, metadata=None: half_then_wait(save(tensors, metadata), path)
"""


def start(*args: str, code: str = RUN_CLI) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process.stdout.close()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL


def wait_for(condition, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"exited {process.returncode} first: {process.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture()
def album(tmp_path: Path) -> Path:
    """Eight 200x160 photos: each takes the retouch a fraction of a second, so a kill lands mid-run."""
    album = tmp_path / "in"
    album.mkdir()
    for i, photo in enumerate(sorted(rf.PHOTOS.glob("*.jpg")) * 2):
        Image.open(photo).resize((200, 160)).save(album / f"{i} {photo.name}", quality=92)
    return album


def photos_in(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*.jpg") if not p.name.startswith("."))


def hidden_temps(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob(".*") if p.is_file())


def check_finished(out: Path) -> dict[str, bytes]:
    """Every visible photo in OUT is whole and listed in scores.csv; their bytes."""
    scores = out / "scores.csv"
    rows = {row["path"] for row in csv.DictReader(scores.read_text(encoding="utf-8").splitlines())} \
        if scores.exists() else set()
    finished = {}
    for photo in photos_in(out):
        with Image.open(photo) as img:
            img.load()  # raises on a cut file
        assert photo.name in rows
        finished[photo.name] = photo.read_bytes()
    return finished


def test_retouch_killed_mid_run_leaves_whole_photos_and_a_rerun_does_the_rest(album: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = start("retouch", album, out, "--steps", "2", "--device", "cpu")
    wait_for(lambda: bool(photos_in(out)), process)
    kill(process)
    finished = check_finished(out)
    assert 1 <= len(finished) < 8
    stamps = {name: (out / name).stat().st_mtime_ns for name in finished}

    rerun = invoke("retouch", album, out, "--steps", "2", "--device", "cpu")
    assert rerun.exit_code == 0, rerun.output
    assert rerun.stdout.strip() == (f"{8 - len(finished)} photos retouched into {out}, "
                                    f"{len(finished)} already done, 0 failed")
    assert {name: (out / name).stat().st_mtime_ns for name in finished} == stamps  # not redone
    assert len(check_finished(out)) == 8 and not hidden_temps(out)


def test_retouch_killed_mid_write_leaves_no_partial_photo(album: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = start("retouch", album, out, "--steps", "0", "--device", "cpu", code=HALF_WRITE.format(patch=PATCH_PHOTO))
    line = process.stdout.readline().decode()
    assert line.startswith("HALF-WRITTEN"), process.stderr.read().decode()[-2000:]
    kill(process)
    (temp,) = hidden_temps(out)  # the half-written file, hidden, under a temporary name
    assert temp.name.startswith(".0 Bird3.jpg.") and temp.name.endswith(".tmp")
    assert photos_in(out) == []

    rerun = invoke("retouch", album, out, "--steps", "0", "--device", "cpu")
    assert rerun.exit_code == 0 and "8 photos retouched" in rerun.stdout, rerun.output
    assert len(check_finished(out)) == 8 and not hidden_temps(out)  # the rerun removed the leftover


@pytest.fixture()
def profile(album: Path, tmp_path: Path) -> tuple[Path, Path, bytes]:
    """A profile written by a finished run, and its answers."""
    prefs = tmp_path / "answers.jsonl"
    names = sorted(p.name for p in album.glob("*.jpg"))
    prefs.write_text("".join(f'{{"winner": "{a}", "loser": "{b}"}}\n' for a, b in itertools.pairwise(names)))
    out = tmp_path / "me.safetensors"
    result = invoke("personalize", album, "--prefs", prefs, "--out", out, "--iterations", "20", "--device", "cpu")
    assert result.exit_code == 0, result.output
    return prefs, out, out.read_bytes()


def test_personalize_killed_mid_write_keeps_the_previous_profile(album: Path,
                                                                 profile: tuple[Path, Path, bytes]) -> None:
    prefs, out, before = profile
    process = start("personalize", album, "--prefs", prefs, "--out", out, "--iterations", "20", "--seed", "1",
                    "--device", "cpu", code=HALF_WRITE.format(patch=PATCH_PROFILE))
    line = process.stdout.readline().decode()
    assert line.startswith("HALF-WRITTEN"), process.stderr.read().decode()[-2000:]
    kill(process)
    assert out.read_bytes() == before
    (temp,) = [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # hidden, never read
    assert temp.stat().st_size < len(before)
    assert invoke("score", rf.BIRD, "--profile", out, "--device", "cpu").exit_code == 0


def test_personalize_killed_mid_run_keeps_the_previous_profile(album: Path, profile: tuple[Path, Path, bytes]) -> None:
    prefs, out, before = profile
    process = start("personalize", album, "--prefs", prefs, "--out", out, "--iterations", "100000", "--seed", "1",
                    "--device", "cpu")
    seen = b""
    while b"personal stage" not in seen:  # training has started
        chunk = process.stderr.read1(4096)
        assert chunk, "exited before training"
        seen += chunk
    kill(process)
    assert out.read_bytes() == before
