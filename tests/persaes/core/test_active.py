from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest
import torch

from persaes.app.collect import CollectSession, album_photos
from persaes.core.active import ActivePairs
from persaes.io.preferences import read_answers


def _chooser(n: int = 12, seed: int = 0) -> ActivePairs:
    g = torch.Generator().manual_seed(seed)
    return ActivePairs([f"p{i}.jpg" for i in range(n)], torch.randn(n, generator=g), torch.randn(n, 5, generator=g),
                       seed=seed)


def test_never_repeats_an_answered_pair_and_stops_when_all_are_asked() -> None:
    chooser = _chooser(n=6)
    answered: list[tuple[str, str]] = []
    while (pair := chooser.next_pair(answered)) is not None:
        assert frozenset(pair) not in {frozenset(p) for p in answered} and pair[0] != pair[1]
        answered.append(pair)
    assert len(answered) == 15  # every pair of 6 photos, once


def test_serves_only_album_photos_and_ignores_answers_about_others() -> None:
    chooser = _chooser()
    answers = [("p0.jpg", "elsewhere.jpg"), ("gone.jpg", "p1.jpg"), ("p2.jpg", "p3.jpg")]
    for _ in range(20):
        pair = chooser.next_pair(answers)
        assert pair is not None and set(pair) <= set(chooser.keys) and frozenset(pair) != {"p2.jpg", "p3.jpg"}
        answers.append(pair)


def test_asks_the_least_asked_photo_first() -> None:
    chooser = _chooser(n=8)
    answered: list[tuple[str, str]] = []
    for _ in range(5):
        pair = chooser.next_pair(answered)
        counts = {key: sum(key in p for p in answered) for key in chooser.keys}
        assert min(counts[pair[0]], counts[pair[1]]) == min(counts.values())
        answered.append(pair)
    assert len({key for pair in answered for key in pair}) == 8  # never-asked photos come first


def test_posterior_follows_consistent_answers() -> None:
    chooser = _chooser(n=30)
    values = chooser.features[:, 0]
    answered = [(a, b) if values[i] > values[j] else (b, a)
                for (i, a), (j, b) in itertools.combinations(enumerate(chooser.keys), 2)][:200]
    rows = torch.tensor([(chooser.index[a], chooser.index[b]) for a, b in answered])
    w, cov = chooser._posterior(rows)
    assert int(w.abs().argmax()) == 0 and w[0] > 0 and cov[0, 0] < 1.0 / chooser.l2


def test_collect_session_asks_the_choosers_pairs_and_refuses_bad_ones(tmp_path: Path, photos: list[Path]) -> None:
    album = tmp_path / "album"
    album.mkdir()
    for p in photos:
        shutil.copy(p, album / p.name)
    keys, files = album_photos(album)
    chooser = ActivePairs(keys, torch.arange(len(keys), dtype=torch.float32), torch.randn(len(keys), 3))
    out = tmp_path / "answers.jsonl"
    session = CollectSession(album, out, pairs=3, chooser=chooser.next_pair)
    for _ in range(3):
        state = session.state()
        session.answer(state["left_path"], state["right_path"])
    assert session.state().get("finished") and len(read_answers(out)[0]) == 3
    # a rerun continues: three more questions, none repeated
    again = CollectSession(album, out, pairs=6, chooser=chooser.next_pair)
    asked = {frozenset((a.winner, a.loser)) for a in read_answers(out)[0]}
    state = again.state()
    assert frozenset((state["left_path"], state["right_path"])) not in asked and again.done == 3
    for bad in (("outside.jpg", keys[0]), (keys[0], keys[0])):
        with pytest.raises(ValueError, match="active chooser"):
            CollectSession(album, tmp_path / "b.jsonl", pairs=1, chooser=lambda answered, bad=bad: bad).state()
    with pytest.raises(ValueError, match="variants"):
        CollectSession(album, tmp_path / "c.jsonl", pairs=1, variants=True, chooser=chooser.next_pair)
