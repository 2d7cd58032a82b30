"""Reproduce ``weights/generic.safetensors``: the default generic head with a quality prior.

    python weights/make_generic.py --data ../shared/data/oasis \\
        --ratings ../shared/data/oasis/ratings_dev.csv --out weights/generic.safetensors

Trains the default backbone's head (heads only, on cached features) on two objectives:

* EMD against the rated references (every OASIS photo with the histogram of all
  participants' ratings in ``--ratings``), and
* a quality prior: a ranking hinge loss that prefers each training Pixabay photo to its
  under-/over-exposed, colour-cast/desaturated and hazed versions (the seeded
  degradations of ``shared/docs/protocol.md`` §2).

The held-out Pixabay photos of the protocol (:func:`persaes.protocol.heldout_photos`) are
never used.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import torch

from persaes.backbones import DEFAULT_BACKBONE, create_backbone, get_spec
from persaes.checkpoint import model_metadata, save_checkpoint
from persaes.features import FeatureCache, Features, extract_features, features_of_tensors, file_digest
from persaes.images import load_image
from persaes.model import AestheticModel, AttentionHead, distribution_to_score
from persaes.protocol import heldout_photos
from persaes.references import read_ratings_csv
from persaes.train import GenericSettings, train_generic
from retouch import DEGRADATIONS, degrade


def degraded_features(model: AestheticModel, files: list[Path], seed: int, draws: int,
                      cache: FeatureCache) -> tuple[Features, list[int]]:
    """Features of ``draws`` seeded versions of every file under each degradation, and the
    index of each row's source file."""
    parts, owners = [], []
    for n, path in enumerate(files):
        base = file_digest(path)
        versions = [(draw, k, kind) for draw in range(draws) for k, kind in enumerate(DEGRADATIONS)]
        keys = [hashlib.sha256(f"{base}/{kind}/{seed}/{draw}".encode()).hexdigest() for draw, _, kind in versions]
        found = [cache.get(key) for key in keys]
        missing = [i for i, feats in enumerate(found) if feats is None]
        if missing:
            image = load_image(path, max_side=2 * model.spec.input_size)[None]
            batch = []
            for i in missing:
                draw, k, kind = versions[i]
                generator = torch.Generator().manual_seed(seed * 100003 + n * 7 + k + 1009 * draw)
                batch.append(degrade(image, kind, generator)[0])
            computed = features_of_tensors(model, torch.cat(batch))
            for row, i in enumerate(missing):
                found[i] = computed.rows([row])
                cache.put(keys[i], found[i])
        parts.extend(found)
        owners.extend([n] * len(versions))
        if n % 50 == 0:
            print(f"degraded features: {n}/{len(files)}", file=sys.stderr)
    return Features.cat(parts), owners


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--ratings", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "generic.safetensors")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--pair-weight", type=float, default=3.0)
    ap.add_argument("--pair-margin", type=float, default=0.5)
    ap.add_argument("--pair-content-grad", type=float, default=GenericSettings.pair_content_grad,
                    help="share of the ranking pairs' gradient that reaches the head's content path")
    ap.add_argument("--draws", type=int, default=4, help="seeded degradations per photo and kind")
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
    keep = [i for i, name in enumerate(refs.ids) if name not in held]
    refs = refs.subset(keep)
    ref_feats, ok, problems = extract_features(model, refs.paths, cache)
    if problems:
        print("\n".join(problems), file=sys.stderr)
    hists = refs.hists[ok]
    ids = [refs.ids[i] for i in ok]

    import csv

    with open(images_csv, newline="", encoding="utf-8-sig") as handle:
        pixabay = {row["image"] for row in csv.DictReader(handle) if row["source"] == "Pixabay"}
    prior_rows = [r for r, name in enumerate(ids) if name in pixabay]
    deg_feats, owners = degraded_features(model, [refs.paths[ok[r]] for r in prior_rows], args.seed, args.draws, cache)
    feats = Features.cat([ref_feats, deg_feats])
    pairs = torch.tensor([[prior_rows[o], len(ref_feats) + j] for j, o in enumerate(owners)])

    head = model.head
    settings = GenericSettings(epochs=args.epochs, lr=args.lr, pair_weight=args.pair_weight,
                               pair_margin=args.pair_margin, pair_content_grad=args.pair_content_grad)
    history = train_generic(head, feats.take, torch.cat([hists, torch.zeros(len(deg_feats), 10)]), settings,
                            args.seed, pairs=pairs, rated=torch.arange(len(ref_feats)))
    with torch.no_grad():
        scores = distribution_to_score(head(*feats.take(torch.arange(len(feats)))))
    won = (scores[pairs[:, 0]] > scores[pairs[:, 1]]).float()
    per_kind = {kind: float(won[k::len(DEGRADATIONS)].mean()) for k, kind in enumerate(DEGRADATIONS)}  # kind-minor rows
    print(f"training-set preference for originals: {per_kind}; final loss {history[-1]:.4f}", file=sys.stderr)
    meta = model_metadata(
        model, "pretrained", kind="generic", trained=True,
        trained_on={"references": f"{args.ratings.name} over {images_csv} (all participants), {len(ids)} photos",
                    "quality_prior": f"{len(prior_rows)} Pixabay photos x {list(DEGRADATIONS)} x {args.draws} draws",
                    "held_out": f"{len(held)} Pixabay photos (persaes.protocol.heldout_photos)"},
        training=settings.as_dict(), seed=args.seed,
        train_preference=per_kind,
    )
    save_checkpoint(args.out, model, meta)
    print(f"wrote {args.out} in {time.time() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
