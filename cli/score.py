"""``persaes score``: aesthetic scores of image files and folders."""

from __future__ import annotations

import json
import sys

import click
from persaes.cli.common import Progress, device_option, echo, printable, user_errors, warn

from persaes.core.backbones import BackboneError
from persaes.core.scorer import format_score, load_scorer
from persaes.io.checkpoint import CheckpointError
from persaes.io.images import iter_images


@click.command("score")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--profile", default="generic", show_default=True, help="Profile or weights file, or a shipped name.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {path, score} objects.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 1024))
@device_option
@user_errors(CheckpointError, BackboneError, RuntimeError)
def score(paths: tuple[str, ...], profile: str, as_json: bool, batch_size: int, device: str) -> None:
    """Score image files and folders (recursively), one line per image.

    \b
    Example:
      persaes score ~/Pictures/album --profile me.safetensors --json > scores.json
    """
    scorer = load_scorer(profile, device=device)
    files = list(iter_images(paths))
    results, failed = [], 0
    with Progress("scoring") as progress:
        progress(0, len(files))
        for done, (path, value, error) in enumerate(scorer.iter_scores(files, batch_size), 1):
            progress(done, len(files))
            if error is not None:
                failed += 1
                warn(error)
                continue
            results.append({"path": str(path), "score": float(format_score(value))})
            if not as_json:
                echo(printable(f"{format_score(value)}\t{path}"))
    if as_json:
        text = json.dumps(results, indent=1, ensure_ascii=False)
        click.echo(text if printable(text) == text else json.dumps(results, indent=1))  # JSON's own escapes
    if failed:
        warn(f"{failed} of {len(files)} files could not be scored")
        sys.exit(1)
