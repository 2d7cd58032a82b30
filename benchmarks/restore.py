"""Quality prior and restoration (shared/docs/protocol.md §2).

Example::

    python benchmarks/restore.py --data ../shared/data/oasis --json out/restore.json

On the fixed, seeded held-out Pixabay photos (never used to train anything), each photo is
degraded once per kind (under / over exposure, colour, haze; seeded) and over-processed once
per kind and level (over-dehaze, over-saturate, over-contrast, over-sharpen, brighten,
darken, recolour, and desaturate beside the protocol's kinds; mild and strong; seeded), and

(a) the generic scorer's pairwise accuracy at preferring the original to each degraded or
    over-processed version is measured, per kind, on all held-out photos;
(b) on the first ``--photos`` of them, each retouching op is optimised against the generic
    loss on its own degradation (exposure for under/over, color for colour, dehaze for
    haze), and PSNR / SSIM against the original are reported beside the degraded input
    and the classic baseline (auto gamma, gray world + saturation stretch, dark channel
    prior with ω = 0.95, t₀ = 0.1, 15×15 patch and guided-filter refinement);
(c) on the same photos, untouched, the generic retouch with all ops (as ``persaes retouch``
    makes it): PSNR and CIEDE2000 ΔE to the original, score gain, the change in the share
    of clipped pixels (percentage points) and the chroma of the original's near-neutral
    pixels. A faithful retouch changes little.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from persaes.core.aesthetic_loss import AestheticLoss
from persaes.core.retouching import retouch_image
from persaes.core.scorer import load_scorer
from persaes.eval.protocol import heldout_photos
from persaes.io.images import load_image
from retouch import (
    DEGRADATIONS,
    LEVELS,
    OPS,
    OVER_PROCESSING,
    auto_gamma,
    clipped_share,
    dark_channel_dehaze,
    degrade,
    delta_e,
    gray_world,
    neutral_chroma,
    over_process,
    psnr,
    ssim,
)
from retouch.optimize import EditSettings

OP_FOR = {"under": "exposure", "over": "exposure", "color": "color", "haze": "dehaze"}
BASELINE_FOR = {"under": auto_gamma, "over": auto_gamma, "color": gray_world, "haze": dark_channel_dehaze}

#: The over-processing rows of (a): ``kind/level``.
OVER_KINDS = tuple(f"{kind}/{level}" for kind in OVER_PROCESSING for level in LEVELS)


def degraded_versions(image: torch.Tensor, index: int, seed: int) -> dict[str, torch.Tensor]:
    """Each degradation of one photo, seeded by (seed, photo index, kind)."""
    return {kind: degrade(image, kind, torch.Generator().manual_seed(seed * 1_000_003 + index * 31 + k))[0]
            for k, kind in enumerate(DEGRADATIONS)}


def over_processed_versions(image: torch.Tensor, index: int, seed: int) -> dict[str, torch.Tensor]:
    """Each over-processing of one photo at each level (keys ``kind/level``), seeded by (seed, photo, kind, level)."""
    out = {}
    for k, name in enumerate(OVER_KINDS):
        kind, level = name.split("/")
        generator = torch.Generator().manual_seed(seed * 2_000_003 + index * 97 + k + 500_000)
        out[name] = over_process(image, kind, level, generator)[0]
    return out


def clean_row(image: torch.Tensor, retouched: torch.Tensor, gain: float) -> dict[str, float]:
    """(c) for one photo: how far the generic retouch moved an untouched photo."""
    return {"psnr": float(psnr(retouched, image)[0]), "delta_e": float(delta_e(retouched, image)[0]),
            "score_gain": gain,
            "clipped_pp": 100 * float(clipped_share(retouched)[0] - clipped_share(image)[0]),
            "neutral_chroma": float(neutral_chroma(retouched, image)[0])}


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return statistics.fmean(kept) if kept else float("nan")


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
    wins: dict[str, list[float]] = {k: [] for k in (*DEGRADATIONS, *OVER_KINDS)}
    metrics: dict[str, dict[str, list[float]]] = {k: {} for k in DEGRADATIONS}
    clean: list[dict[str, float]] = []
    for n, name in enumerate(names):
        image = load_image(args.data / "images" / f"{name}.jpg")[None]
        versions = {**degraded_versions(image, n, args.seed), **over_processed_versions(image, n, args.seed)}
        scores = scorer.score([image[0], *[v[0] for v in versions.values()]])
        for k, kind in enumerate(versions):
            wins[kind].append(float(scores[0] > scores[k + 1]))
        if n < args.photos:
            retouched = retouch_image(image, loss, OPS, EditSettings(steps=args.steps), seed=args.seed)
            before, after = scorer.score([image[0], retouched[0]]).tolist()
            clean.append(clean_row(image, retouched, after - before))
            versions = {kind: versions[kind] for kind in DEGRADATIONS}
            for kind, bad in versions.items():
                outputs = {
                    "degraded": bad,
                    "baseline": BASELINE_FOR[kind](bad),
                    "persaes": retouch_image(bad, loss, (OP_FOR[kind],), EditSettings(steps=args.steps),
                                             seed=args.seed),
                }
                for label, out in outputs.items():
                    metrics[kind].setdefault(f"psnr_{label}", []).append(float(psnr(out, image)[0]))
                    metrics[kind].setdefault(f"ssim_{label}", []).append(float(ssim(out, image)[0]))
        print(f"[{n + 1}/{len(names)}] {name} ({time.time() - started:.0f} s)", file=sys.stderr)

    clean_keys = ("psnr", "delta_e", "score_gain", "clipped_pp", "neutral_chroma")
    result = {
        "preference_accuracy": {k: statistics.fmean(v) for k, v in wins.items()},
        "restoration": {k: {m: statistics.fmean(v) for m, v in per.items()} for k, per in metrics.items()},
        "clean": {
            "mean": {k: _nanmean([row[k] for row in clean]) for k in clean_keys},
            "median_psnr": statistics.median([row["psnr"] for row in clean]) if clean else float("nan"),
            "min_psnr": min((row["psnr"] for row in clean), default=float("nan")),
            "max_clipped_pp": max((row["clipped_pp"] for row in clean), default=float("nan")),
            "per_photo": {name: row for name, row in zip(names, clean)},
        },
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
        cells = " | ".join(f"{r.get(f'{m}_{label}', float('nan')):.3f}" for m in ("psnr", "ssim")
                           for label in ("degraded", "baseline", "persaes"))
        print(f"| {kind} | {result['preference_accuracy'][kind]:.3f} | {OP_FOR[kind]} | {cells} |")
    print("\n| over-processing (a) | prefers original |\n|---|---|")
    for kind in OVER_KINDS:
        print(f"| {kind} | {result['preference_accuracy'][kind]:.3f} |")
    c = result["clean"]
    print("\n| clean photos (c), generic retouch | PSNR mean / median / min | ΔE00 | score gain "
          "| clipped pp (mean / max) | near-neutral chroma |\n|---|---|---|---|---|---|")
    print(f"| {len(clean)} photos | {c['mean']['psnr']:.2f} / {c['median_psnr']:.2f} / {c['min_psnr']:.2f} "
          f"| {c['mean']['delta_e']:.2f} | {c['mean']['score_gain']:+.3f} "
          f"| {c['mean']['clipped_pp']:+.2f} / {c['max_clipped_pp']:+.2f} | {c['mean']['neutral_chroma']:.2f} |")
    print(f"\n{result['photos_a']} held-out photos for (a), {result['photos_b']} for (b) and (c); "
          f"{result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
