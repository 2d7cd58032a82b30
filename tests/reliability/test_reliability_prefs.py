"""Damaged and odd preference files through ``persaes personalize``: every problem is skipped and listed.

The reading rules themselves are unit-tested in tests/persaes/io/test_preferences.py (format, undo, cut
last line, transitivity by hypothesis); here the whole command runs on one file holding every case.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import reliability_files as rf
from click.testing import CliRunner, Result
from persaes.cli.main import main
from PIL import Image
from safetensors import safe_open


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture()
def album(tmp_path: Path) -> Path:
    album = tmp_path / "album"
    album.mkdir()
    for name, photo in zip("ABCD", sorted(rf.PHOTOS.glob("*.jpg"))):
        Image.open(photo).resize((120, 96)).save(album / f"{name}.jpg")
    return album


def test_every_problem_is_skipped_and_listed(album: Path, tmp_path: Path) -> None:
    prefs = tmp_path / "answers.jsonl"
    lines = [
        b'{"undo": true}',                                          # 1 nothing to take back yet
        b'{"winner": "A.jpg", "loser": "B.jpg", "t": 1.5}',         # 2
        b'{"winner": "A.jpg", "loser": "B.jpg"}',                   # 3 duplicate of 2
        b'{"winner": "B.jpg", "loser": "C.jpg"}',                   # 4
        b'{"winner": "C.jpg", "loser": "D.jpg"}',                   # 5
        b'{"winner": "D.jpg", "loser": "C.jpg"}',                   # 6 contradicts 5
        b'{"winner": "gone.jpg", "loser": "A.jpg"}',                # 7 a photo deleted since
        b'{"winner": "../outside.jpg", "loser": "A.jpg"}',          # 8 outside the album
        b"not json {{{",                                            # 9
        b'{"winner": "A.jpg"}',                                     # 10 missing key
        b"[1, 2]",                                                  # 11 not an object
        b'{"winner": "A.jpg", "loser": "A.jpg"}',                   # 12 same photo twice
        b'{"winner": "B.jpg", "loser": "D.jpg", "tie": true}',      # 13 a tie: trains nothing, no problem
        json.dumps({"winner": str(album / "A.jpg"), "loser": "D.jpg"}).encode(),  # 14 absolute, in the album
        b'{"winner": "D.jpg", "loser": "A.jpg"}',                   # 15 taken back by 16
        b'{"undo": true}',                                          # 16
        b'{"winner": "caf\xe9.jpg", "loser": "A.jpg"}',             # 17 not UTF-8
        b'',                                                        # 18 blank
        b'{"winner": "B.jpg", "lo',                                 # 19 cut off by a crash
    ]
    prefs.write_bytes(b"\n".join(lines))
    out = tmp_path / "me.safetensors"
    result = invoke("personalize", album, "--prefs", prefs, "--out", out, "--iterations", "5", "--device", "cpu")

    assert result.exit_code == 1 and "Traceback" not in result.output
    # answered: A>B, B>C, A>D (C/D dropped as contradictory); inferred: A>C
    assert f"profile written to {out} (3 answers, 1 inferred pairs, 4 photos)" in result.stdout
    problems = [line.removeprefix("Warning: ") for line in result.stderr.splitlines() if line.startswith("Warning: ")]
    expected = [
        f"{prefs}:1: undo with no answer left to take back; ignored",
        f"{prefs}:9: not valid JSON (JSONDecodeError: ",
        f"{prefs}:10: missing key(s) loser; skipped",
        f"{prefs}:11: expected a JSON object, got list; skipped",
        f"{prefs}:12: Answer: winner and loser are the same image 'A.jpg'; skipped",
        f"{prefs}:17: not valid JSON (UnicodeDecodeError: ",
        f"{prefs}:19: incomplete last line (cut off mid-write?); skipped",
        "image 'gone.jpg' (in 1 answer(s)) is not in the album ",
        "image '../outside.jpg' (in 1 answer(s)) is not in the album ",
        "1 repeated answer(s) (same winner and loser again) counted once",
        f"{prefs}: contradictory answers C.jpg > D.jpg and D.jpg > C.jpg, both dropped",
        "11 problems (listed above) were skipped",
    ]
    assert len(problems) == len(expected), problems
    for line, start in zip(problems, expected):
        assert line.startswith(start), (line, start)
    with safe_open(str(out), "pt") as handle:
        trained_on = json.loads(handle.metadata()["persaes"])["trained_on"]
    assert (trained_on["answers"], trained_on["inferred_pairs"], trained_on["contradictions"]) == (3, 1, 1)


@pytest.mark.parametrize("content", [
    b"",
    b'[{"winner": "A.jpg", "loser": "B.jpg"}, {"winner": "B.jpg", "loser": "C.jpg"}]\n',  # JSON, not JSON Lines
    b'{"winner": "A.jpg", "loser": "B.jpg"}\n{"winner": "B.jpg", "loser": "A.jpg"}\n',  # only a contradiction
    b'{"winner": "x.jpg", "loser": "y.jpg"}\n',  # about another album
], ids=["empty", "json-array", "only-contradiction", "other-album"])
def test_no_usable_answer_is_one_line_and_writes_nothing(album: Path, tmp_path: Path, content: bytes,
                                                        request: pytest.FixtureRequest) -> None:
    prefs = tmp_path / "answers.jsonl"
    prefs.write_bytes(content)
    out = tmp_path / "me.safetensors"
    result = invoke("personalize", album, "--prefs", prefs, "--out", out, "--device", "cpu")
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {prefs}: no usable answer about photos of {album}")
    first = {"empty": None, "json-array": "expected a JSON object", "only-contradiction": "contradictory answers",
             "other-album": "'x.jpg' (in 1 answer(s)) is not in the album"}[request.node.callspec.id]
    assert (first is None and lines[0].endswith(str(album))) or (first is not None and "the first: " in lines[0]
                                                                  and first in lines[0])
    assert not out.exists()

