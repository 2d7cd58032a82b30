from __future__ import annotations

import importlib.util
import json
import math
import random
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from persaes.eval.protocol import draw_pairs, heldout_photos, pairwise_accuracy, spearman, split_ratings
from persaes.io.references import read_ratings_csv

ROOT = Path(__file__).resolve().parents[3]


def test_split_is_disjoint_seeded_and_complete() -> None:
    ratings = {f"im{i}": float(i % 7 + 1) for i in range(40)}
    train, test = split_ratings(ratings, 10, seed=3)
    assert len(train) == 10 and not set(train) & set(test) and set(train) | set(test) == set(ratings)
    assert split_ratings(ratings, 10, seed=3) == (train, test) and split_ratings(ratings, 10, seed=4) != (train, test)
    with pytest.raises(ValueError):
        split_ratings(ratings, 39, seed=0)


def test_pairs_come_from_training_images_and_skip_ties() -> None:
    ratings = {f"im{i}": float(i % 4) for i in range(30)}
    train, _ = split_ratings(ratings, 10, seed=0)
    pairs = draw_pairs(ratings, train, 100, seed=0)
    distinct_untied = sum(1 for i, a in enumerate(train) for b in train[i + 1:] if ratings[a] != ratings[b])
    assert len(pairs) == distinct_untied  # with X = 10 every one of the 45 pairs is drawn
    assert all(a in train and b in train and ratings[a] > ratings[b] for a, b in pairs)
    big = {f"im{i}": float(i) for i in range(200)}
    drawn = draw_pairs(big, sorted(big)[:100], 100, seed=1)
    assert len(drawn) == 100 and len({frozenset(p) for p in drawn}) == 100


def test_spearman_and_pairwise_accuracy_on_known_cases() -> None:
    truth = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(torch.tensor([10.0, 20.0, 30.0, 45.0]), truth) == pytest.approx(1.0)
    assert spearman(-truth, truth) == pytest.approx(-1.0)
    # with ties: ranks [1.5, 1.5, 3, 4] against [1, 2, 3, 4] give ρ = 0.9487
    assert spearman(torch.tensor([1.0, 1.0, 2.0, 3.0]), truth) == pytest.approx(0.948683, abs=1e-5)
    assert math.isnan(spearman(torch.ones(4), truth))
    assert pairwise_accuracy(torch.tensor([1.0, 3.0, 2.0]), torch.tensor([1.0, 2.0, 3.0])) == pytest.approx(2 / 3)
    assert pairwise_accuracy(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 2.0])) == pytest.approx(0.5)
    assert math.isnan(pairwise_accuracy(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 3.0])))


def test_heldout_photos_are_fixed_pixabay_photos(tmp_path: Path) -> None:
    table = tmp_path / "images.csv"
    rows = ["image,file,category,source"] + [
        f"p{i},images/p{i}.jpg,Object,{'Pixabay' if i % 2 else 'Flickr'}" for i in range(50)
    ]
    table.write_text("\n".join(rows) + "\n")
    held = heldout_photos(table, n=10, seed=0)
    assert held == heldout_photos(table, n=10, seed=0) and len(held) == 10
    assert all(int(name[1:]) % 2 == 1 for name in held)


def _synthetic_set(root: Path) -> Path:
    """24 small images, three participants rating 20 each; participant 3 rates everything 4."""
    (root / "images").mkdir()
    rng = random.Random(0)
    lines = ["image,file,category,source"]
    for i in range(24):
        colour = tuple(rng.randrange(256) for _ in range(3))
        Image.new("RGB", (48, 40), colour).save(root / "images" / f"im{i}.jpg")
        lines.append(f"im{i},images/im{i}.jpg,Object,Pixabay")
    (root / "images.csv").write_text("\n".join(lines) + "\n")
    ratings = ["participant,image,beauty"]
    for pid in (1, 2, 3):
        for i in rng.sample(range(24), 20):
            ratings.append(f"{pid},im{i},{4 if pid == 3 else rng.randint(1, 7)}")
    (root / "ratings.csv").write_text("\n".join(ratings) + "\n")
    return root


def test_leave_one_out_histograms_exclude_the_participant(tmp_path: Path) -> None:
    root = _synthetic_set(tmp_path)
    everyone = read_ratings_csv(root / "ratings.csv", root / "images.csv")
    without = read_ratings_csv(root / "ratings.csv", root / "images.csv", exclude_participants=["3"])
    rated_by_3 = {
        line.split(",")[1] for line in (root / "ratings.csv").read_text().splitlines()[1:] if line.startswith("3,")
    }
    by_id = dict(zip(everyone.ids, everyone.mean_scores().tolist()))
    changed = [i for i, m in zip(without.ids, without.mean_scores().tolist()) if abs(m - by_id[i]) > 1e-6]
    assert changed and set(changed) <= rated_by_3


def test_benchmark_runs_the_protocol_and_counts_constant_participants(tmp_path: Path) -> None:
    root = _synthetic_set(tmp_path)
    spec = importlib.util.spec_from_file_location("personal_taste", ROOT / "benchmarks" / "personal_taste.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["personal_taste"] = module  # worker processes find its functions by module name
    spec.loader.exec_module(module)
    out = tmp_path / "out.json"
    code = module.main(["--data", str(root), "--ratings", str(root / "ratings.csv"), "--x", "5", "--participants", "3",
                        "--methods", "full,generic,consensus,ranksvm", "--personal-iterations", "20",
                        "--generic-epochs", "2", "--device", "cpu", "--workers", "2", "--json", str(out)])
    result = json.loads(out.read_text())
    assert code == 0 and result["participants_used"] == 3 and result["participants_skipped"] == 1
    assert set(result["methods"]) == {"full", "generic", "consensus", "ranksvm"}
    for method in result["methods"].values():
        cell = method["5"]
        assert cell["n"] == 2 and -1 <= cell["spearman_mean"] <= 1 and 0 <= cell["pairwise_acc"] <= 1
        # one entry per evaluated split in participant order (the skipped participant has none)
        values = cell["spearman_per_split"]
        assert len(values) == 2 and abs(sum(values) / 2 - cell["spearman_mean"]) < 1e-12
    full, generic = (result["methods"][m]["5"]["spearman_per_split"] for m in ("full", "generic"))
    mean, _, n = module.paired_difference(full, generic)
    assert n == 2 and abs(mean - (result["methods"]["full"]["5"]["spearman_mean"]
                                  - result["methods"]["generic"]["5"]["spearman_mean"])) < 1e-12
    mean, error, n = module.paired_difference([0.5, None, 0.2], [0.1, 0.3, 0.4])  # pairs: +0.4 and −0.2
    assert n == 2 and abs(mean - 0.1) < 1e-12 and abs(error - 0.3) < 1e-12
