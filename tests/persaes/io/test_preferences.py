"""Preference files, pair sampling and the paper's one-step transitivity."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from persaes.io.preferences import (
    Answer,
    append_answer,
    append_undo,
    expand_transitive,
    pairs_to_indices,
    read_answers,
    resolve_answers,
    sample_pairs,
)

# ---------------------------------------------------------------- transitivity


def _brute_force(pairs: list[tuple[str, str]]) -> tuple[set, set, set]:
    """Pure-Python reference: (answered, inferred, contradicting unordered pairs)."""
    given_ = set(pairs)
    contra = {frozenset(p) for p in given_ if (p[1], p[0]) in given_}
    answered = {p for p in given_ if frozenset(p) not in contra}
    inferred = {
        (a, c)
        for (a, b) in answered
        for (b2, c) in answered
        if b == b2 and a != c and (a, c) not in answered and (c, a) not in answered
    }
    inferred = {(a, c) for (a, c) in inferred if (c, a) not in inferred}
    return answered, inferred, contra


def test_paper_example() -> None:
    # I1>I2 and I2>I3 give I1>I3; I3>I4 must not give I1>I4 (that needs two steps).
    result = expand_transitive([("I1", "I2"), ("I2", "I3"), ("I3", "I4")])
    assert ("I1", "I3") in result.inferred
    assert ("I1", "I4") not in result.inferred


def test_one_step_only_no_chains() -> None:
    result = expand_transitive([("a", "b"), ("b", "c"), ("c", "d")])
    assert result.inferred == [("a", "c"), ("b", "d")]
    assert result.answered == [("a", "b"), ("b", "c"), ("c", "d")]
    assert result.contradictions == []


def test_contradictions_reported_and_dropped() -> None:
    result = expand_transitive([("a", "b"), ("b", "c"), ("b", "a"), ("a", "b")])
    assert result.contradictions == [("a", "b")]
    assert result.answered == [("b", "c")]
    assert result.inferred == []  # a>b is gone, so no a>c


def test_inferred_never_contradicts_an_answer() -> None:
    # a>b, b>c would give a>c, but c>a was answered (a cycle): nothing inferred for (a, c).
    result = expand_transitive([("a", "b"), ("b", "c"), ("c", "a")])
    assert ("a", "c") not in result.inferred
    assert ("c", "a") not in result.inferred


def test_inferred_both_ways_dropped() -> None:
    # a>b>c gives a>c; c>d>a gives c>a: both dropped. b>d and d>b are dropped the same way.
    result = expand_transitive([("a", "b"), ("b", "c"), ("c", "d"), ("d", "a")])
    assert result.inferred == []


def test_repeats_and_self_pairs() -> None:
    assert expand_transitive([("a", "b"), ("a", "b")]).answered == [("a", "b")]
    with pytest.raises(ValueError, match="same image"):
        expand_transitive([("a", "a")])


def test_empty() -> None:
    result = expand_transitive([])
    assert (result.answered, result.inferred, result.contradictions) == ([], [], [])


_pair_lists = st.lists(
    st.tuples(st.integers(0, 7), st.integers(0, 7)).filter(lambda p: p[0] != p[1]).map(
        lambda p: (f"i{p[0]}", f"i{p[1]}")
    ),
    max_size=30,
)


@settings(max_examples=100, deadline=None)
@given(_pair_lists)
def test_matches_brute_force_and_invariants(pairs: list[tuple[str, str]]) -> None:
    result = expand_transitive(pairs)
    answered, inferred, contra = _brute_force(pairs)
    assert set(result.answered) == answered
    assert len(result.answered) == len(answered)
    assert set(result.inferred) == inferred
    assert len(result.inferred) == len(inferred)
    assert {frozenset(p) for p in result.contradictions} == contra
    assert len(result.contradictions) == len(contra)
    for a, c in result.inferred:
        assert (a, c) not in answered and (c, a) not in answered
        assert any((a, b) in answered and (b, c) in answered for b in {x for p in answered for x in p})


@settings(max_examples=50, deadline=None)
@given(_pair_lists)
def test_order_of_answers_does_not_change_sets(pairs: list[tuple[str, str]]) -> None:
    shuffled = list(pairs)
    random.Random(0).shuffle(shuffled)
    a, b = expand_transitive(pairs), expand_transitive(shuffled)
    assert set(a.inferred) == set(b.inferred)
    assert set(a.answered) == set(b.answered)


def test_large_random_graph_runs() -> None:
    gen = torch.Generator().manual_seed(0)
    edges = torch.randint(0, 10_000, (20_000, 2), generator=gen)
    edges = edges[edges[:, 0] != edges[:, 1]]
    pairs = [(f"img{a}", f"img{b}") for a, b in edges.tolist()]
    result = expand_transitive(pairs)
    answered = set(result.answered)
    assert len(result.inferred) > 10_000  # about 2 answers per image: ~1 two-step path per edge
    assert not any((a, c) in answered or (c, a) in answered for a, c in result.inferred)


def test_pairs_to_indices() -> None:
    idx = pairs_to_indices([("b", "a"), ("c", "b")], ["a", "b", "c"])
    assert idx.dtype == torch.long
    assert idx.tolist() == [[1, 0], [2, 1]]
    assert pairs_to_indices([], ["a"]).shape == (0, 2)
    with pytest.raises(KeyError, match="'z'"):
        pairs_to_indices([("a", "z")], ["a"])


# ---------------------------------------------------------------- preference files


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "prefs.jsonl"
    written = [Answer("a.jpg", "b.jpg", t=1.5), Answer("c.jpg", "a.jpg", tie=True), Answer("/x/d.jpg", "b.jpg")]
    for answer in written:
        append_answer(path, answer)
    answers, problems = read_answers(path)
    assert answers == written
    assert problems == []
    lines = path.read_text().splitlines()
    assert json.loads(lines[1]) == {"winner": "c.jpg", "loser": "a.jpg", "tie": True}


def test_cut_last_line_loads_complete_answers_and_next_append_is_separate(tmp_path: Path) -> None:
    path = tmp_path / "prefs.jsonl"
    for winner, loser in [("a", "b"), ("b", "c"), ("c", "d")]:
        append_answer(path, Answer(winner, loser))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 12])  # crash in the middle of line 3
    answers, problems = read_answers(path)
    assert answers == [Answer("a", "b"), Answer("b", "c")]
    assert len(problems) == 1 and f"{path}:3:" in problems[0] and "incomplete" in problems[0]

    append_answer(path, Answer("d", "e"))
    answers, problems = read_answers(path)
    assert answers == [Answer("a", "b"), Answer("b", "c"), Answer("d", "e")]
    assert len(problems) == 1 and f"{path}:3:" in problems[0]


def test_bad_lines_named_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "prefs.jsonl"
    path.write_text(
        "\n".join(
            [
                '{"winner": "a", "loser": "b"}',
                "",
                "{not json",
                '{"winner": "a"}',
                '{"winner": "a", "loser": "a"}',
                "[1, 2]",
                '{"winner": "c", "loser": "d", "t": "yesterday"}',
                '{"winner": "c", "loser": "d", "t": 3}',
            ]
        )
        + "\n"
    )
    answers, problems = read_answers(path)
    assert answers == [Answer("a", "b"), Answer("c", "d", t=3)]
    assert [p.split(": ", 1)[0] for p in problems] == [f"{path}:{n}" for n in (3, 4, 5, 6, 7)]
    assert "not valid JSON" in problems[0]
    assert "missing key(s) loser" in problems[1]
    assert "same image" in problems[2]


def test_undo_lines(tmp_path: Path) -> None:
    path = tmp_path / "prefs.jsonl"
    append_undo(path)  # nothing to undo yet: reported, ignored
    append_answer(path, Answer("a", "b"))
    append_answer(path, Answer("b", "c", tie=True))
    append_answer(path, Answer("c", "d"))
    append_undo(path)
    append_undo(path)  # takes back the tie too
    append_answer(path, Answer("e", "f"))
    answers, problems = read_answers(path)
    assert answers == [Answer("a", "b"), Answer("e", "f")]
    assert len(problems) == 1 and f"{path}:1:" in problems[0] and "undo" in problems[0]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="preference file not found"):
        read_answers(tmp_path / "none.jsonl")


def test_answer_checks() -> None:
    with pytest.raises(ValueError, match="same image"):
        Answer("a", "a")
    with pytest.raises(ValueError, match="winner"):
        Answer("", "a")


def test_resolve_answers(tmp_path: Path) -> None:
    root = tmp_path / "album"
    files = ["a.jpg", "sub/b.jpg", "c.jpg"]
    answers = [
        Answer("a.jpg", "sub/b.jpg"),
        Answer(str(root / "sub" / "b.jpg"), "./c.jpg"),  # absolute and ./ both resolve
        Answer("a.jpg", "sub/b.jpg"),  # exact repeat
        Answer("a.jpg", "c.jpg", tie=True),  # tie: no training pair
        Answer("gone.jpg", "a.jpg"),
        Answer("c.jpg", "gone.jpg"),
        Answer("/elsewhere/a.jpg", "c.jpg"),
    ]
    pairs, problems = resolve_answers(answers, root, files)
    assert pairs == [("a.jpg", "sub/b.jpg"), ("sub/b.jpg", "c.jpg")]
    assert len(problems) == 3
    assert "'gone.jpg' (in 2 answer(s)) is not in the album" in problems[0]
    assert "'/elsewhere/a.jpg'" in problems[1]
    assert problems[2].startswith("1 repeated answer(s)")


# ---------------------------------------------------------------- sampling


def test_sample_pairs_distinct_seeded_and_excluding() -> None:
    items = [f"i{k}" for k in range(30)]
    exclude = {frozenset(("i0", "i1")), frozenset(("i2", "i3"))}
    pairs = sample_pairs(items, 100, seed=3, exclude=exclude)
    assert len(pairs) == 100
    unordered = [frozenset(p) for p in pairs]
    assert len(set(unordered)) == 100
    assert all(len(p) == 2 and p <= set(items) for p in unordered)
    assert not exclude & set(unordered)
    assert sample_pairs(items, 100, seed=3, exclude=exclude) == pairs
    assert sample_pairs(items, 100, seed=4, exclude=exclude) != pairs


def test_sample_pairs_all_when_fewer_possible() -> None:
    items = ["a", "b", "c", "d"]
    pairs = sample_pairs(items, 50, seed=0, exclude={frozenset(("a", "b"))})
    assert len(pairs) == 5
    assert {frozenset(p) for p in pairs} == {
        frozenset(p) for p in [("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]
    }
    assert sample_pairs(["a"], 3, seed=0) == []
    assert sample_pairs(items, 0, seed=0) == []


def test_sample_pairs_many_items_few_pairs() -> None:
    items = [f"img{k}" for k in range(10_000)]
    pairs = sample_pairs(items, 2_000, seed=1)
    assert len({frozenset(p) for p in pairs}) == 2_000


def test_sample_pairs_checks() -> None:
    with pytest.raises(ValueError, match="duplicates"):
        sample_pairs(["a", "a", "b"], 1, seed=0)
    with pytest.raises(ValueError, match="n must be"):
        sample_pairs(["a", "b"], -1, seed=0)
