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
  over-saturated, over-contrasted, over-sharpened, brightened, darkened, recoloured; mild and
  strong), so that the score has its optimum at the natural photo.

``--recipe`` names a :data:`persaes.core.train.GENERIC_RECIPES` entry: ``shipped`` (the
default) reproduces the shipped file; ``hardened`` is the statistics-only branch with two
rounds of hardening against the retouching optimiser, which ranks held-out photos' versions
better and retouches clean photos more faithfully, but personalizes worse (benchmarks/README.md,
§2)::

    python weights/recipes/make_generic.py ... --recipe hardened

``--epochs``, ``--quality-width``, ``--draws``, ``--harden-rounds`` and ``--harden-photos``
override one field of the recipe. A hardening round fits the generic retouch (all ops, as
``persaes retouch`` fits it) of seeded training Pixabay photos against the current weights;
each edit that the fit scored more than the recipe's ``harden_gain`` above its original becomes
a pair (the untouched original beats it), and the head trains more epochs on all pairs. Each
round prints the mean score gain the optimiser found on those clean photos, the number
hardening drives down.

The job is resumable: features of every version and of every fitted edit are cached as they
are computed, and with ``--state`` the training state is written after every epoch (one file
per round beside it); the same command run again after an interruption continues from there
and writes the same weights. The held-out Pixabay photos of the protocol
(:func:`persaes.eval.protocol.heldout_photos`) are never used.
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from persaes.core.aesthetic_loss import AestheticLoss
from persaes.core.backbones import DEFAULT_BACKBONE, create_backbone, get_spec
from persaes.core.features import FeatureCache, Features, extract_features, features_of_tensors, file_digest
from persaes.core.model import BINS, AestheticModel, AttentionHead, distribution_to_score
from persaes.core.retouching import retouch_image
from persaes.core.scorer import Scorer
from persaes.core.train import GENERIC_RECIPES, GenericRecipe, train_generic
from persaes.eval.protocol import heldout_photos
from persaes.io.checkpoint import model_metadata, save_checkpoint
from persaes.io.images import load_image
from persaes.io.references import read_ratings_csv
from retouch import DEGRADATIONS, LEVELS, OPS, OVER_PROCESSING, degrade, over_process
from retouch.optimize import EditSettings

#: Every version a training photo is ranked above: ``(kind, level)``, level None for degradations.
VERSIONS: tuple[tuple[str, str | None], ...] = (
    *((kind, None) for kind in DEGRADATIONS),
    *((kind, level) for kind in OVER_PROCESSING for level in LEVELS),
)


def make_version(image: Tensor, kind: str, level: str | None, generator: torch.Generator) -> Tensor:
    """One seeded degraded (``level`` None) or over-processed version of ``image``."""
    return degrade(image, kind, generator)[0] if level is None else over_process(image, kind, level, generator)[0]


def version_features(model: AestheticModel, files: list[Path], seed: int, draws: int,
                     cache: FeatureCache) -> tuple[Features, list[int], list[str]]:
    """Features of ``draws`` seeded versions of every file under each of :data:`VERSIONS`, the index of each
    row's source file, and each row's version name."""
    parts, owners, names = [], [], []
    for n, path in enumerate(files):
        base = file_digest(path)
        versions = [(draw, k, kind, level) for draw in range(draws) for k, (kind, level) in enumerate(VERSIONS)]
        keys = [hashlib.sha256(f"{base}/{kind}/{level or ''}/{seed}/{draw}".encode()).hexdigest()
                for draw, _, kind, level in versions]
        found = [cache.get(key) for key in keys]
        missing = [i for i, feats in enumerate(found) if feats is None]
        if missing:
            image = load_image(path, max_side=2 * model.spec.input_size)[None]
            batch = []
            for i in missing:
                draw, k, kind, level = versions[i]
                generator = torch.Generator().manual_seed(seed * 100003 + n * 7 + k + 1009 * draw)
                batch.append(make_version(image, kind, level, generator)[0])
            computed = features_of_tensors(model, torch.stack(batch))
            for row, i in enumerate(missing):
                found[i] = computed.rows([row])
                cache.put(keys[i], found[i])
        parts.extend(found)
        owners.extend([n] * len(versions))
        names.extend(kind if level is None else f"{kind}/{level}" for _, _, kind, level in versions)
        if n % 25 == 0:
            print(f"version features: {n}/{len(files)}", file=sys.stderr, flush=True)
    return Features.cat(parts), owners, names


