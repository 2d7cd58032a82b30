"""The ``persaes`` click group."""

from __future__ import annotations

import click
from persaes.cli.common import QUIET
from persaes.cli.compare import compare_cmd
from persaes.cli.demo import demo_cmd
from persaes.cli.generic import train_generic_cmd
from persaes.cli.personalize import personalize_cmd
from persaes.cli.prefs import prefs
from persaes.cli.retouch import retouch_cmd, train_retoucher_cmd
from persaes.cli.score import score


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="persaes")
@click.option("-q", "--quiet", is_flag=True, help="Show no progress (errors and warnings still print).")
@click.pass_context
def main(ctx: click.Context, quiet: bool) -> None:
    """Learn one person's taste in photos from pairwise answers, and retouch photos toward it.

    Long commands show their progress on stderr: a live bar on a terminal, one plain line per
    step elsewhere (a log, a pipe).

    \b
    Typical path:
      persaes prefs collect ALBUM --out answers.jsonl
      persaes personalize ALBUM --prefs answers.jsonl --out me.safetensors
      persaes retouch ALBUM OUT --profile me.safetensors
    """
    ctx.meta[QUIET] = quiet


main.add_command(score)
main.add_command(personalize_cmd)
main.add_command(retouch_cmd)
main.add_command(train_retoucher_cmd)
main.add_command(prefs)
main.add_command(compare_cmd)
main.add_command(demo_cmd)
main.add_command(train_generic_cmd)
