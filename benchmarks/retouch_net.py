"""The feed-forward retoucher against the fitted edits it learns from (``persaes train-retoucher``).

Example::

    python benchmarks/retouch_net.py --data ../shared/data/oasis --json out/retouch_net.json

Held-out Pixabay photos of OASIS (``persaes.eval.protocol.heldout_photos``, never used to train the
scorer): the network is trained as ``persaes train-retoucher`` trains it, on the fitted edits of
``--train-photos`` photos that follow the 48 test photos of ``restore.py`` and
``taste_retouch.py``; then, on the first ``--test-photos`` photos at full size, its one-pass
output is compared with the fitted edit (``persaes retouch``): mean score of the original, the
fitted and the network's output under the model, PSNR of the network's output against the
fitted one (beside the original's), and seconds per photo for each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from persaes.app.retouch_training import EditPairs, fitted_pair
from persaes.core.aesthetic_loss import AestheticLoss
from persaes.core.retouching import retouch_image
from persaes.core.scorer import load_scorer
from persaes.eval.protocol import heldout_photos
from persaes.io.images import load_image
from retouch import OPS, psnr
from retouch.optimize import EditSettings, train_retouch_net

TEST_PHOTOS_OF_OTHER_BENCHMARKS = 48


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--scorer", default="generic", help="weights name or profile file")
    ap.add_argument("--train-photos", type=int, default=64)
    ap.add_argument("--test-photos", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)
    started = time.time()
    scorer = load_scorer(args.scorer, device=args.device)
    loss = AestheticLoss(scorer)
    settings = EditSettings()
    names = heldout_photos(args.data / "images.csv")
    train = names[TEST_PHOTOS_OF_OTHER_BENCHMARKS:TEST_PHOTOS_OF_OTHER_BENCHMARKS + args.train_photos]
    if len(train) < args.train_photos:
        raise SystemExit(f"{args.data}: only {len(train)} held-out photos after the test photos")

    def photo(name: str) -> torch.Tensor:
        return load_image(args.data / "images" / f"{name}.jpg")[None].to(scorer.device)

    pairs = EditPairs()
    for n, name in enumerate(train):
        pairs.add(*fitted_pair(photo(name), loss, OPS, settings, args.size, seed=args.seed))
        print(f"[fit {n + 1}/{len(train)}] {name} ({time.time() - started:.0f} s)", file=sys.stderr)
    fitted_at = time.time()
    net = train_retouch_net(pairs.batches(8, args.seed), OPS, args.epochs, seed=args.seed, device=scorer.device)
    trained_at = time.time()

    rows: dict[str, list[float]] = {}
    for name in names[:args.test_photos]:
        image = photo(name)
        tick = time.time()
        fitted = retouch_image(image, loss, OPS, settings, seed=args.seed)
        tock = time.time()
        one_pass = retouch_image(image, loss, OPS, settings, net=net)  # as `persaes retouch --model`: held to limits
        done = time.time()
        scores = scorer.score([image[0], fitted[0], one_pass[0]]).tolist()
        for key, value in (("score_original", scores[0]), ("score_fitted", scores[1]), ("score_net", scores[2]),
                           ("psnr_net_vs_fitted", float(psnr(one_pass, fitted)[0])),
                           ("psnr_original_vs_fitted", float(psnr(image, fitted)[0])),
                           ("seconds_fit", tock - tick), ("seconds_net", done - tock)):
            rows.setdefault(key, []).append(value)
        print(f"[test] {name} ({time.time() - started:.0f} s)", file=sys.stderr)

    result = {
        **{key: statistics.fmean(values) for key, values in rows.items()},
        "train_photos": len(train), "test_photos": args.test_photos, "epochs": args.epochs, "size": args.size,
        "scorer": args.scorer, "seconds_fitting_training_edits": round(fitted_at - started, 1),
        "seconds_training": round(trained_at - fitted_at, 1), "seconds": round(time.time() - started, 1),
        "command": " ".join(["python", "benchmarks/retouch_net.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print("| output | mean score | PSNR against the fitted edit | seconds per photo |")
    print("|---|---|---|---|")
    print(f"| original | {result['score_original']:.3f} | {result['psnr_original_vs_fitted']:.2f} | |")
    print(f"| fitted edit (`persaes retouch`) | {result['score_fitted']:.3f} | | {result['seconds_fit']:.2f} |")
    print(f"| network (`persaes retouch --model`) | {result['score_net']:.3f} | {result['psnr_net_vs_fitted']:.2f} "
          f"| {result['seconds_net']:.3f} |")
    print(f"\n{len(train)} training photos (fitting {result['seconds_fitting_training_edits']} s, training "
          f"{result['seconds_training']} s), {args.test_photos} test photos; {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
