"""How fast edits are fitted: the objective each learning rate reaches, step by step (a figure, not a test).

    OMP_NUM_THREADS=1 python benchmarks/fitting.py --data ../shared/data/oasis --json out/fitting.json

Every ``--every``-th OASIS photo (sorted by name) from ``--first`` on, ``--photos`` of them, is
fitted as ``persaes retouch`` fits it (generic weights, all ops, the default
:class:`~retouch.optimize.EditSettings` but the learning rate) from its coarse start, once per
learning rate in ``--lrs``, for ``--steps`` Adam steps. The table gives, for each learning rate,
the mean over the photos of the lowest objective (:func:`~retouch.optimize.edit_objectives`)
reached by each step count: what a fit of that many steps keeps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from persaes.core.aesthetic_loss import AestheticLoss
from persaes.core.scorer import load_scorer
from persaes.io.images import iter_images, read_photo
from retouch import OPS
from retouch.dehaze import resize_to_fit
from retouch.optimize import EditSettings, coarse_start, edit_objectives, row_regularizations
from retouch.pipeline import Retoucher

COLUMNS = (5, 10, 15, 20, 25)


def lowest_objectives(small: torch.Tensor, loss: AestheticLoss, start: dict[str, torch.Tensor],
                      settings: EditSettings, steps: int) -> list[float]:
    """The lowest objective reached by each step count 0..``steps`` (Adam from ``start``)."""
    retoucher = Retoucher(OPS)
    retoucher.load_state_dict(start)
    optimizer = torch.optim.Adam(retoucher.parameters(), lr=settings.lr)
    lowest, best = [], float("inf")
    for _ in range(steps + 1):
        value = edit_objectives(loss, retoucher(small), small, row_regularizations(retoucher), settings).sum()
        best = min(best, float(value.detach()))
        lowest.append(best)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    return lowest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="OASIS folder (its images/ are read)")
    ap.add_argument("--first", type=int, default=5)
    ap.add_argument("--every", type=int, default=61)
    ap.add_argument("--photos", type=int, default=12)
    ap.add_argument("--lrs", default="0.03,0.01,0.005,0.0025")
    ap.add_argument("--steps", type=int, default=max(COLUMNS))
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    files = sorted(iter_images([args.data / "images"]))[args.first::args.every][:args.photos]
    loss = AestheticLoss(load_scorer("generic", device="cpu"), reduction="none")
    lrs = [float(x) for x in args.lrs.split(",")]
    curves: dict[float, list[list[float]]] = {lr: [] for lr in lrs}
    began = time.perf_counter()
    for n, path in enumerate(files, 1):
        small = resize_to_fit(read_photo(path).color[None], EditSettings.work_size)
        settings = EditSettings()
        chain = Retoucher(OPS)
        coarse_start(chain, lambda: edit_objectives(loss, chain(small), small, row_regularizations(chain), settings))
        for lr in lrs:
            curves[lr].append(lowest_objectives(small, loss, chain.state(), replace(settings, lr=lr), args.steps))
        print(f"[{n}/{len(files)}] {path.name} ({time.perf_counter() - began:.0f} s)", file=sys.stderr)
    columns = [k for k in COLUMNS if k <= args.steps]
    means = {lr: [float(torch.tensor(curves[lr])[:, k].mean()) for k in range(args.steps + 1)] for lr in lrs}
    print("| Adam lr | " + " | ".join(f"{k} steps" for k in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for lr in lrs:
        print(f"| {lr:g} | " + " | ".join(f"{means[lr][k]:.3f}" for k in columns) + " |")
    print(f"\nmean lowest objective over {len(files)} photos, from each photo's coarse start; "
          f"{time.perf_counter() - began:.0f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"photos": [f.name for f in files], "mean_lowest_objective": means,
                                     "seconds": time.perf_counter() - began,
                                     "command": "python " + " ".join(sys.argv)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
