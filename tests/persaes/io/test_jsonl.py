"""Durable JSON Lines appends: one record a line, a cut last line ended first, odd names kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from persaes.io.jsonl import append_json_line, json_line


def test_appends_one_line_per_record(tmp_path: Path) -> None:
    path = tmp_path / "edits.jsonl"
    records = [{"variant": "_variants/a__v1.jpg", "edit": {"gain": 0.1}}, {"name": "été 東京"}]
    for record in records:
        append_json_line(path, record)
    data = path.read_bytes()
    assert data.endswith(b"\n") and data.count(b"\n") == 2
    assert [json.loads(line) for line in data.decode("utf-8").splitlines()] == records
    assert "été 東京" in data.decode("utf-8")  # other scripts stay readable


def test_a_cut_last_line_is_ended_before_the_next_record(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    append_json_line(path, {"winner": "a", "loser": "b"})
    with open(path, "ab") as handle:
        handle.write(b'{"winner": "c", "lo')  # a crash mid-write
    append_json_line(path, {"winner": "d", "loser": "e"})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == ['{"winner": "a", "loser": "b"}', '{"winner": "c", "lo', '{"winner": "d", "loser": "e"}']


def test_names_that_are_not_utf8_read_back_the_same(tmp_path: Path) -> None:
    name = b"IMG_\xff.jpg".decode("utf-8", "surrogateescape")
    path = tmp_path / "answers.jsonl"
    append_json_line(path, {"winner": name})
    assert json.loads(path.read_bytes().decode("utf-8")) == {"winner": name}
    assert json_line({"winner": name}) == '{"winner": "IMG_\\udcff.jpg"}'


def test_only_dicts_are_appended(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    with pytest.raises(ValueError, match="must hold a dict, got list"):
        append_json_line(path, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        append_json_line(path, {"when": object()})
    assert not path.exists()
