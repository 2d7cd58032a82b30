"""``persaes personalize``: album + answers → a personal profile."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace

import click
from persaes.cli.common import Progress, device_option, printable, user_errors, warn

from persaes.core.backbones import BackboneError
from persaes.core.personalize import MIN_REFERENCES, personalize
from persaes.core.train import PERSONAL_PRESETS, parse_iterations


@click.command("personalize")
@click.argument("album", type=click.Path(file_okay=False, path_type=str))
@click.option("--prefs", required=True, type=click.Path(dir_okay=False), help="Preference answers (JSON Lines).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Profile to write (.safetensors).")
@click.option("--references", default=None,
              help="Rated references, e.g. ratings:RATINGS.csv:IMAGES.csv or ava:AVA.txt:DIR; "
              "runs the paper's generic stage first. Default: start from the shipped generic weights.")
@click.option("--start", default="generic", show_default=True,
              help="Weights to start from when no --references are given: a shipped name or a weights file "
              "(e.g. one persaes train-generic wrote).")
@click.option("--k", default=50, show_default=True, type=click.IntRange(1), help="Nearest references per album photo.")
@click.option("--min-references", default=MIN_REFERENCES, show_default=True, type=click.IntRange(0),
              help="K grows until the generic stage has at least this many references; 0 keeps the paper's hard K.")
@click.option("--personal", "preset", default="taste", show_default=True, type=click.Choice(tuple(PERSONAL_PRESETS)),
              help="The personal stage: 'taste' fits a taste part whose strength the answers choose "
              "(by their evidence); 'paper' fine-tunes the head with the hinge loss.")
@click.option("--iterations", default=None,
              help="Head fine-tuning iterations before the taste part (capped at the preset's passes over the "
              "pairs), or 'auto' (held-out answers decide); overrides only this field of the preset.")
@click.option("--finetune-backbone", is_flag=True,
              help="Fine-tune the backbone too (the paper's full fine-tune; meant for a GPU).")
@click.option("--seed", default=0, show_default=True, type=int)
@device_option
@user_errors(ValueError, OSError, BackboneError, RuntimeError)
def personalize_cmd(album: str, prefs: str, out: str, references: str | None, start: str, k: int,
                    min_references: int, preset: str, iterations: str | None, finetune_backbone: bool, seed: int,
                    device: str) -> None:
    """Learn a personal profile from an album and preference answers.

    Album photos that cannot be read (empty, truncated, not an image) and unusable answers
    are skipped, each named in a warning on stderr (such photos are left out of the summary's
    photo count); the profile is still written, and the exit status is then 1 (as with score
    and retouch).

    \b
    Example:
      persaes personalize ~/Pictures/album --prefs answers.jsonl --out me.safetensors
    """
    logging.getLogger("persaes").setLevel(logging.ERROR)
    personal = PERSONAL_PRESETS[preset]
    if iterations is not None:
        personal = replace(personal, iterations=parse_iterations(iterations))
    with Progress() as progress:
        report = personalize(album, prefs, out, references=references, k=k,
                             min_references=min_references, device=device, seed=seed,
                             personal=personal, finetune_backbone=finetune_backbone, start=start,
                             progress=progress.stage)
    for problem in report.problems:
        warn(problem)
    reference_note = f", {report.references} references" if report.references else ""
    click.echo(printable(f"profile written to {report.profile} ({report.answered} answers, {report.inferred} inferred "
                         f"pairs, {report.photos} photos{reference_note})"))
    if report.problems:
        many = len(report.problems) > 1
        warn(f"{len(report.problems)} problem{'s' if many else ''} (listed above) {'were' if many else 'was'} skipped")
    sys.exit(1 if report.problems else 0)
