"""Personal retouching: generic vs personalized outputs for simulated users (protocol §3).

Example::

    python benchmarks/taste_retouch.py --data ../shared/data/oasis --json out/taste_retouch.json

For each simulated user (``persaes.eval.simulate.TASTES``: *bright-and-vivid* and
*dark-and-moody*): an album of held-out Pixabay photos and two random edits of each (the
variants ``persaes prefs collect --variants`` makes) gets 100 answers from the user's taste
function (within-photo pairs first, then pairs of different photos), written through the
preference file the CLI writes; ``personalize`` makes the profile; a further set of held-out
photos is retouched with the generic model and with the profile (on top of the generic
retouch, as ``persaes retouch --profile`` does; ``--base none``: from the original photo).
Reported per user: the
share of photos whose personalized output the user's taste prefers to the generic output
(win rate), and the mean change of each taste feature (personalized minus generic); the
JSON also names the photos lost.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from persaes.app.variants import write_variant
from persaes.core.aesthetic_loss import AestheticLoss
from persaes.core.personalize import personalize
from persaes.core.retouching import retouch_image, taste_settings
from persaes.core.scorer import load_scorer
from persaes.core.train import PERSONAL_PRESETS, parse_iterations
from persaes.eval.protocol import heldout_photos
from persaes.eval.simulate import TASTES
from persaes.io.images import load_image
from persaes.io.preferences import sample_pairs
from retouch import OPS
from retouch.metrics import (
    NEUTRAL_AREA,
    TASTE_FEATURES,
    clipped_share,
    near_neutral_mask,
    neutral_chroma,
    taste_features,
)
from retouch.optimize import EditSettings

ANSWERS = 100
WORK_SIDE = 512


def build_album(root: Path, data: Path, names: list[str], seed: int) -> list[tuple[str, str]]:
    """Copy the photos into ``root``, add two variants of each; the question pairs."""
    pairs: list[tuple[str, str]] = []
    for n, name in enumerate(names):
        key = f"{name}.jpg"
        shutil.copy(data / "images" / key, root / key)
        image = load_image(root / key)[None]
        group = [key] + [write_variant(root, key, image, seed * 1000 + n) for _ in range(2)]
        pairs += [(group[0], group[1]), (group[0], group[2]), (group[1], group[2])]
    pairs = pairs[:ANSWERS]
    pairs += sample_pairs([f"{n}.jpg" for n in names], ANSWERS - len(pairs), seed)
    random.Random(seed).shuffle(pairs)
    return pairs


@torch.no_grad()
def faithfulness(originals: list[torch.Tensor], outputs: list[torch.Tensor]) -> dict:
    """Per photo, the clipped-pixel share of the output minus the original's (percentage points) and the chroma
    of the original's near-neutral pixels in the output (CIELAB; NaN for a photo with under :data:`NEUTRAL_AREA`
    of such pixels); their mean and max."""
    clipped = [100 * float(clipped_share(out) - clipped_share(x)) for x, out in zip(originals, outputs)]
    chroma = [float(neutral_chroma(out, x)) if float(near_neutral_mask(x).float().mean()) >= NEUTRAL_AREA
              else math.nan for x, out in zip(originals, outputs)]
    measured = [c for c in chroma if not math.isnan(c)]
    return {"clipped_pp": clipped, "neutral_chroma": chroma,
            "clipped_pp_mean": statistics.mean(clipped), "clipped_pp_max": max(clipped),
            "neutral_chroma_mean": statistics.mean(measured) if measured else math.nan,
            "neutral_chroma_max": max(measured) if measured else math.nan, "neutral_photos": len(measured)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--album-photos", type=int, default=24)
    ap.add_argument("--test-photos", type=int, default=24)
    ap.add_argument("--skip-photos", type=int, default=0,
                    help="held-out photos to pass over after the album before the test photos "
                         "(a second, disjoint test set for confirming a setting)")
    ap.add_argument("--steps", type=int, default=EditSettings.steps)
    ap.add_argument("--fidelity", type=float, default=EditSettings.fidelity)
    ap.add_argument("--users", default=",".join(TASTES))
    ap.add_argument("--base", choices=("generic", "none"), default="generic",
                    help="what the profile's edit is fitted on: the generic retouch or the original photo")
    ap.add_argument("--personal", default="taste", choices=tuple(PERSONAL_PRESETS),
                    help="the personal stage (persaes.core.train.PERSONAL_PRESETS)")
    ap.add_argument("--personal-iterations", type=parse_iterations, default=None,
                    help="head fine-tuning iterations (overrides the preset's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)
    started = time.time()
    held = heldout_photos(args.data / "images.csv")
    album_names = held[: args.album_photos]
    first = args.album_photos + args.skip_photos
    test_names = held[first: first + args.test_photos]
    settings = EditSettings(steps=args.steps, fidelity=args.fidelity)
    override = PERSONAL_PRESETS[args.personal]
    if args.personal_iterations is not None:
        override = replace(override, iterations=args.personal_iterations)
    originals = [load_image(args.data / "images" / f"{n}.jpg", max_side=WORK_SIDE)[None] for n in test_names]
    generic_loss = AestheticLoss(load_scorer("generic", device=args.device))
    generic_out = [retouch_image(x, generic_loss, OPS, settings, seed=args.seed) for x in originals]
    print(f"generic outputs done ({time.time() - started:.0f} s)", file=sys.stderr)

    results = {}
    for user_name in args.users.split(","):
        user = TASTES[user_name]
        with tempfile.TemporaryDirectory() as tmp:
            album = Path(tmp) / "album"
            album.mkdir()
            pairs = build_album(album, args.data, album_names, args.seed)
            prefs = Path(tmp) / "answers.jsonl"
            user.answer(album, pairs, prefs, seed=args.seed)
            profile = Path(tmp) / "profile.safetensors"
            report = personalize(album, prefs, profile, device=args.device, seed=args.seed,
                                 personal=override)
            loss = AestheticLoss(load_scorer(profile, device=args.device))
            # on top of the generic retouch: that is retouch_image(..., base=generic_loss), whose first
            # stage is generic_out already
            starts, taste = (generic_out, taste_settings(settings)) if args.base == "generic" else (originals, settings)
            personal_out = [retouch_image(x, loss, OPS, taste, seed=args.seed, original=o)
                            for x, o in zip(starts, originals)]
        with torch.no_grad():
            g = torch.cat([taste_features(x) for x in generic_out])
            p = torch.cat([taste_features(x) for x in personal_out])
            o = torch.cat([taste_features(x) for x in originals])
        weights = torch.tensor(user.weights)
        wins = ((p @ weights) > (g @ weights)).float()
        faithful = faithfulness(originals, personal_out)
        faithful["generic"] = faithfulness(originals, generic_out)
        results[user_name] = {
            "win_rate": float(wins.mean()),
            "feature_change_vs_generic": dict(zip(TASTE_FEATURES, (p - g).mean(0).tolist())),
            "feature_change_vs_original": {"generic": dict(zip(TASTE_FEATURES, (g - o).mean(0).tolist())),
                                           "personal": dict(zip(TASTE_FEATURES, (p - o).mean(0).tolist()))},
            "photos_lost": [name for name, won in zip(test_names, wins.tolist()) if not won],
            **faithful,
            "answers": report.answered, "inferred_pairs": report.inferred,
        }
        print(f"{user_name} done ({time.time() - started:.0f} s)", file=sys.stderr)

    out = {"users": results, "base": args.base, "album_photos": len(album_names), "test_photos": len(test_names),
           "steps": args.steps, "seconds": round(time.time() - started, 1),
           "command": " ".join(["python", "benchmarks/taste_retouch.py",
                                *(argv if argv is not None else sys.argv[1:])])}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    print("| user | win rate | " + " | ".join(f"Δ {f}" for f in TASTE_FEATURES)
          + " | new clipped pp (mean / max) | near-neutral chroma (mean / max) |")
    print("|---|---|" + "---|" * len(TASTE_FEATURES) + "---|---|")
    for name, r in results.items():
        deltas = " | ".join(f"{r['feature_change_vs_generic'][f]:+.4f}" for f in TASTE_FEATURES)
        print(f"| {name} | {r['win_rate']:.2f} | {deltas} | {r['clipped_pp_mean']:+.2f} / {r['clipped_pp_max']:+.2f} "
              f"| {r['neutral_chroma_mean']:.2f} / {r['neutral_chroma_max']:.2f} |")
    counted = ", ".join(str(r["neutral_photos"]) for r in results.values())
    print(f"\nΔ = personalized minus generic output, mean over {len(test_names)} held-out photos; clipped: the "
          f"personalized output's share minus the original's; chroma: over the original's near-neutral pixels, "
          f"photos with at least {NEUTRAL_AREA:.1%} of them ({counted}); {out['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
