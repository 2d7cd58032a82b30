"""Reference-set readers and score-histogram resampling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from persaes.io.references import (
    ReferenceSet,
    load_references,
    ratings_to_histogram,
    read_ava,
    read_ratings_csv,
    read_score_csv,
    resample_histogram,
)

SCORES = torch.arange(1, 11, dtype=torch.float64)
OASIS = Path("/work/shared/data/oasis")


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (200, 120, 40)).save(path)
    return path


def _mean(hist: torch.Tensor) -> float:
    return float(hist.double() @ SCORES)


# ---------------------------------------------------------------- resampling


def test_ratings_to_histogram_examples() -> None:
    hist = ratings_to_histogram(torch.tensor([1.0, 7.0]), (1, 7))
    assert torch.allclose(hist, torch.tensor([0.5, 0, 0, 0, 0, 0, 0, 0, 0, 0.5]))
    hist = ratings_to_histogram(torch.tensor([4.0]), (1, 7))  # 4 on 1..7 -> 5.5
    assert torch.allclose(hist, torch.tensor([0, 0, 0, 0, 0.5, 0.5, 0, 0, 0, 0]))
    assert ratings_to_histogram(torch.tensor([7.0]), (1, 10))[6] == 1.0  # identity scale


def test_ratings_to_histogram_checks() -> None:
    with pytest.raises(ValueError, match=r"lie in \[1.0, 7.0\]"):
        ratings_to_histogram(torch.tensor([8.0]), (1, 7))
    with pytest.raises(ValueError, match="non-empty"):
        ratings_to_histogram(torch.tensor([]), (1, 7))
    with pytest.raises(ValueError, match="lo < hi"):
        ratings_to_histogram(torch.tensor([1.0]), (7, 1))


_scales = st.tuples(st.integers(-5, 5), st.integers(1, 100)).map(lambda t: (float(t[0]), float(t[0] + t[1])))


@settings(max_examples=150, deadline=None)
@given(_scales, st.lists(st.floats(0, 1), min_size=1, max_size=40))
def test_ratings_histogram_mass_and_linear_mean(scale: tuple[float, float], unit: list[float]) -> None:
    lo, hi = scale
    ratings = torch.tensor([lo + u * (hi - lo) for u in unit], dtype=torch.float64)
    hist = ratings_to_histogram(ratings, scale)
    assert hist.shape == (10,)
    assert (hist >= 0).all()
    assert abs(float(hist.sum()) - 1) < 1e-5
    expected = 1 + (float(ratings.mean()) - lo) * 9 / (hi - lo)
    assert abs(_mean(hist) - expected) < 1e-4


@settings(max_examples=150, deadline=None)
@given(_scales, st.lists(st.floats(0, 50), min_size=2, max_size=12).filter(lambda h: sum(h) > 1e-3))
def test_resample_histogram_mass_and_linear_mean(scale: tuple[float, float], counts: list[float]) -> None:
    lo, hi = scale
    hist = torch.tensor(counts, dtype=torch.float64)
    out = resample_histogram(hist, scale)
    assert out.shape == (10,)
    assert abs(float(out.sum()) - float(hist.sum())) < 1e-4 * max(1.0, float(hist.sum()))
    source_scores = torch.linspace(lo, hi, len(counts), dtype=torch.float64)
    mean = float(hist @ source_scores / hist.sum())
    assert abs(_mean(out) / float(out.sum()) - (1 + (mean - lo) * 9 / (hi - lo))) < 1e-4


def test_resample_matches_ratings_for_integer_ratings_and_batches() -> None:
    ratings = torch.tensor([1, 2, 2, 5, 7, 7, 7], dtype=torch.float64)
    counts = torch.bincount(ratings.long() - 1, minlength=7).double()
    direct = ratings_to_histogram(ratings, (1, 7))
    assert torch.allclose(resample_histogram(counts, (1, 7)) / counts.sum(), direct, atol=1e-6)
    batch = resample_histogram(torch.stack([counts, counts * 2]), (1, 7))
    assert batch.shape == (2, 10)
    assert torch.allclose(batch[1], 2 * batch[0])


# ---------------------------------------------------------------- ReferenceSet


def test_reference_set_subset_and_means(tmp_path: Path) -> None:
    hists = torch.zeros(3, 10)
    hists[0, 0] = 1  # mean 1
    hists[1, 9] = 1  # mean 10
    hists[2, 4:6] = 0.5  # mean 5.5
    refs = ReferenceSet(["a", "b", "c"], [tmp_path / n for n in "abc"], hists, ["note"])
    assert len(refs) == 3
    assert torch.allclose(refs.mean_scores(), torch.tensor([1.0, 10.0, 5.5]))
    sub = refs.subset(torch.tensor([2, 0]))
    assert sub.ids == ["c", "a"] and sub.paths == [tmp_path / "c", tmp_path / "a"]
    assert torch.allclose(sub.mean_scores(), torch.tensor([5.5, 1.0]))
    assert sub.problems == ["note"]
    with pytest.raises(ValueError, match="rows summing to 1"):
        ReferenceSet(["a"], [tmp_path], torch.ones(1, 10), [])
    with pytest.raises(ValueError, match="hists must be 1×10"):
        ReferenceSet(["a"], [tmp_path], torch.ones(1, 7) / 7, [])


# ---------------------------------------------------------------- AVA


def test_read_ava(tmp_path: Path) -> None:
    images = tmp_path / "images"
    _image(images / "100.jpg")
    _image(images / "101.jpg")
    (images / "103.jpg").write_bytes(b"")  # empty file
    ava = tmp_path / "AVA.txt"
    ava.write_text(
        "1 100 0 0 0 0 1 3 0 0 0 0 1 2 1396\n"
        "2 101 1 1 1 1 1 1 1 1 1 1 0 0 1396\n"
        "3 102 0 0 0 0 0 5 0 0 0 0 0 0 1396\n"  # image missing
        "4 103 0 0 0 0 0 5 0 0 0 0 0 0 1396\n"  # image empty
        "5 104 0 0 0 0 0 0 0 0 0 0 0 0 1396\n"  # no votes
        "6 105 0 0 x\n"  # malformed
        "\n"
    )
    refs = read_ava(ava, images)
    assert refs.ids == ["100", "101"]
    assert refs.paths == [images / "100.jpg", images / "101.jpg"]
    assert torch.allclose(refs.hists[0], torch.tensor([0, 0, 0, 0, 0.25, 0.75, 0, 0, 0, 0]))
    assert torch.allclose(refs.mean_scores(), torch.tensor([5.75, 5.5]))
    assert [p.split(": ", 1)[0] for p in refs.problems] == [f"{ava}:{n}" for n in (3, 4, 5, 6)]
    assert "missing" in refs.problems[0] and "empty file" in refs.problems[1]
    with pytest.raises(FileNotFoundError, match="AVA file not found"):
        read_ava(tmp_path / "nope.txt", images)


# ---------------------------------------------------------------- per-person ratings


def _ratings_files(tmp_path: Path, column: str = "beauty") -> tuple[Path, Path]:
    data = tmp_path / "data"
    _image(data / "images" / "A.jpg")
    _image(data / "images" / "B.jpg")
    _image(data / "images" / "C.jpg")
    table = data / "images.csv"
    table.write_text(
        "image,file,category\n"
        "A,images/A.jpg,Object\n"
        "B,images/B.jpg,Scenery\n"
        "C,images/C.jpg,Animal\n"
        "D,images/D.jpg,Person\n"  # file missing
    )
    ratings = data / "ratings.csv"
    ratings.write_text(
        f"participant,image,{column}\n"
        "1,A,1\n"
        "2,A,7\n"
        "1,B,4\n"
        "2,B,5\n"
        "2,C,6\n"  # only participant 2 rated C
        "1,D,3\n"
        "3,E,2\n"  # E is not in the table
        "3,A,9\n"  # outside 1..7
        "3,A,good\n"  # not a number
    )
    return ratings, table


def test_read_ratings_csv(tmp_path: Path) -> None:
    ratings, table = _ratings_files(tmp_path)
    refs = read_ratings_csv(ratings, table, scale=(1, 7))
    assert refs.ids == ["A", "B", "C"]
    assert refs.paths[0] == table.parent / "images" / "A.jpg"
    assert torch.allclose(refs.hists[0], ratings_to_histogram(torch.tensor([1.0, 7.0]), (1, 7)))
    assert torch.allclose(refs.hists[1], ratings_to_histogram(torch.tensor([4.0, 5.0]), (1, 7)))
    expected_means = [1 + (m - 1) * 1.5 for m in (4.0, 4.5, 6.0)]
    assert torch.allclose(refs.mean_scores(), torch.tensor(expected_means))
    text = "\n".join(refs.problems)
    assert f"{ratings}:9: rating 9 outside scale 1-7" in text
    assert f"{ratings}:10: rating 'good' is not a number" in text
    assert f"{ratings}:8: image 'E' is not in {table}" in text
    assert f"{table}:5: image file {table.parent / 'images' / 'D.jpg'} missing" in text
    assert len(refs.problems) == 4


def test_read_ratings_csv_excluding_participants(tmp_path: Path) -> None:
    ratings, table = _ratings_files(tmp_path)
    refs = read_ratings_csv(ratings, table, exclude_participants=[2])
    assert refs.ids == ["A", "B"]  # C had only participant 2's rating; D has no file
    assert torch.allclose(refs.hists[0], ratings_to_histogram(torch.tensor([1.0]), (1, 7)))
    assert torch.allclose(refs.hists[1], ratings_to_histogram(torch.tensor([4.0]), (1, 7)))
    assert any("image 'C' has no ratings after excluding 1 participant(s)" in p for p in refs.problems)


def test_read_ratings_csv_column_name_and_root(tmp_path: Path) -> None:
    ratings, table = _ratings_files(tmp_path, column="rating")
    root = tmp_path / "root"
    root.mkdir()
    (table.parent / "images").rename(root / "images")
    refs = read_ratings_csv(ratings, table)  # files no longer next to the table
    assert refs.ids == []
    assert sum("missing" in p for p in refs.problems) == 4
    refs = read_ratings_csv(ratings, table, root=root, rating_column="rating")
    assert refs.ids == ["A", "B", "C"]
    assert refs.paths[2] == root / "images" / "C.jpg"
    with pytest.raises(ValueError, match="no rating column 'beauty'"):
        read_ratings_csv(ratings, table, rating_column="beauty")


@pytest.mark.skipif(not (OASIS / "ratings_dev.csv").is_file(), reason="OASIS data not present")
def test_reads_real_oasis() -> None:
    refs = load_references(f"ratings:{OASIS / 'ratings_dev.csv'}:{OASIS / 'images.csv'}:1-7")
    assert len(refs) > 800
    assert refs.problems == []
    means = refs.mean_scores()
    assert (means >= 1).all() and (means <= 10).all()


# ---------------------------------------------------------------- score CSV and specs


def test_read_score_csv_scores(tmp_path: Path) -> None:
    _image(tmp_path / "p" / "a.jpg")
    _image(tmp_path / "b.jpg")
    csv_file = tmp_path / "scores.csv"
    csv_file.write_text("file,score\np/a.jpg,7.25\nb.jpg,11\nmissing.jpg,5\nb.jpg,oops\nb.jpg,3\n")
    refs = read_score_csv(csv_file)
    assert refs.ids == ["p/a.jpg", "b.jpg"]
    assert torch.allclose(refs.mean_scores(), torch.tensor([7.25, 3.0]))
    assert torch.allclose(refs.hists[0, 6:8], torch.tensor([0.75, 0.25]))
    assert [p.split(": ", 1)[0] for p in refs.problems] == [f"{csv_file}:{n}" for n in (3, 4, 5)]


def test_read_score_csv_histograms(tmp_path: Path) -> None:
    _image(tmp_path / "a.jpg")
    csv_file = tmp_path / "h.csv"
    header = "file," + ",".join(f"h{i}" for i in range(1, 11))
    csv_file.write_text(f"{header}\na.jpg,0,0,0,0,2,2,0,0,0,0\na.jpg,0,0,0,0,0,0,0,0,0,0\n")
    refs = read_score_csv(csv_file)
    assert torch.allclose(refs.hists[0], torch.tensor([0, 0, 0, 0, 0.5, 0.5, 0, 0, 0, 0]))
    assert len(refs.problems) == 1 and "positive sum" in refs.problems[0]
    (tmp_path / "bad.csv").write_text("path,score\na.jpg,3\n")
    with pytest.raises(ValueError, match="header must be"):
        read_score_csv(tmp_path / "bad.csv")


def test_load_references_specs(tmp_path: Path) -> None:
    _image(tmp_path / "img" / "1.jpg")
    (tmp_path / "AVA.txt").write_text("1 1 0 0 0 0 0 1 0 0 0 0 0 0 0\n")
    assert load_references(f"ava:{tmp_path / 'AVA.txt'}:{tmp_path / 'img'}").ids == ["1"]
    (tmp_path / "s.csv").write_text("file,score\nimg/1.jpg,4\n")
    assert load_references(f"csv:{tmp_path / 's.csv'}").ids == ["img/1.jpg"]
    assert load_references(str(tmp_path / "s.csv")).ids == ["img/1.jpg"]
    ratings, table = _ratings_files(tmp_path)
    refs = load_references(f"ratings:{ratings}:{table}:0-10")
    b = refs.ids.index("B")  # ratings 4 and 5: mean 4.5 on 0..10 -> 1 + 4.5 * 0.9 on 1..10
    assert torch.allclose(refs.mean_scores()[b], torch.tensor(1 + 4.5 * 0.9))
    for bad in ["ava:only_one", "ratings:a.csv:b.csv:1to7", "foo:bar", "x.txt", "csv:"]:
        with pytest.raises(ValueError, match="reference spec"):
            load_references(bad)
