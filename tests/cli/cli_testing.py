"""Shared helpers of the CLI tests: run a command in-process, check a one-line error, make an answered album."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner, Result
from persaes.cli.main import main


def run(*args: str) -> Result:
    """``persaes ARGS...`` run in-process (exceptions caught, stdout and stderr apart)."""
    return CliRunner().invoke(main, list(args))


def one_line_error(result: Result, *needles: str) -> None:
    """Assert a failed command that printed one ``Error: …`` line holding every needle, and no traceback."""
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and all(n in lines[0] for n in needles), result.stderr


def chained_album(photos: list[Path], root: Path) -> tuple[Path, Path]:
    """``root/album`` holding ``photos`` and ``root/answers.jsonl`` ranking them in order (each beats the next)."""
    album = root / "album"
    album.mkdir()
    for p in photos:
        shutil.copy(p, album / p.name)
    names = [p.name for p in photos]
    prefs = root / "answers.jsonl"
    prefs.write_text("".join(f'{{"winner": "{w}", "loser": "{lo}"}}\n' for w, lo in zip(names, names[1:])))
    return album, prefs