def edit_features(model: AestheticModel, files: list[Path], seed: int, cache: FeatureCache) -> Features:
    """Features of the generic retouch of each file (all ops, default edit settings) fitted against ``model``
    as it is now; cached under the file's and the head's digests."""
    head_digest = hashlib.sha256(b"".join(v.detach().cpu().numpy().tobytes()
                                          for v in model.head.state_dict().values())).hexdigest()
    loss = AestheticLoss(Scorer(copy.deepcopy(model), {}))
    parts = []
    for n, path in enumerate(files):
        key = hashlib.sha256(f"{file_digest(path)}/edit/{head_digest}/{seed}".encode()).hexdigest()
        found = cache.get(key)
        if found is None:
            edit = retouch_image(load_image(path)[None], loss, OPS, EditSettings(), seed=seed)
            found = features_of_tensors(model, edit)
            cache.put(key, found)
        parts.append(found)
        if n % 25 == 0:
            print(f"fitted edits: {n}/{len(files)}", file=sys.stderr, flush=True)
    return Features.cat(parts)


def pixabay_photos(images_csv: Path) -> set[str]:
    """Names of the Pixabay photos of an OASIS-format image table."""
    with open(images_csv, newline="", encoding="utf-8-sig") as handle:
        return {row["image"] for row in csv.DictReader(handle) if row["source"] == "Pixabay"}


