"""The commands' shared pieces: the --ops option and progress bars."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner
from persaes.cli.common import SHORT_RUN, ProgressBar, ops_option

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


def test_each_run_gets_its_own_bar_and_short_runs_none(capsys: pytest.CaptureFixture[str]) -> None:
    with ProgressBar("retouching") as progress:
        for total in (SHORT_RUN + 1, SHORT_RUN, SHORT_RUN + 3):
            for done in range(total + 1):
                progress(done, total)
    # stderr is no terminal here: click writes a bar's label once instead of drawing it
    assert capsys.readouterr().err.splitlines() == ["retouching", "retouching"]


def test_progress_out_of_range_is_refused() -> None:
    with ProgressBar("scoring") as progress, pytest.raises(ValueError, match="done <= total"):
        progress(3, 2)
