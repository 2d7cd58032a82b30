"""Reproduce ``weights/generic.safetensors``: the default generic head with a quality prior.

    python weights/recipes/make_generic.py --data ../shared/data/oasis \\
        --ratings ../shared/data/oasis/ratings_dev.csv --out weights/generic.safetensors \\
        --state out/make_generic.state.safetensors

Trains the default backbone's head (heads only, on cached features) on two objectives:

* EMD against the rated references (every OASIS photo with the histogram of all
  participants' ratings in ``--ratings``), and
* a quality prior: a ranking hinge loss that prefers each training Pixabay photo to its
  under-/over-exposed, colour-cast/desaturated and hazed versions (the seeded degradations
  of ``shared/docs/protocol.md`` §2) and to its over-processed versions (over-dehazed,
  over-saturated, over-contrasted, over-sharpened, brightened, darkened, recoloured, desaturated;
  mild and strong), so that the score has its optimum at the natural photo.

``--recipe`` names a :data:`persaes.core.train.GENERIC_RECIPES` entry: ``statistics`` (the
default) reproduces the shipped file: a quality branch on content-free image statistics, ten
epochs; ``hardened`` adds two rounds of hardening against the retouching optimiser; ``thumbnail``
adds a thumbnail CNN to the quality branch and trains 40 epochs, which learns the training photos
themselves and ranks held-out photos' versions worse (benchmarks/README.md, §2)::

    python weights/recipes/make_generic.py ... --recipe thumbnail

``--epochs``, ``--quality-width``, ``--draws``, ``--harden-rounds`` and ``--harden-photos``
override one field of the recipe. A hardening round fits the generic retouch (all ops, as
``persaes retouch`` fitted it when the ``hardened`` file was made: the recipe's ``harden_edit``) of seeded
training Pixabay photos against the current weights;
each edit that the fit scored more than the recipe's ``harden_gain`` above its original becomes
a pair (the untouched original beats it), and the head trains more epochs on all pairs. Each
round prints the mean score gain the optimiser found on those clean photos, the number
hardening drives down.

The training itself is :func:`persaes.core.generic_weights.train_generic_weights` (also
``persaes train-generic``); this script chooses OASIS's data for it. The job is resumable:
features of every version and of every fitted edit are cached as they are computed, and with
``--state`` the training state is written after every epoch (one file per round beside it);
the same command run again after an interruption continues from there
and writes the same weights. The held-out Pixabay photos of the protocol
(:func:`persaes.eval.protocol.heldout_photos`) are never used.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

from persaes.core.generic_weights import VERSIONS, edit_features, make_version, train_generic_weights, version_features
from persaes.core.train import GENERIC_RECIPES, SHIPPED_RECIPE, generic_recipe
from persaes.eval.protocol import heldout_photos
from persaes.io.references import read_ratings_csv

__all__ = ["VERSIONS", "edit_features", "main", "make_version", "pixabay_photos", "version_features"]


def pixabay_photos(images_csv: Path) -> set[str]:
    """Names of the Pixabay photos of an OASIS-format image table."""
    with open(images_csv, newline="", encoding="utf-8-sig") as handle:
        return {row["image"] for row in csv.DictReader(handle) if row["source"] == "Pixabay"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--ratings", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "generic.safetensors")
    ap.add_argument("--state", type=Path, default=None,
                    help="training state file, written after every epoch; an existing one of the same run is resumed")
    ap.add_argument("--recipe", choices=sorted(GENERIC_RECIPES), default=SHIPPED_RECIPE)
    ap.add_argument("--draws", type=int, default=None, help="seeded versions per photo and kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--quality-width", type=int, default=None,
                    help="channels of the quality branch's thumbnail CNN (0: statistics only)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--harden-rounds", type=int, default=None, help="rounds of hardening against the optimiser")
    ap.add_argument("--harden-photos", type=int, default=None, help="training photos whose edits each round fits")
    args = ap.parse_args(argv)
    recipe = generic_recipe(args.recipe, args.epochs, quality_width=args.quality_width, draws=args.draws,
                            harden_rounds=args.harden_rounds, harden_photos=args.harden_photos)
    started = time.time()

    images_csv = args.data / "images.csv"
    held = set(heldout_photos(images_csv))
    refs = read_ratings_csv(args.ratings, images_csv)
    refs = refs.subset([i for i, name in enumerate(refs.ids) if name not in held])
    pixabay = pixabay_photos(images_csv)
    prior = [path for name, path in zip(refs.ids, refs.paths) if name in pixabay]

    def progress(stage: str, done: int, total: int) -> None:
        if stage in ("version features", "fitted edits") or stage.endswith(" edits"):
            if done < total and done % 25 == 0:
                print(f"{stage}: {done}/{total}", file=sys.stderr, flush=True)

    def report(epoch: int, loss: float) -> None:
        print(f"epoch {epoch}: loss {loss:.4f} ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = train_generic_weights(
        refs, args.out, recipe, prior, seed=args.seed, cache=args.cache, state=args.state, device="cpu",
        on_epoch=report, progress=progress, log=log, recipe_name=args.recipe,
        description=f"{args.ratings.name} over {images_csv.name} (all participants)",
        prior_description="Pixabay photos",
        trained_on={"held_out": f"{len(held)} Pixabay photos (persaes.eval.protocol.heldout_photos)"},
    )
    problems = [p for p in result["problems"] if p not in refs.problems]
    if problems:
        print("\n".join(problems), file=sys.stderr)
    print(f"wrote {args.out} in {time.time() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