def chosen_recipe(args: argparse.Namespace) -> GenericRecipe:
    """The named recipe with the fields the command line sets."""
    recipe = GENERIC_RECIPES[args.recipe]
    fields = {name: getattr(args, name) for name in ("quality_width", "draws", "harden_rounds", "harden_photos")
              if getattr(args, name) is not None}
    training = recipe.training if args.epochs is None else replace(recipe.training, epochs=args.epochs)
    return replace(recipe, training=training, **fields)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--ratings", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "generic.safetensors")
    ap.add_argument("--state", type=Path, default=None,
                    help="training state file, written after every epoch; an existing one of the same run is resumed")
    ap.add_argument("--recipe", choices=sorted(GENERIC_RECIPES), default="shipped")
    ap.add_argument("--draws", type=int, default=None, help="seeded versions per photo and kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--quality-width", type=int, default=None,
                    help="channels of the quality branch's thumbnail CNN (0: statistics only)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--harden-rounds", type=int, default=None, help="rounds of hardening against the optimiser")
    ap.add_argument("--harden-photos", type=int, default=None, help="training photos whose edits each round fits")
    args = ap.parse_args(argv)
    recipe = chosen_recipe(args)
    started = time.time()
    torch.manual_seed(args.seed)

    spec = get_spec(DEFAULT_BACKBONE)
    model = AestheticModel(spec, create_backbone(spec.name, "pretrained"),
                           AttentionHead(spec.channels, quality_width=recipe.quality_width)).eval()
    cache = (FeatureCache(args.cache, spec.name, "pretrained") if args.cache
             else FeatureCache.default(spec.name, "pretrained"))
    images_csv = args.data / "images.csv"
    held = set(heldout_photos(images_csv))
    refs = read_ratings_csv(args.ratings, images_csv)
    refs = refs.subset([i for i, name in enumerate(refs.ids) if name not in held])
    ref_feats, ok, problems = extract_features(model, refs.paths, cache)
    if problems:
        print("\n".join(problems), file=sys.stderr)
    hists = refs.hists[ok]
    ids = [refs.ids[i] for i in ok]

    pixabay = pixabay_photos(images_csv)
    prior_rows = [r for r, name in enumerate(ids) if name in pixabay]
    ver_feats, owners, names = version_features(model, [refs.paths[ok[r]] for r in prior_rows], args.seed,
                                                recipe.draws, cache)
    feats = Features.cat([ref_feats, ver_feats])
    pairs = torch.tensor([[prior_rows[o], len(ref_feats) + j] for j, o in enumerate(owners)])

    head = model.head
    settings = recipe.training

    def report(epoch: int, loss: float) -> None:
        print(f"epoch {epoch}: loss {loss:.4f} ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)

    rated = torch.arange(len(ref_feats))
    history = train_generic(head, feats.take, torch.cat([hists, torch.zeros(len(ver_feats), BINS)]), settings,
                            args.seed, pairs=pairs, rated=rated, state_path=args.state, on_epoch=report)
    generator = torch.Generator().manual_seed(args.seed)
    harden_rows = [prior_rows[i] for i in torch.randperm(len(prior_rows), generator=generator).tolist()]
    rounds = []
    for r in range(recipe.harden_rounds):
        chosen = harden_rows[r * recipe.harden_photos:(r + 1) * recipe.harden_photos]
        edits = edit_features(model, [refs.paths[ok[row]] for row in chosen], args.seed, cache)
        with torch.no_grad():
            gains = distribution_to_score(head(*edits.take(range(len(edits))))) - distribution_to_score(
                head(*feats.take(chosen)))
        won = [(row, len(feats) + j) for j, row in enumerate(chosen) if gains[j] > recipe.harden_gain]
        rounds.append({"photos": len(chosen), "mean_gain": round(float(gains.mean()), 4), "pairs": len(won)})
        print(f"hardening round {r + 1}: mean score gain of the fitted edits {gains.mean():+.3f}, "
              f"{len(won)} new pairs", file=sys.stderr, flush=True)
        feats = Features.cat([feats, edits])
        pairs = torch.cat([pairs, torch.tensor(won * recipe.harden_repeat).reshape(-1, 2)])
        state = None if args.state is None else args.state.with_suffix(f".round{r + 1}.safetensors")
        history += train_generic(head, feats.take, torch.cat([hists, torch.zeros(len(feats) - len(hists), BINS)]),
                                 replace(settings, epochs=recipe.harden_epochs), args.seed + r + 1, pairs=pairs,
                                 rated=rated, state_path=state, on_epoch=report, standardize=False)
    with torch.no_grad():
        scores = torch.cat([distribution_to_score(head(*feats.take(chunk)))
                            for chunk in torch.arange(len(feats)).split(1024)])
    pairs = pairs[: len(owners)]
    won = (scores[pairs[:, 0]] > scores[pairs[:, 1]]).float()
    per_kind = {name: round(float(won[[i for i, n in enumerate(names) if n == name]].mean()), 4)
                for name in dict.fromkeys(names)}
    print(f"training-set preference for originals: {per_kind}; final loss {history[-1]:.4f}", file=sys.stderr)
    meta = model_metadata(
        model, "pretrained", kind="generic", trained=True,
        trained_on={"references": f"{args.ratings.name} over {images_csv.name} (all participants), {len(ids)} photos",
                    "quality_prior": f"{len(prior_rows)} Pixabay photos x {len(VERSIONS)} kinds x {recipe.draws} draws",
                    "held_out": f"{len(held)} Pixabay photos (persaes.eval.protocol.heldout_photos)"},
        training=settings.as_dict(), recipe=args.recipe, seed=args.seed,
        train_preference=per_kind, hardening=rounds,
    )
    save_checkpoint(args.out, model, meta)
    print(f"wrote {args.out} in {time.time() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
