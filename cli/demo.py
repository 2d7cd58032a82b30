"""``persaes demo``: the whole path on the bundled example album, offline."""

from __future__ import annotations

import time
from pathlib import Path

import click
from persaes.cli.common import Progress, device_option, steps_option, user_errors, warn

import persaes
from persaes.app.report import compare_folder
from persaes.core.backbones import BackboneError
from persaes.core.personalize import personalize
from persaes.core.scorer import load_scorer
from retouch.optimize import EditSettings

EXAMPLES = Path(persaes.__file__).resolve().parents[1] / "examples"


@click.command("demo")
@click.option("--out", default="persaes-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the profile, the retouched photos and the report.")
@click.option("--photos", default=6, show_default=True, type=click.IntRange(1), help="Photos to retouch.")
@steps_option
@device_option
@user_errors(ValueError, OSError, BackboneError, RuntimeError)
def demo_cmd(out: str, photos: int, steps: int, device: str) -> None:
    """Personalize → retouch → compare on the bundled example album.

    The album holds 24 Pixabay photos and 100 answers of a simulated user who likes bright,
    vivid photos (see examples/).

    \b
    Example:
      persaes demo --out persaes-demo && xdg-open persaes-demo/report/index.html
    """
    album, answers = EXAMPLES / "album", EXAMPLES / "answers.jsonl"
    if not album.is_dir() or not answers.is_file():
        raise click.ClickException(f"{EXAMPLES}: the example album is missing (install persaes from its source tree)")
    started = time.time()
    out_dir = Path(out)
    with Progress() as stages:
        report = personalize(album, answers, out_dir / "profile.safetensors", device=device, progress=stages.stage)
    click.echo(f"1/2 profile: {report.profile} ({report.answered} answers, {report.inferred} inferred pairs)")
    with Progress("retouching") as progress:
        rows, failed = compare_folder(album, out_dir / "report", load_scorer("generic", device=device),
                                      load_scorer(report.profile, device=device), settings=EditSettings(steps=steps),
                                      limit=photos, progress=progress, on_error=warn)
    click.echo(f"2/2 report of {len(rows)} photos (original | generic | personalized): "
               f"{out_dir / 'report' / 'index.html'}")
    click.echo(f"done in {time.time() - started:.0f} s")
