"""The ``persaes`` click group."""

from __future__ import annotations

import click
from persaes.cli.compare import compare_cmd
from persaes.cli.demo import demo_cmd
from persaes.cli.personalize import personalize_cmd
from persaes.cli.prefs import prefs
from persaes.cli.retouch import retouch_cmd, train_retoucher_cmd
from persaes.cli.score import score


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="persaes")
def main() -> None:
    """Learn one person's taste in photos from pairwise answers, and retouch photos toward it.

    \b
    Typical path:
      persaes prefs collect ALBUM --out answers.jsonl
      persaes personalize ALBUM --prefs answers.jsonl --out me.safetensors
      persaes retouch ALBUM OUT --profile me.safetensors
    """


main.add_command(score)
main.add_command(personalize_cmd)
main.add_command(retouch_cmd)
main.add_command(train_retoucher_cmd)
main.add_command(prefs)
main.add_command(compare_cmd)
main.add_command(demo_cmd)
