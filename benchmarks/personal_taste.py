"""Personal taste on real people: the paper's Table 1 protocol (shared/docs/protocol.md §1).

Example (the dev participants)::

    python benchmarks/personal_taste.py --data ../shared/data/oasis \\
        --ratings ../shared/data/oasis/ratings_dev.csv --participants 100 --json out.json

For each participant u and training size X: split u's rated images (X train, rest test);
draw 100 random training pairs (higher rating wins, ties dropped) and expand them by
one-step transitivity; the reference set is every image except u's test images, with the
histogram of the *other* participants' ratings; the generic stage trains the head on the
K nearest references of the training images (EMD), K grown from 50 until they are at least
``--min-references`` (``paper-knn``: the full method on the paper's hard K = 50); the
personal stage fits the profile on the pairs; u's test images are scored. Every method runs on the same
splits. It uses persaes' own readers, KNN, training and scoring code, on cached features.

``linear`` is the protocol's floor: ridge regression from pooled backbone features (mean and
max of the deepest map, mean of the stride-16 map, standardised) to the references' mean
score, its strength chosen by leave-one-out error on the references, plus a per-person
linear pairwise model (logistic, pulled toward zero) on the same pairs as ``full``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import multiprocessing
import statistics
import sys
import time
import zlib
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from persaes.core.backbones import DEFAULT_BACKBONE, create_backbone, get_spec
from persaes.core.device import resolve_device
from persaes.core.features import FeatureCache, Features, extract_features
from persaes.core.model import AestheticModel, AttentionHead, distribution_to_score, load_square, normalize
from persaes.core.personalize import MIN_REFERENCES, generic_stage, personal_stage
from persaes.core.train import PERSONAL_PRESETS, GenericSettings, parse_iterations
from persaes.eval.protocol import draw_pairs, pairwise_accuracy, spearman, split_ratings
from persaes.io.preferences import ExpandResult, expand_transitive
from persaes.io.references import ReferenceSet, read_ratings_csv

METHODS = ("full", "paper", "generic", "consensus", "ranksvm", "linear", "paper-knn", "exp", "logistic",
           "no-attention", "no-pretraining")
#: Ridge strengths the ``linear`` probe chooses from by leave-one-out error on the references.
RIDGE_ALPHAS = tuple(10.0 ** e for e in range(0, 6))
#: L2 pull toward zero of the ``linear`` probe's per-person part (summed logistic loss over the pairs;
#: chosen on the first 100 dev participants from 10, 100, 1000, 10000, benchmarks/README.md §1).
PERSON_L2 = 1000.0
PAIRS_PER_USER = 100


def read_participants(ratings_csv: Path) -> dict[str, dict[str, float]]:
    """participant → {image: rating}, from a ``participant,image,<rating>`` CSV."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    with open(ratings_csv, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        next(reader)
        for row in reader:
            if len(row) >= 3 and row[2].strip():
                out[row[0]][row[1]] = float(row[2])
    return out


def _order(pid: str) -> tuple[int, object]:
    return (0, int(pid)) if pid.isdigit() else (1, pid)


def all_features(data: Path, ids: list[str], files: dict[str, Path], backbone: str, weights: str,
                 device: torch.device, cache_dir: Path | None, seed: int) -> tuple[Features, dict[str, int]]:
    """Features of every image named in ``ids`` (cached), and image → row."""
    torch.manual_seed(seed)
    spec = get_spec(backbone)
    model = AestheticModel(spec, create_backbone(backbone, weights), AttentionHead(spec.channels)).to(device).eval()
    tag = weights if weights != "random" else f"random-seed{seed}"
    cache = FeatureCache(cache_dir, backbone, tag) if cache_dir else FeatureCache.default(backbone, tag)
    paths = [files[i] for i in ids]
    feats, ok, problems = extract_features(model, paths, cache)
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    return feats, {ids[i]: row for row, i in enumerate(ok)}


@torch.no_grad()
def probe_features(model: AestheticModel, paths: list[Path]) -> Tensor:
    """The ``linear`` probe's features of image files: mean and max of the deepest map and mean of
    the stride-16 map (N×(2·C3 + C2))."""
    rows = []
    for start in range(0, len(paths), 32):
        square = torch.cat([load_square(p, model.spec.input_size) for p in paths[start:start + 32]])
        _, z2, z3 = model.backbone(normalize(square, model.spec))
        rows.append(torch.cat([z3.mean(dim=(2, 3)), z3.amax(dim=(2, 3)), z2.mean(dim=(2, 3))], dim=1))
    return torch.cat(rows)


