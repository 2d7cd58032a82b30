"""Consistent tastes on different photos (shared/docs/protocol.md §5).

Example::

    python benchmarks/simulated_taste.py --data ../shared/data/oasis --json out/simulated_taste.json \\
        --plot out/simulated_taste.png

A simulated user (``persaes.eval.simulate.CONSISTENT_TASTES``: warm, cool, vivid, muted, bright,
dark, high- and low-contrast, animals, scenery) answers pairs of *different* photos of an
album (``--album`` OASIS photos outside the held-out set, each present once: as it is or
edited by ``persaes.eval.simulate.edit_along`` along a random axis by −1 or +1) by its rule, each
answer flipped with probability ``--noise``. The profile is made by the same personal stage
``persaes personalize`` runs (on cached features, starting from the shipped generic weights).

Held-out pair accuracy (the ``heldout_photos`` of protocol §2, never in an album): for a tone
or colour taste, the −1 and +1 versions of each held-out photo along the taste's axis; for a
content taste, every pair of a photo of the category and one of another. Reported for the
generic model and the profile, for each noise level and number of answers, with random pairs
and with pairs chosen one by one by ``persaes.core.active.ActivePairs`` (``--pairs``); a PNG plots
accuracy against answers.

With ``--retouch N``: for each tone or colour taste, N held-out photos are retouched with the
generic model and then with the profile on top (as ``persaes retouch --profile`` does) from
the profile of 100 answers at 10 % noise; reported is the share of photos whose personalized
output moves the taste's feature the taste's way relative to the generic output.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from persaes.core.active import ActivePairs
from persaes.core.aesthetic_loss import AestheticLoss
from persaes.core.features import FeatureCache, Features, extract_features
from persaes.core.model import AestheticModel, distribution_to_score
from persaes.core.personalize import personal_stage
from persaes.core.retouching import retouch_image, taste_settings
from persaes.core.scorer import load_scorer
from persaes.eval.protocol import heldout_photos
from persaes.eval.simulate import AXES, CONSISTENT_TASTES, ConsistentTaste, edit_along
from persaes.io.images import load_image, to_pil
from persaes.io.preferences import sample_pairs
from retouch import OPS
from retouch.metrics import TASTE_FEATURES, taste_features
from retouch.optimize import EditSettings

ANALYSIS_SIDE = 256


def read_images(data: Path) -> dict[str, tuple[str, float]]:
    """``{image: (category, consensus beauty)}``: OASIS categories and the mean beauty rating
    over all participants of ``ratings_dev.csv``."""
    ratings: dict[str, list[float]] = {}
    with open(data / "ratings_dev.csv", newline="", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            ratings.setdefault(row["image"], []).append(float(row["beauty"]))
    with open(data / "images.csv", newline="", encoding="utf-8-sig") as handle:
        return {row["image"]: (row["category"], statistics.mean(ratings.get(row["image"], [4.0])))
                for row in csv.DictReader(handle)}


def write_version(out: Path, source: Path, axis: str | None, amount: float) -> Path:
    """Save ``source`` edited along ``axis`` by ``amount`` (or as it is) as a JPEG at ``out``."""
    if not out.exists():
        image = load_image(source)[None]
        if axis is not None and amount:
            image = edit_along(image, axis, amount)
        out.parent.mkdir(parents=True, exist_ok=True)
        to_pil(image[0]).save(out, quality=95)
    return out


class Photos:
    """Files with their features (generic model's cache) and each taste's value of them."""

    def __init__(self, model: AestheticModel, cache: FeatureCache, files: list[Path], meta: list[tuple[str, float]]):
        self.files = files
        self.meta = meta
        self.feats, ok, problems = extract_features(model, files, cache)
        if problems:
            raise SystemExit(f"unreadable photos: {problems[0]}")
        self.images = [load_image(f, max_side=ANALYSIS_SIDE)[None] for f in files]

    def values(self, taste: ConsistentTaste) -> list[float]:
        return [taste.value(image, *meta) for image, meta in zip(self.images, self.meta)]


def answer(values: list[float], pairs: list[tuple[int, int]], noise: float, seed: int) -> torch.Tensor:
    """The user's answers to ``pairs`` of rows (ties answered at random), each flipped with probability ``noise``."""
    rng = random.Random(seed)
    rows = []
    for a, b in pairs:
        better = values[a] > values[b] or (values[a] == values[b] and rng.random() < 0.5)
        if rng.random() < noise:
            better = not better
        rows.append((a, b) if better else (b, a))
    return torch.tensor(rows, dtype=torch.long)


@torch.no_grad()
def accuracy(head, feats: Features, pairs: torch.Tensor) -> float:
    """Share of held-out ``pairs`` (rows, the first preferred) that ``head`` orders that way."""
    head.eval()
    scores = distribution_to_score(head(*feats.take(torch.arange(len(feats)))))
    return float((scores[pairs[:, 0]] > scores[pairs[:, 1]]).float().mean())


def heldout_pairs(taste: ConsistentTaste, versions: Photos, index: dict[tuple[str, str, int], int],
                  originals: list[str]) -> torch.Tensor:
    """A taste's held-out pairs as rows of ``versions``, the preferred first."""
    values = versions.values(taste) if taste.axis is not None else None
    rows = []
    if taste.axis is not None:
        for name in originals:
            a, b = index[(name, taste.axis, -1)], index[(name, taste.axis, 1)]
            if values[a] != values[b]:
                rows.append((a, b) if values[a] > values[b] else (b, a))
    else:
        cats = {name: versions.meta[index[(name, "", 0)]][0] for name in originals}
        liked = [index[(n, "", 0)] for n in originals if cats[n] == taste.category]
        other = [index[(n, "", 0)] for n in originals if cats[n] != taste.category]
        rows = [(a, b) for a in liked for b in other]
    return torch.tensor(rows, dtype=torch.long)


def plot(curves: dict[str, dict[int, float]], generic: dict[str, float], out: Path, title: str) -> None:
    """A learning-curve PNG: accuracy against answers, one line per taste (dotted: generic)."""
    width, height, left, bottom, top = 900, 560, 60, 50, 30
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    answers = sorted({n for c in curves.values() for n in c})
    right = width - 170

    def xy(n: float, acc: float) -> tuple[float, float]:
        x = left + (answers.index(n) if n in answers else 0) / max(1, len(answers) - 1) * (right - left)
        return x, top + (1 - acc) * (height - top - bottom)

    draw.rectangle([left, top, right, height - bottom], outline="black")
    for acc in (0.0, 0.25, 0.5, 0.75, 0.9, 1.0):
        _, y = xy(answers[0], acc)
        draw.line([left, y, right, y], fill=(220, 220, 220))
        draw.text((10, y - 6), f"{acc:.2f}", fill="black")
    for n in answers:
        x, _ = xy(n, 0)
        draw.text((x - 8, height - bottom + 8), str(n), fill="black")
    draw.text((left, 8), title, fill="black")
    draw.text(((left + right) / 2 - 30, height - 22), "answers", fill="black")
    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
               (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
    for i, (name, curve) in enumerate(curves.items()):
        colour = palette[i % len(palette)]
        points = [xy(n, curve[n]) for n in answers if n in curve]
        draw.line(points, fill=colour, width=3)
        gy = xy(answers[0], generic[name])[1]
        for x in range(left, right, 12):
            draw.line([x, gy, x + 5, gy], fill=colour, width=1)
        draw.text((right + 10, top + 16 * i), name, fill=colour)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)


def retouch_direction(taste: ConsistentTaste, profile_head, scorer, originals: list[torch.Tensor],
                      generic_out: list[torch.Tensor], settings: EditSettings) -> float:
    """Share of photos whose retouch with the profile (on the generic retouch) moves the taste's
    feature the taste's way relative to the generic retouch."""
    model = copy.deepcopy(scorer.model)
    model.head = profile_head
    personal = copy.deepcopy(scorer)
    personal.model = model
    loss = AestheticLoss(personal)
    feature = TASTE_FEATURES.index(AXES[taste.axis])
    moved = []
    for start, original in zip(generic_out, originals):
        out = retouch_image(start, loss, OPS, taste_settings(settings), original=original)
        with torch.no_grad():
            moved.append(taste.sign * float(taste_features(out)[0, feature] - taste_features(start)[0, feature]) > 0)
    return sum(moved) / len(moved)


def learning_curve(mode: str, album: Photos, values: list[float], counts: list[int], noise: float,
                   args: argparse.Namespace, model: AestheticModel, versions: Photos, pairs: torch.Tensor):
    """``(answers, accuracies, strengths)`` for each number of answers, ``args.repeats`` users each:
    random pairs, or pairs chosen one by one by :class:`persaes.core.active.ActivePairs`."""
    keys = [str(i) for i in range(len(album.files))]
    runs: dict[int, tuple[list[float], list]] = {count: ([], []) for count in counts}
    for rep in range(args.repeats):
        seed = args.seed * 1000 + rep
        if mode == "random":
            asked = {count: [(int(a), int(b)) for a, b in sample_pairs(keys, count, seed)] for count in counts}
            answers = {count: answer(values, asked[count], noise, seed) for count in counts}
        else:
            chooser = ActivePairs.from_features(keys, model.head, album.feats, seed=seed)
            rng = random.Random(seed)
            given: list[tuple[str, str]] = []
            answers = {}
            while len(given) < max(counts):
                a, b = chooser.next_pair(given)
                better = values[int(a)] > values[int(b)]
                given.append((a, b) if better != (rng.random() < noise) else (b, a))
                if len(given) in runs:
                    answers[len(given)] = torch.tensor([(int(a), int(b)) for a, b in given], dtype=torch.long)
        for count in counts:
            head = copy.deepcopy(model.head)
            fit = personal_stage(head, album.feats, answers[count], seed=seed)
            runs[count][0].append(accuracy(head, versions.feats, pairs))
            chosen = fit.taste
            runs[count][1].append([chosen.generic_weight, chosen.style_l2, chosen.content_l2] if chosen else None)
    return [(count, *runs[count]) for count in counts]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="the OASIS folder (images/, images.csv)")
    ap.add_argument("--tastes", default=",".join(CONSISTENT_TASTES))
    ap.add_argument("--noise", default="0,0.1,0.2")
    ap.add_argument("--answers", default="10,30,50,100")
    ap.add_argument("--pairs", default="random,active", help="how questions are chosen: random, active or both")
    ap.add_argument("--album", type=int, default=150, help="album photos")
    ap.add_argument("--repeats", type=int, default=2, help="users (answer draws) per setting")
    ap.add_argument("--retouch", type=int, default=0, help="held-out photos retouched per tone/colour taste")
    ap.add_argument("--work", type=Path, default=None,
                    help="where the edited versions go (default: a temporary folder)")
    ap.add_argument("--cache", type=Path, default=None, help="feature cache folder (default: the user cache)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args(argv)
    started = time.time()
    torch.set_grad_enabled(True)
    table = read_images(args.data)
    held = heldout_photos(args.data / "images.csv")
    pool = sorted(set(table) - set(held))
    rng = random.Random(args.seed)
    album_names = rng.sample(pool, args.album)
    album_edits = [(rng.choice([None, *AXES]), rng.choice([-1.0, 1.0])) for _ in album_names]
    scorer = load_scorer("generic", device="cpu")
    model = scorer.model
    cache = FeatureCache(args.cache, model.spec.name, "pretrained") if args.cache else FeatureCache.default(
        model.spec.name, "pretrained")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        images = args.data / "images"
        album_files = [write_version(work / "album" / f"{n}__{axis or 'none'}_{amount:+.0f}.jpg", images / f"{n}.jpg",
                                     axis, amount) for n, (axis, amount) in zip(album_names, album_edits)]
        album = Photos(model, cache, album_files, [table[n] for n in album_names])
        keys: list[tuple[str, str, int]] = [(n, "", 0) for n in held]
        keys += [(n, axis, sign) for n in held for axis in AXES for sign in (-1, 1)]
        files = [write_version(work / "heldout" / f"{n}__{axis or 'none'}_{sign:+d}.jpg", images / f"{n}.jpg",
                               axis or None, float(sign)) for n, axis, sign in keys]
        versions = Photos(model, cache, files, [table[n] for n, _, _ in keys])
        print(f"features ready ({time.time() - started:.0f} s)", file=sys.stderr)
        index = {key: i for i, key in enumerate(keys)}
        noises = [float(v) for v in args.noise.split(",")]
        modes = args.pairs.split(",")
        counts = [int(v) for v in args.answers.split(",")]
        settings = EditSettings()
        originals = [load_image(images / f"{n}.jpg", max_side=512)[None] for n in held[: args.retouch]]
        generic_out = [retouch_image(x, AestheticLoss(scorer), OPS, settings) for x in originals]
        results: dict[str, dict] = {}
        for name in args.tastes.split(","):
            taste = CONSISTENT_TASTES[name]
            pairs = heldout_pairs(taste, versions, index, held)
            values = album.values(taste)
            row: dict = {"generic": accuracy(model.head, versions.feats, pairs), "heldout_pairs": len(pairs),
                         "profile": {}}
            for mode in modes:
                for noise in noises:
                    for count, accs, strengths in learning_curve(mode, album, values, counts, noise, args, model,
                                                                 versions, pairs):
                        row["profile"][f"{mode}/{noise}/{count}"] = {"accuracy": statistics.mean(accs), "runs": accs,
                                                                     "strengths": strengths}
            if args.retouch and taste.axis:
                asked = sample_pairs([str(i) for i in range(len(album_files))], max(counts), args.seed * 1000)
                head = copy.deepcopy(model.head)
                personal_stage(head, album.feats, answer(values, [(int(a), int(b)) for a, b in asked], 0.1,
                                                         args.seed * 1000), seed=args.seed * 1000)
                row["retouch_moved"] = retouch_direction(taste, head, scorer, originals, generic_out, settings)
            results[name] = row
            cells = " ".join(f"{k}:{v['accuracy']:.2f}" for k, v in row["profile"].items())
            print(f"{name}: generic {row['generic']:.2f} | {cells} ({time.time() - started:.0f} s)", file=sys.stderr)

    out = {"tastes": results, "album": args.album, "heldout": len(held), "repeats": args.repeats,
           "seconds": round(time.time() - started, 1),
           "command": " ".join(["python", "benchmarks/simulated_taste.py",
                                *(argv if argv is not None else sys.argv[1:])])}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    header = [f"{m} {n:g} / {c}" for m in modes for n in noises for c in counts]
    print("| taste | generic | " + " | ".join(header) + " | retouch moved |")
    print("|---|---|" + "---|" * len(header) + "---|")
    for name, row in results.items():
        cells = " | ".join(f"{row['profile'][f'{m}/{n}/{c}']['accuracy']:.2f}" for m in modes for n in noises
                           for c in counts)
        moved = f"{row['retouch_moved']:.2f}" if "retouch_moved" in row else "–"
        print(f"| {name} | {row['generic']:.2f} | {cells} | {moved} |")
    if args.plot:
        noise = 0.1 if 0.1 in noises else noises[0]
        mode = modes[0]
        plot({name: {c: row["profile"][f"{mode}/{noise}/{c}"]["accuracy"] for c in counts}
              for name, row in results.items()},
             {name: row["generic"] for name, row in results.items()}, args.plot,
             f"held-out pair accuracy against answers ({noise:g} noise, {mode} pairs; dotted: generic)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
