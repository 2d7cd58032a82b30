"""Atomic writes: the target is either old or complete new content, never a temp left over."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from persaes.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text, remove_stale_temp_files


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_text_and_bytes_replace_content(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    atomic_write_text(target, "old\n")
    assert target.read_text() == "old\n"
    atomic_write_bytes(target, b"\x00new")
    assert target.read_bytes() == b"\x00new"
    assert _listing(tmp_path) == ["a.json"]


def test_failure_inside_atomic_path_keeps_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old content")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path
            tmp.write_bytes(b"half written")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old content"
    assert _listing(tmp_path) == ["model.safetensors"]


def test_success_renames_temp_over_target(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"complete")
        assert not target.exists()
    assert target.read_bytes() == b"complete"
    assert _listing(tmp_path) == ["x.bin"]


def test_keeps_mode_of_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "prefs.jsonl"
    target.write_text("x")
    os.chmod(target, 0o640)
    atomic_write_text(target, "y")
    assert target.stat().st_mode & 0o777 == 0o640


def test_missing_folder_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write_text(tmp_path / "nope" / "a.txt", "x")


def test_stale_temp_files_of_killed_writes_are_recognised(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    keep = [tmp_path / "photo.jpg", tmp_path / ".hidden.tmp", tmp_path / ".photo.jpg.notrandom.tmp"]
    for path in keep:
        path.write_bytes(b"x")
    earlier = tmp_path / "sub" / ".scores.csv.0123456789ab.tmp"  # the name an earlier version gave a temp file
    earlier.write_bytes(b"half")
    with pytest.raises(FileNotFoundError, match="the writer removed its temporary file"):
        with atomic_path(tmp_path / "sub" / "a.jpg") as tmp:
            tmp.write_bytes(b"half")
            assert tmp.name.startswith(".a.jpg.") and tmp.name.endswith(".tmp")
            removed = remove_stale_temp_files(tmp_path)  # what a rerun does after a kill at this point
    assert sorted(removed) == sorted([tmp, earlier])
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted(keep)
