"""Score files: JSON and CSV round trips (odd names too), partial files of killed runs, files that are not ours."""

from __future__ import annotations

from pathlib import Path

import pytest

from persaes.io.scores import (
    append_partial,
    check_score_file,
    done_scores,
    partial_path,
    read_scores,
    remove_partials,
    write_scores,
)

ROWS = [("album/é, \"quoted\".jpg", 7.12345), ("album/\udcff.jpg", 4.0), ("b.jpg", 9.9996)]


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_round_trip_in_order_with_odd_names(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"scores{suffix}"
    write_scores(out, ROWS)
    assert list(read_scores(out).items()) == [(ROWS[0][0], 7.123), (ROWS[1][0], 4.0), (ROWS[2][0], 10.0)]
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left


def test_partials_of_every_rank_are_read_and_removed(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    write_scores(out, [("a.jpg", 5.0)])
    append_partial(out, 0, [("b.jpg", 6.0)])
    append_partial(out, 7, [("c.jpg", 7.0), ("a.jpg", 1.0)])
    with open(partial_path(out, 7), "a", encoding="utf-8") as handle:
        handle.write('{"path": "d.jpg", "sco')  # cut off by a kill
    append_partial(out, 7, [("e.jpg", 8.0)])  # starts on its own line
    assert done_scores(out) == {"a.jpg": 1.0, "b.jpg": 6.0, "c.jpg": 7.0, "e.jpg": 8.0}
    remove_partials(out, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.json.part7.jsonl"]
    remove_partials(out)
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


@pytest.mark.parametrize(("name", "text"), [
    ("s.json", "not json"), ("s.json", '[{"path": "a.jpg", "score": "high"}]'), ("s.json", '[{"path": 3, "score": 1}]'),
    ("s.json", '{"a.jpg": 1}'), ("s.csv", "file,value\na.jpg,1\n"), ("s.csv", "path,score\na.jpg,nan\n"),
])
def test_a_file_persaes_did_not_write_is_refused(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=f"{name}: not a persaes score file"):
        done_scores(tmp_path / name)


def test_check_score_file(tmp_path: Path) -> None:
    assert check_score_file(tmp_path / "x.CSV") == tmp_path / "x.CSV"
    assert read_scores(tmp_path / "missing.json") == {}
    with pytest.raises(ValueError, match="ends in .json or .csv"):
        check_score_file(tmp_path / "x.txt")
    with pytest.raises(ValueError, match="does not exist"):
        check_score_file(tmp_path / "no" / "x.json")
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        check_score_file(tmp_path / "dir.json")
