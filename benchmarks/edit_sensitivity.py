"""How a scorer's score moves under simple edits of held-out photos (a diagnostic).

    python benchmarks/edit_sensitivity.py --data ../shared/data/oasis

Scores 12 held-out Pixabay photos (`heldout_photos(...)[24:36]`) and their versions at
±0.4 EV and saturation × 1.4 / × 0.7 under the generic scorer and under profiles made
from the example album's answers (a simulated bright-and-vivid user) with each personal
stage of ``persaes.core.train.PERSONAL_PRESETS`` (``taste``, the default, and ``paper``); prints
the mean score change of each edit and the share of photos whose brighter version beats the
darker one.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from persaes.core.personalize import personalize
from persaes.core.scorer import load_scorer
from persaes.core.train import PERSONAL_PRESETS
from persaes.eval.protocol import heldout_photos
from persaes.io.images import load_image
from retouch import expose, saturation

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    names = heldout_photos(args.data / "images.csv")[24:36]
    photos = [load_image(args.data / "images" / f"{n}.jpg")[None] for n in names]
    edits = {"+0.4 EV": lambda x: expose(x, 0.4), "-0.4 EV": lambda x: expose(x, -0.4),
             "saturation x1.4": lambda x: saturation(x, torch.tensor([1.4])),
             "saturation x0.7": lambda x: saturation(x, torch.tensor([0.7]))}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        scorers = {"generic": "generic"}
        for name, settings in PERSONAL_PRESETS.items():
            label = f"profile, personal stage {name!r}"
            out = Path(tmp) / f"{len(scorers)}.safetensors"
            personalize(EXAMPLES / "album", EXAMPLES / "answers.jsonl", out, device=args.device, personal=settings)
            scorers[label] = out
        for label, source in scorers.items():
            scorer = load_scorer(source, device=args.device)
            base = scorer.score([p[0] for p in photos])
            edited = {name: scorer.score([edit(p)[0] for p in photos]) for name, edit in edits.items()}
            results[label] = {name: round(float((s - base).mean()), 3) for name, s in edited.items()}
            brighter_wins = (edited["+0.4 EV"] > edited["-0.4 EV"]).float().mean()
            results[label]["brighter beats darker"] = round(float(brighter_wins), 3)
    print("| scorer | " + " | ".join(next(iter(results.values()))) + " |")
    print("|---|" + "---|" * len(next(iter(results.values()))))
    for label, row in results.items():
        print(f"| {label} | " + " | ".join(f"{v:+.3f}" if k != "brighter beats darker" else f"{v:.2f}"
                                           for k, v in row.items()) + " |")
    print(json.dumps(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
