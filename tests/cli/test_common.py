"""The commands' shared pieces: the --ops option, warnings and progress."""

from __future__ import annotations

import re

import click
import persaes.cli.common as common
import pytest
from click.testing import CliRunner
from persaes.cli.common import QUIET, Progress, ops_option, warn

from retouch import OPS


@click.command()
@ops_option
def _show_ops(ops: tuple[str, ...]) -> None:
    click.echo(repr(ops))


@pytest.mark.parametrize("given, chosen", [((), OPS), (("--ops", "exposure, color"), ("exposure", "color"))])
def test_ops_option_gives_a_tuple_of_op_names(given: tuple[str, ...], chosen: tuple[str, ...]) -> None:
    result = CliRunner().invoke(_show_ops, list(given))
    assert result.exit_code == 0 and result.output == f"{chosen!r}\n"


@pytest.mark.parametrize("text", ["exposure,sharpen", ",", ""])
def test_ops_option_refuses_other_names(text: str) -> None:
    result = CliRunner().invoke(_show_ops, ["--ops", text])
    assert result.exit_code == 2 and "--ops" in result.stderr and "choose from" in result.stderr


@click.command()
@click.option("--count", default=3)
@click.option("--quiet", is_flag=True)
@click.pass_context
def _long_run(ctx: click.Context, count: int, quiet: bool) -> None:
    """A run of ``count`` photos with a warning after the second, and a stage."""
    ctx.meta[QUIET] = quiet
    with Progress("retouching") as progress:
        progress(0, count)
        for done in range(1, count + 1):
            progress(done, count)
            if done == 2:
                warn("b.jpg: empty file")
        progress.stage("personal stage", 0, 1)
        progress.stage("personal stage", 1, 1)
    click.echo("done")


def test_off_a_terminal_each_step_is_one_plain_line() -> None:
    result = CliRunner().invoke(_long_run, [])  # CliRunner's stderr is no terminal, as a log's
    assert result.exit_code == 0 and "\r" not in result.stderr
    assert [re.sub(r"\(\d+ s\)$", "(N s)", line) for line in result.stderr.splitlines()] == [
        "retouching: 0/3 photos (N s)", "retouching: 1/3 photos (N s)", "retouching: 2/3 photos (N s)",
        "Warning: b.jpg: empty file", "retouching: 3/3 photos (N s)",
        "personal stage: 0/1 (N s)", "personal stage: 1/1 (N s)"]


def test_quiet_shows_no_progress_but_warnings() -> None:
    result = CliRunner().invoke(_long_run, ["--quiet"])
    assert result.exit_code == 0 and result.stderr == "Warning: b.jpg: empty file\n" and result.stdout == "done\n"


def test_on_a_terminal_any_count_is_a_live_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "stderr_is_terminal", lambda: True)
    result = CliRunner().invoke(_long_run, [])
    assert result.exit_code == 0
    # a bar drawn over itself (redraws at most every REDRAW_S), whatever the count
    bars = re.findall(r"\rretouching \[([#-]{24})\] (\d)/3 photos \(0 s\)", result.stderr)
    assert bars[0] == ("-" * 24, "0") and bars[-1] == ("#" * 24, "3")
    # the warning takes the bar's place, and the bar is drawn again below it
    before, after = result.stderr.split("\rWarning: b.jpg: empty file\n")
    assert re.search(r"\r *$", before) and after.startswith("\rretouching [################--------] 2/3 photos")
    # each run ends its line
    assert [line.split("\r")[-1].split(" [")[0] for line in after.split("\n")] == ["retouching", "personal stage", ""]


def test_many_steps_off_a_terminal_print_a_line_per_percent(capsys: pytest.CaptureFixture[str]) -> None:
    with Progress("training", "steps", terminal=False) as progress:
        for done in range(1001):
            progress(done, 1000)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 101 and lines[0].startswith("training: 0/1000 steps (")
    assert lines[-1].startswith("training: 1000/1000 steps (")


def test_progress_out_of_range_is_refused() -> None:
    with Progress("scoring") as progress, pytest.raises(ValueError, match="done <= total"):
        progress(3, 2)
