"""Reproduce ``weights/generic.safetensors``: the default generic head with a quality prior.

    python weights/make_generic.py --data ../shared/data/oasis \\
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

The job is resumable: features of every version are cached as they are computed, and with
``--state`` the training state is written after every epoch; the same command run again
after an interruption continues from there and writes the same weights. The held-out
Pixabay photos of the protocol (:func:`persaes.protocol.heldout_photos`) are never used.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from persaes.backbones import DEFAULT_BACKBONE, create_backbone, get_spec
from persaes.checkpoint import model_metadata, save_checkpoint
from persaes.features import FeatureCache, Features, extract_features, features_of_tensors, file_digest
from persaes.images import load_image
from persaes.model import BINS, AestheticModel, AttentionHead, distribution_to_score
from persaes.protocol import heldout_photos
from persaes.references import read_ratings_csv
from persaes.train import SHIPPED_GENERIC, train_generic
from retouch import DEGRADATIONS, LEVELS, OVER_PROCESSING, degrade, over_process

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


def pixabay_photos(images_csv: Path) -> set[str]:
    """Names of the Pixabay photos of an OASIS-format image table."""
    with open(images_csv, newline="", encoding="utf-8-sig") as handle:
        return {row["image"] for row in csv.DictReader(handle) if row["source"] == "Pixabay"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--ratings", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "generic.safetensors")
    ap.add_argument("--state", type=Path, default=None,
                    help="training state file, written after every epoch; an existing one of the same run is resumed")
    ap.add_argument("--draws", type=int, default=2, help="seeded versions per photo and kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=None)
    args = ap.parse_args(argv)
    started = time.time()
    torch.manual_seed(args.seed)

    spec = get_spec(DEFAULT_BACKBONE)
    model = AestheticModel(spec, create_backbone(spec.name, "pretrained"), AttentionHead(spec.channels)).eval()
    cache = FeatureCache(args.cache, spec.name, "pretrained") if args.cache else FeatureCache.default(spec.name, "pretrained")
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
                                                args.draws, cache)
    feats = Features.cat([ref_feats, ver_feats])
    pairs = torch.tensor([[prior_rows[o], len(ref_feats) + j] for j, o in enumerate(owners)])

    head = model.head
    settings = SHIPPED_GENERIC

    def report(epoch: int, loss: float) -> None:
        print(f"epoch {epoch}/{settings.epochs}: loss {loss:.4f} ({time.time() - started:.0f} s)", file=sys.stderr,
              flush=True)

    history = train_generic(head, feats.take, torch.cat([hists, torch.zeros(len(ver_feats), BINS)]), settings,
                            args.seed, pairs=pairs, rated=torch.arange(len(ref_feats)), state_path=args.state,
                            on_epoch=report)
    with torch.no_grad():
        scores = torch.cat([distribution_to_score(head(*feats.take(chunk)))
                            for chunk in torch.arange(len(feats)).split(1024)])
    won = (scores[pairs[:, 0]] > scores[pairs[:, 1]]).float()
    per_kind = {name: round(float(won[[i for i, n in enumerate(names) if n == name]].mean()), 4)
                for name in dict.fromkeys(names)}
    print(f"training-set preference for originals: {per_kind}; final loss {history[-1]:.4f}", file=sys.stderr)
    meta = model_metadata(
        model, "pretrained", kind="generic", trained=True,
        trained_on={"references": f"{args.ratings.name} over {images_csv.name} (all participants), {len(ids)} photos",
                    "quality_prior": f"{len(prior_rows)} Pixabay photos x {len(VERSIONS)} kinds x {args.draws} draws",
                    "held_out": f"{len(held)} Pixabay photos (persaes.protocol.heldout_photos)"},
        training=settings.as_dict(), seed=args.seed,
        train_preference=per_kind,
    )
    save_checkpoint(args.out, model, meta)
    print(f"wrote {args.out} in {time.time() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