def ridge_loo(x: Tensor, y: Tensor, alphas: tuple[float, ...] = RIDGE_ALPHAS) -> tuple[Tensor, Tensor]:
    """Ridge regression of ``y`` on standardised ``x`` with the strength of least leave-one-out error;
    returns ``(weights, bias)`` on the standardisation's scale (apply to ``(x - mean) / std``)."""
    u, s, vt = torch.linalg.svd(x.double(), full_matrices=False)
    centred = (y - y.mean()).double()
    uty = u.T @ centred
    best = None
    for alpha in alphas:
        shrink = s ** 2 / (s ** 2 + alpha)
        fitted = u @ (shrink * uty)
        leverage = (u ** 2) @ shrink + 1.0 / len(y)
        loo = float((((centred - fitted) / (1 - leverage)) ** 2).mean())
        if best is None or loo < best[0]:
            best = (loo, alpha)
    alpha = best[1]
    w = vt.T @ (s / (s ** 2 + alpha) * uty)
    return w.float(), y.mean()


def person_linear(x: Tensor, offset: Tensor, pairs: Tensor, l2: float = PERSON_L2, steps: int = 200) -> Tensor:
    """A per-person linear pairwise model on top of a generic score: min Σ softplus(−(Δoffset + w·Δx)) + ½·l2·‖w‖²."""
    diff = x[pairs[:, 0]] - x[pairs[:, 1]]
    base = offset[pairs[:, 0]] - offset[pairs[:, 1]]
    w = torch.zeros(x.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.softplus(-(base + diff @ w)).sum() + 0.5 * l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def linear_probe(probe: Tensor, ref_rows: list[int], ref_scores: Tensor, train_rows: list[int], test_rows: list[int],
                 pairs: Tensor | None, l2: float = PERSON_L2) -> Tensor:
    """The ``linear`` method's scores of ``test_rows``: ridge from probe features to the references' mean
    score (strength by leave-one-out error), plus, given pairs (M×2 rows, the first preferred), a
    per-person linear pairwise model on the training photos with the ridge score as its offset."""
    x = probe[ref_rows]
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    w, bias = ridge_loo((x - mean) / std, ref_scores)
    standard = (probe - mean) / std
    generic = standard @ w + bias
    if pairs is None or not len(pairs):
        return generic[test_rows]
    scale = float(generic[train_rows].std().clamp_min(1e-3))
    person = person_linear(standard, generic / scale, pairs, l2)
    return (generic / scale + standard @ person)[test_rows]


def rank_svm(feats: Tensor, pairs: Tensor, c: float = 1.0, steps: int = 300) -> Tensor:
    """Linear ranking SVM: min ½‖w‖² + C·mean hinge(1 − w·(x_win − x_lose)); returns w."""
    x = torch.nn.functional.normalize(feats.float(), dim=1)
    diff = x[pairs[:, 0]] - x[pairs[:, 1]]
    w = torch.zeros(x.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = 0.5 * (w ** 2).sum() + c * torch.relu(1 - diff @ w).pow(2).mean() * len(diff)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


@torch.no_grad()
def head_scores(head: AttentionHead, feats: Features, rows: list[int]) -> Tensor:
    head.eval()
    return distribution_to_score(head(*feats.take(rows))).cpu()


def evaluate_participant(pid: str) -> tuple[dict[str, dict[int, list[tuple[float, float]]]], int]:
    """All methods on all splits of one participant: {method: {x: [(ρ, accuracy), ...]}}, skipped splits."""
    args, methods, xs, scale, _, _, _, people, images_csv, _, feats, _ = _CTX
    results: dict[str, dict[int, list[tuple[float, float]]]] = {m: defaultdict(list) for m in methods}
    skipped = 0
    ratings = {k: v for k, v in people[pid].items() if k in feats["pretrained"][1]}
    refs = read_ratings_csv(args.ratings, images_csv, scale=scale, exclude_participants=[pid])
    consensus = dict(zip(refs.ids, refs.mean_scores().tolist()))
    for x in xs:
        for rep in range(args.repeats):
            seed = zlib.crc32(f"{args.seed}/{pid}/{x}/{rep}".encode())
            train, test = split_ratings(ratings, x, seed)
            truth = torch.tensor([ratings[i] for i in test])
            if float(truth.std()) == 0:
                skipped += 1
                continue
            for name, pred in split_scores(ratings, refs, consensus, train, test, seed).items():
                results[name][x].append((spearman(pred, truth), pairwise_accuracy(pred, truth)))
    return results, skipped


def split_scores(ratings: dict[str, float], refs: ReferenceSet, consensus: dict[str, float], train: list[str],
                 test: list[str], seed: int) -> dict[str, Tensor]:
    """Every method's scores of one split's ``test`` photos: the head methods first, then the baselines.

    The training pairs are drawn from ``train`` and expanded by one-step transitivity; the references are
    every photo of ``refs`` outside ``test``.
    """
    pairs = draw_pairs(ratings, train, PAIRS_PER_USER, seed)
    expansion = expand_transitive(pairs)
    test_set = set(test)
    ref_ids = [i for i in refs.ids if i not in test_set]
    ref_pos = {i: j for j, i in enumerate(refs.ids)}
    hists = refs.hists[[ref_pos[i] for i in ref_ids]]
    scores = head_method_scores(expansion, ref_ids, hists, train, test, seed)
    scores.update(baseline_scores(expansion.answered + expansion.inferred, consensus, ref_ids, train, test))
    return scores


def head_method_scores(expansion: ExpandResult, ref_ids: list[str], hists: Tensor, train: list[str],
                       test: list[str], seed: int) -> dict[str, Tensor]:
    """The scores of the methods that train an :class:`AttentionHead` (generic stage, then personal stage).

    ``expansion.answered`` are the pairs the personal stage fine-tunes on; ``hists`` are the rating
    histograms of ``ref_ids``.
    """
    args, methods, _, _, device, generic_settings, personal_settings, _, _, _, feats, channels = _CTX
    scores: dict[str, Tensor] = {}

    def run(kind: str, attention: bool, losses: list[str], generic_name: str | None,
            min_references: int = args.min_references) -> None:
        table, row = feats[kind]
        ref_feats = table.rows([row[i] for i in ref_ids])
        torch.manual_seed(seed)
        head = AttentionHead(channels, attention=attention).to(device)
        generic_stage(head, ref_feats, hists, table.z3[[row[i] for i in train]].float(), args.k,
                      generic_settings, seed, device, min_references)
        test_rows = [row[i] for i in test]
        if generic_name:
            scores[generic_name] = head_scores(head, table, test_rows)
        if expansion.answered:
            index = torch.tensor([[row[a], row[b]] for a, b in expansion.answered])
            for name, settings in losses:
                tuned = copy.deepcopy(head)
                personal_stage(tuned, table, index, settings, seed, device)
                scores[name] = head_scores(tuned, table, test_rows)

    pretrained_losses = [(m, personal_settings[args.personal] if m == "full" else
                          replace(personal_settings["paper"], loss={"paper": "hinge"}.get(m, m)))
                         for m in ("full", "paper", "exp", "logistic") if m in methods]
    if pretrained_losses or "generic" in methods:
        run("pretrained", True, pretrained_losses, "generic" if "generic" in methods else None)
    if "paper-knn" in methods:
        run("pretrained", True, [("paper-knn", personal_settings[args.personal])], None, min_references=0)
    if "no-attention" in methods:
        run("pretrained", False, [("no-attention", personal_settings[args.personal])], None)
    if "no-pretraining" in methods:
        run("random", True, [("no-pretraining", personal_settings[args.personal])], None)
    return scores


def baseline_scores(train_pairs: list[tuple[str, str]], consensus: dict[str, float], ref_ids: list[str],
                    train: list[str], test: list[str]) -> dict[str, Tensor]:
    """The scores of the baselines that train no head: ``consensus``, ``linear`` and ``ranksvm``.

    ``train_pairs`` are the drawn pairs with their transitive expansion (winner first); ``consensus`` maps
    each reference photo to the other participants' mean score.
    """
    args, methods, _, _, _, _, _, _, _, _, feats, _ = _CTX
    scores: dict[str, Tensor] = {}
    if "consensus" in methods:
        scores["consensus"] = torch.tensor([consensus.get(i, math.nan) for i in test])
    if "linear" in methods:
        row = feats["probe_rows"]
        ref_scores = torch.tensor([consensus[i] for i in ref_ids])
        index = torch.tensor([[row[a], row[b]] for a, b in train_pairs]) if train_pairs else None
        scores["linear"] = linear_probe(feats["probe"], [row[i] for i in ref_ids], ref_scores,
                                        [row[i] for i in train], [row[i] for i in test], index,
                                        args.linear_l2)
    if "ranksvm" in methods and train_pairs:
        table, row = feats["pretrained"]
        w = rank_svm(table.z3, torch.tensor([[row[a], row[b]] for a, b in train_pairs]))
        scores["ranksvm"] = torch.nn.functional.normalize(table.z3[[row[i] for i in test]].float(), dim=1) @ w
    return scores


_CTX: tuple = ()


def _init_worker(context: tuple, threads: int) -> None:
    global _CTX
    _CTX = context
    torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="folder with images.csv and images/")
    ap.add_argument("--ratings", type=Path, required=True, help="participant,image,rating CSV")
    ap.add_argument("--participants", type=int, default=0, help="first N eligible participants (0: all)")
    ap.add_argument("--x", default="10,100", help="training sizes")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--backbone", default=DEFAULT_BACKBONE)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--min-references", type=int, default=MIN_REFERENCES,
                    help="K grows until the generic stage has this many references (paper-knn: 0)")
    ap.add_argument("--scale", default="1,7", help="rating scale lo,hi")
    ap.add_argument("--cache", type=Path, default=None, help="feature cache folder")
    ap.add_argument("--generic-epochs", type=int, default=GenericSettings.epochs)
    ap.add_argument("--generic-lr", type=float, default=GenericSettings.lr)
    ap.add_argument("--personal", default="taste", choices=tuple(PERSONAL_PRESETS),
                    help="the personal stage of the full method (persaes.core.train.PERSONAL_PRESETS)")
    ap.add_argument("--personal-iterations", type=parse_iterations, default=None,
                    help="head fine-tuning iterations (overrides the preset's)")
    ap.add_argument("--personal-epochs", type=float, default=None, help="cap on passes over the pairs (0: no cap)")
    ap.add_argument("--personal-lr", type=float, default=None)
    ap.add_argument("--anchor", type=float, default=None)
    ap.add_argument("--layers", default=None, choices=("all", "fc"))
    ap.add_argument("--linear-l2", type=float, default=PERSON_L2,
                    help="pull toward zero of the linear method's per-person part")
    ap.add_argument("--workers", type=int, default=1, help="participants evaluated in parallel processes")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)

    started = time.time()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        ap.error(f"unknown methods: {', '.join(sorted(unknown))}")
    xs = [int(v) for v in args.x.split(",")]
    scale = tuple(float(v) for v in args.scale.split(","))
    device = resolve_device(args.device)
    generic_settings = GenericSettings(epochs=args.generic_epochs, lr=args.generic_lr)
    overrides = {"iterations": args.personal_iterations, "lr": args.personal_lr, "anchor": args.anchor,
                 "layers": args.layers}
    if args.personal_epochs is not None:
        overrides["epochs"] = args.personal_epochs or None
    personal_settings = {name: replace(preset, **{k: v for k, v in overrides.items() if v is not None})
                         for name, preset in PERSONAL_PRESETS.items()}

    images_csv = args.data / "images.csv"
    with open(images_csv, newline="", encoding="utf-8-sig") as handle:
        files = {row["image"]: args.data / row["file"] for row in csv.DictReader(handle)}
    people = read_participants(args.ratings)
    need = max(xs) + 10
    eligible = sorted((p for p, r in people.items() if len(r) >= need), key=_order)
    chosen = eligible[: args.participants] if args.participants else eligible
    ids = sorted(files)

    feats = {"pretrained": all_features(args.data, ids, files, args.backbone, "pretrained", device, args.cache,
                                        args.seed)}
    if "no-pretraining" in methods:
        feats["random"] = all_features(args.data, ids, files, args.backbone, "random", device, args.cache, args.seed)
    if "linear" in methods:
        spec = get_spec(args.backbone)
        model = AestheticModel(spec, create_backbone(args.backbone, "pretrained"), AttentionHead(spec.channels)).eval()
        rows = feats["pretrained"][1]
        readable = sorted(rows, key=rows.get)
        feats["probe"] = probe_features(model.to(device), [files[i] for i in readable]).cpu()
        feats["probe_rows"] = {name: n for n, name in enumerate(readable)}
    channels = get_spec(args.backbone).channels

    context = (args, methods, xs, scale, device, generic_settings, personal_settings, people, images_csv, ids, feats,
               channels)
    results: dict[str, dict[int, list[tuple[float, float]]]] = {m: defaultdict(list) for m in methods}
    skipped = 0
    workers = max(1, args.workers)
    if workers == 1:
        _init_worker(context, torch.get_num_threads())
        outcomes = map(evaluate_participant, chosen)
    else:  # forked workers share the cached features copy-on-write; one thread each
        pool = multiprocessing.get_context("fork").Pool(workers, _init_worker, (context, 1))
        outcomes = pool.imap(evaluate_participant, chosen)
    for n, (pid, (partial, skips)) in enumerate(zip(chosen, outcomes), 1):
        skipped += skips
        for name, per_x in partial.items():
            for x, values in per_x.items():
                results[name][x].extend(values)
        print(f"[{n}/{len(chosen)}] participant {pid} done ({time.time() - started:.0f} s)", file=sys.stderr)
    if workers > 1:
        pool.close()

    summary: dict[str, dict[str, dict[str, float]]] = {}
    for name in methods:
        summary[name] = {}
        for x in xs:
            rows = [r for r in results[name][x] if not math.isnan(r[0])]
            rhos = [r[0] for r in rows]
            summary[name][str(x)] = {
                "spearman_mean": statistics.fmean(rhos) if rhos else math.nan,
                "spearman_std": statistics.pstdev(rhos) if len(rhos) > 1 else 0.0,
                "pairwise_acc": statistics.fmean(r[1] for r in rows) if rows else math.nan,
                "n": len(rows),
                # every evaluated split in participant order (None where ρ is undefined), for paired comparisons
                "spearman_per_split": [None if math.isnan(r[0]) else r[0] for r in results[name][x]],
            }
    out = {
        "methods": summary,
        "participants_used": len(chosen),
        "participants_skipped": skipped,
        "seconds": round(time.time() - started, 1),
        "command": " ".join(["python", "benchmarks/personal_taste.py", *(argv if argv is not None else sys.argv[1:])]),
        "settings": {"generic": generic_settings.as_dict(),
                     "personal": {n: s.as_dict() for n, s in personal_settings.items()}, "k": args.k,
                     "min_references": args.min_references,
                     "backbone": args.backbone, "repeats": args.repeats, "seed": args.seed},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    print(markdown_table(summary, xs))
    if "full" in summary and "generic" in summary:
        for x in xs:
            mean, error, n = paired_difference(summary["full"][str(x)]["spearman_per_split"],
                                               summary["generic"][str(x)]["spearman_per_split"])
            print(f"\nfull − generic at X = {x}: {mean:+.4f} ± {error:.4f} (mean ± standard error over {n} splits)")
    print(f"\nparticipants used: {len(chosen)}, skipped splits (constant test ratings): {skipped}, "
          f"{out['seconds']} s")
    return 0


def paired_difference(a: list[float | None], b: list[float | None]) -> tuple[float, float, int]:
    """Mean and standard error of ``a − b`` over the splits where both have a value."""
    diffs = [p - q for p, q in zip(a, b) if p is not None and q is not None]
    if not diffs:
        return math.nan, math.nan, 0
    error = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
    return statistics.fmean(diffs), error, len(diffs)


def markdown_table(summary: dict[str, dict[str, dict[str, float]]], xs: list[int]) -> str:
    head = "| method | " + " | ".join(f"ρ X={x} | acc X={x}" for x in xs) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(xs))]
    for name, per_x in summary.items():
        cells = []
        for x in xs:
            s = per_x[str(x)]
            cells.append(f"{s['spearman_mean']:.3f} ± {s['spearman_std']:.3f} | {s['pairwise_acc']:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
