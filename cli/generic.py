"""``persaes train-generic``: rated references (+ a quality prior) → generic weights."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from persaes.cli.common import Progress, device_option, echo, is_quiet, printable, user_errors, warn

from persaes.core import distributed
from persaes.core.backbones import BackboneError
from persaes.core.generic_weights import train_generic_weights
from persaes.core.train import GENERIC_RECIPES, SHIPPED_RECIPE, generic_recipe
from persaes.io.images import is_image_name, iter_images
from persaes.io.references import load_references


def prior_files(source: str) -> list[Path]:
    """The prior photos named by ``--prior-photos``.

    A folder's images (recursively, sorted), or a text file listing one photo a line (relative to the
    list's folder; blank lines and ``#`` comments skipped).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: it names no photo.
    """
    path = Path(source)
    if path.is_dir():
        files = list(iter_images([path]))
    elif path.is_file():
        if is_image_name(path):
            raise ValueError(f"{path}: --prior-photos takes a folder or a text file listing photos, not a photo")
        with open(path, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle]
        files = [path.parent / line for line in lines if line and not line.startswith("#")]
    else:
        raise FileNotFoundError(f"{path}: no such folder or photo list")
    if not files:
        raise ValueError(f"{path}: no photo found for the quality prior")
    return files


@click.command("train-generic")
@click.argument("references")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Weights file to write (.safetensors).")
@click.option("--recipe", "recipe_name", default=SHIPPED_RECIPE, show_default=True,
              type=click.Choice(sorted(GENERIC_RECIPES)),
              help="'statistics' makes weights like the shipped generic ones: a quality branch on image statistics; "
              "'hardened' adds two rounds of hardening against the retouching optimiser (needs --prior-photos, or "
              "--harden-rounds 0); 'thumbnail' adds a thumbnail CNN to the branch and trains 40 epochs.")
@click.option("--prior-photos", default=None,
              help="The quality prior: a folder of photos (or a text file listing them, one a line), each ranked "
              "above its seeded degraded and over-processed versions. Default: no prior.")
@click.option("--epochs", default=None, type=click.IntRange(1), help="Epochs of the generic stage (recipe's default).")
@click.option("--quality-width", default=None, type=click.IntRange(0),
              help="Channels of the quality branch's thumbnail CNN; 0: image statistics only (recipe's default).")
@click.option("--draws", default=None, type=click.IntRange(1),
              help="Seeded versions per prior photo and kind (recipe's default).")
@click.option("--harden-rounds", default=None, type=click.IntRange(0),
              help="Rounds of hardening against the retouching optimiser (recipe's default).")
@click.option("--harden-photos", default=None, type=click.IntRange(1),
              help="Prior photos whose retouch each hardening round fits (recipe's default).")
@click.option("--state", default=None, type=click.Path(dir_okay=False),
              help="Training state file, written after every epoch; the same command run again resumes from it.")
@click.option("--seed", default=0, show_default=True, type=int)
@device_option
@user_errors(ValueError, OSError, BackboneError, RuntimeError)
def train_generic_cmd(references: str, out: str, recipe_name: str, prior_photos: str | None, epochs: int | None,
                      quality_width: int | None, draws: int | None, harden_rounds: int | None,
                      harden_photos: int | None, state: str | None, seed: int, device: str) -> None:
    """Train generic weights from rated references, with the shipped weights' objective.

    REFERENCES is a reference spec: ratings:RATINGS.csv:IMAGES.csv[:LO-HI], ava:AVA.txt:IMAGE_DIR or
    csv:FILE.csv. The head learns the references' score histograms (EMD) and, with --prior-photos,
    a quality prior: each prior photo scores above its under-/over-exposed, colour-cast, hazed and
    over-processed versions. Features are cached, and with --state the command resumes after an
    interruption and writes the same weights. The file is a normal weights file: use it with
    persaes score --profile, persaes personalize --start or load_scorer. Photos that cannot be read
    are skipped, each named in a warning (the exit status is then 1); an existing --out is replaced.

    The same command runs on several processes or GPUs under torchrun: each process extracts its share
    of the features into the cache, the head trains data-parallel on the same batches as in one process,
    and the first process alone writes --out, reports and shows progress.

    \b
    Example:
      persaes train-generic ratings:oasis/ratings.csv:oasis/images.csv --prior-photos clean_photos/ \\
          --out my_generic.safetensors --state train.state.safetensors
      torchrun --nproc-per-node 8 --no-python persaes train-generic ava:AVA.txt:images --out ava.safetensors
    """
    logging.getLogger("persaes").setLevel(logging.ERROR)
    recipe = generic_recipe(recipe_name, epochs, quality_width=quality_width, draws=draws,
                            harden_rounds=harden_rounds, harden_photos=harden_photos)
    refs = load_references(references)
    if not len(refs):
        first = f"; the first problem: {refs.problems[0]}" if refs.problems else ""
        raise ValueError(f"{references}: no usable reference{first}")
    prior = prior_files(prior_photos) if prior_photos is not None else []
    main = distributed.world().is_main  # under torchrun, the other processes train silently
    try:
        with Progress(quiet=None if main else True) as progress:
            result = train_generic_weights(refs, out, recipe, prior, seed=seed, state=state, device=device,
                                           progress=progress.stage, log=log_line if main else None,
                                           description=references, recipe_name=recipe_name)
    finally:
        distributed.shutdown()
    if not main:
        sys.exit(1 if result["problems"] else 0)
    for problem in result["problems"]:
        warn(problem)
    prior_note = f", {result['prior_photos']} prior photos" if result["prior_photos"] else ""
    click.echo(printable(f"weights written to {result['out']} ({result['references']} references{prior_note})"))
    if result["problems"]:
        many = len(result["problems"]) > 1
        warn(f"{len(result['problems'])} problem{'s' if many else ''} (listed above) {'were' if many else 'was'} "
             "skipped")
    sys.exit(1 if result["problems"] else 0)


def log_line(line: str) -> None:
    """A line of the training's log on stderr, not with ``persaes --quiet`` (see :func:`echo`)."""
    if not is_quiet():
        echo(line, err=True)
