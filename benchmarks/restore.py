"""Quality prior and restoration (shared/docs/protocol.md §2).

Example::

    python benchmarks/restore.py --data ../shared/data/oasis --json out/restore.json

On the fixed, seeded held-out Pixabay photos (never used to train anything), each photo is
degraded once per kind (under / over exposure, colour, haze; seeded) and

(a) the generic scorer's pairwise accuracy at preferring the original to each degraded
    version is measured, per degradation, on all held-out photos;
(b) on the first ``--photos`` of them, each retouching op is optimised against the generic
    loss on its own degradation (exposure for under/over, color for colour, dehaze for
    haze), and PSNR / SSIM against the original are reported beside the degraded input
    and the classic baseline (auto gamma, gray world + saturation stretch, dark channel
    prior with ω = 0.95, t₀ = 0.1, 15×15 patch and guided-filter refinement).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from persaes.aesthetic_loss import AestheticLoss
from persaes.images import load_image
from persaes.protocol import heldout_photos
from persaes.retouch_files import retouch_image
from persaes.scorer import load_scorer
from retouch import DEGRADATIONS, auto_gamma, dark_channel_dehaze, degrade, gray_world, psnr, ssim
from retouch.optimize import EditSettings

OP_FOR = {"under": "exposure", "over": "exposure", "color": "color", "haze": "dehaze"}
BASELINE_FOR = {"under": auto_gamma, "over": auto_gamma, "color": gray_world, "haze": dark_channel_dehaze}


def degraded_versions(image: torch.Tensor, index: int, seed: int) -> dict[str, torch.Tensor]:
    """Each degradation of one photo, seeded by (seed, photo index, kind)."""
    return {kind: degrade(image, kind, torch.Generator().manual_seed(seed * 1_000_003 + index * 31 + k))[0]
            for k, kind in enumerate(DEGRADATIONS)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--scorer", default="generic", help="weights name or file")
    ap.add_argument("--photos", type=int, default=24, help="held-out photos used for part (b)")
    ap.add_argument("--steps", type=int, default=EditSettings.steps)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)
    started = time.time()
    torch.manual_seed(args.seed)
    scorer = load_scorer(args.scorer, device=args.device)
    loss = AestheticLoss(scorer)
    names = heldout_photos(args.data / "images.csv")
    wins: dict[str, list[float]] = {k: [] for k in DEGRADATIONS}
    metrics: dict[str, dict[str, list[float]]] = {k: {} for k in DEGRADATIONS}
    for n, name in enumerate(names):
        image = load_image(args.data / "images" / f"{name}.jpg")[None]
        versions = degraded_versions(image, n, args.seed)
        scores = scorer.score([image[0], *[v[0] for v in versions.values()]])
        for k, kind in enumerate(DEGRADATIONS):
            wins[kind].append(float(scores[0] > scores[k + 1]))
        if n < args.photos:
            for kind, bad in versions.items():
                outputs = {
                    "degraded": bad,
                    "baseline": BASELINE_FOR[kind](bad),
                    "persaes": retouch_image(bad, loss, (OP_FOR[kind],), EditSettings(steps=args.steps), seed=args.seed),
                }
                for label, out in outputs.items():
                    metrics[kind].setdefault(f"psnr_{label}", []).append(float(psnr(out, image)[0]))
                    metrics[kind].setdefault(f"ssim_{label}", []).append(float(ssim(out, image)[0]))
        print(f"[{n + 1}/{len(names)}] {name} ({time.time() - started:.0f} s)", file=sys.stderr)

    result = {
        "preference_accuracy": {k: statistics.fmean(v) for k, v in wins.items()},
        "restoration": {k: {m: statistics.fmean(v) for m, v in per.items()} for k, per in metrics.items()},
        "photos_a": len(names), "photos_b": min(args.photos, len(names)), "steps": args.steps,
        "scorer": args.scorer, "seconds": round(time.time() - started, 1),
        "command": " ".join(["python", "benchmarks/restore.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print("| degradation | prefers original | op | PSNR degraded | PSNR baseline | PSNR persaes "
          "| SSIM degraded | SSIM baseline | SSIM persaes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in DEGRADATIONS:
        r = result["restoration"][kind]
        cells = " | ".join(f"{r.get(f'{m}_{l}', float('nan')):.3f}" for m in ("psnr", "ssim")
                           for l in ("degraded", "baseline", "persaes"))
        print(f"| {kind} | {result['preference_accuracy'][kind]:.3f} | {OP_FOR[kind]} | {cells} |")
    print(f"\n{result['photos_a']} held-out photos for (a), {result['photos_b']} for (b); {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
