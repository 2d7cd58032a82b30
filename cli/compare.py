"""``persaes compare``: generic vs personalized retouching, side by side."""

from __future__ import annotations

import sys

import click
from persaes.cli.common import Progress, device_option, fidelity_option, ops_option, steps_option, user_errors, warn

from persaes.app.report import compare_folder
from persaes.core.backbones import BackboneError
from persaes.core.scorer import load_scorer
from retouch.optimize import EditSettings


@click.command("compare")
@click.argument("in_dir", metavar="IN", type=click.Path(file_okay=False))
@click.option("--profile", required=True, help="Personal profile (.safetensors).")
@click.option("--out", "report", required=True, type=click.Path(file_okay=False), help="Report folder.")
@ops_option
@steps_option
@fidelity_option
@click.option("--limit", default=None, type=click.IntRange(1), help="Only the first N photos.")
@device_option
@user_errors(ValueError, OSError, BackboneError, RuntimeError)
def compare_cmd(in_dir: str, profile: str, report: str, ops: tuple[str, ...], steps: int, fidelity: float,
                limit: int | None, device: str) -> None:
    """Retouch IN with the generic model and with a profile; write REPORT/index.html.

    Each row shows original | generic | personalized with both scores; REPORT/contact_sheet.png
    holds the same. Works offline.

    \b
    Example:
      persaes compare ~/Pictures/album --profile me.safetensors --out report
    """
    generic = load_scorer("generic", device=device)
    personal = load_scorer(profile, device=device)
    with Progress("retouching") as progress:
        rows, failed = compare_folder(in_dir, report, generic, personal, ops,
                                      EditSettings(steps=steps, fidelity=fidelity), limit, progress=progress,
                                      on_error=warn)
    click.echo(f"report of {len(rows)} photos: {report}/index.html")
    if failed:
        sys.exit(1)
