from __future__ import annotations

import math

import pytest
import torch

from persaes.core.model import AttentionHead, distribution_to_score
from persaes.core.taste import TastePart, choose_strength, expanded_pairs, fit_taste, log_evidence, tilt


def _planted(n: int = 60, answers: int = 100, seed: int = 0, flip: float = 0.1, coin: bool = False):
    """Photos whose generic scores prefer a high first statistic, and answers that prefer a low one."""
    g = torch.Generator().manual_seed(seed)
    style = torch.randn(n, 4, generator=g)
    content = torch.randn(n, 8, generator=g)
    logits = (style[:, :1] * torch.linspace(-1, 1, 10)[None]) + 0.1 * torch.randn(n, 10, generator=g)
    rows = []
    while len(rows) < answers:
        a, b = torch.randint(n, (2,), generator=g).tolist()
        if a == b:
            continue
        a_wins = style[a, 0] < style[b, 0]
        if coin:
            a_wins = bool(torch.rand((), generator=g) < 0.5)
        elif torch.rand((), generator=g) < flip:
            a_wins = not a_wins
        rows.append((a, b) if a_wins else (b, a))
    return logits, style, content, torch.tensor(rows)


def test_tilt_keeps_a_distribution_and_raises_the_score_with_delta() -> None:
    logits = torch.randn(3, 10)
    scores = [distribution_to_score(torch.softmax(tilt(logits, torch.full((3,), d)), 1)) for d in (-2.0, 0.0, 2.0)]
    assert bool((scores[0] < scores[1]).all() and (scores[1] < scores[2]).all())
    assert bool(torch.allclose(torch.softmax(tilt(logits, torch.zeros(3)), 1), torch.softmax(logits, 1)))


def test_fit_learns_a_planted_taste_against_the_generic_bias() -> None:
    logits, style, content, answered = _planted()
    weights = fit_taste(logits, style, content, answered, 1.0, math.inf)
    assert weights.style[0] < 0 and bool((weights.content == 0).all())
    s = distribution_to_score(torch.softmax(tilt(logits, style @ weights.style), 1))
    low_first = style[:, 0].argsort()
    assert float(torch.corrcoef(torch.stack([s[low_first], torch.arange(len(s)).float()]))[0, 1]) < -0.8


def test_consistent_answers_choose_a_weak_strength_and_coin_flips_keep_the_generic_model() -> None:
    for seed in range(3):
        logits, style, content, answered = _planted(seed=seed)
        choice = choose_strength(logits, style, content, answered)
        assert choice.style_l2 <= 1
        # the evidence of the choice beats both the generic model and answers that carry no information
        assert choice.evidence[(choice.style_l2, choice.content_l2)] > max(
            choice.evidence[(math.inf, math.inf)], -len(answered) * math.log(2))
    for seed in range(5):
        logits, style, content, answered = _planted(seed=seed, coin=True)
        choice = choose_strength(logits, style, content, answered)
        assert (choice.style_l2, choice.content_l2) == (math.inf, math.inf)


def test_evidence_is_the_generic_likelihood_at_infinite_strengths_and_its_limit() -> None:
    logits, style, content, answered = _planted()
    beta = 1.0
    s = distribution_to_score(torch.softmax(logits, 1))
    generic = -float(torch.nn.functional.softplus(-beta * (s[answered[:, 0]] - s[answered[:, 1]])).sum())
    assert log_evidence(logits, style, content, answered, math.inf, math.inf, beta) == pytest.approx(generic, rel=1e-5)
    strong = log_evidence(logits, style, content, answered, 1e7, 1e7, beta)
    assert strong == pytest.approx(generic, rel=1e-3)
    # the planted taste is in the first statistic: weak style strength has far more evidence than none
    assert log_evidence(logits, style, content, answered, 1.0, math.inf, beta) > generic + 10


def test_too_few_answers_keep_the_generic_model_and_fixed_strengths_skip_the_search() -> None:
    logits, style, content, answered = _planted(answers=5)
    assert (choose_strength(logits, style, content, answered).style_l2) == math.inf
    fixed = choose_strength(logits, style, content, answered, style_grid=(3.0,), content_grid=(7.0,))
    assert (fixed.style_l2, fixed.content_l2, fixed.evidence) == (3.0, 7.0, {})


def test_expanded_pairs_add_one_step_transitivity() -> None:
    pairs = expanded_pairs(torch.tensor([[0, 1], [1, 2]]))
    assert sorted(map(tuple, pairs.tolist())) == [(0, 1), (0, 2), (1, 2)]


def test_head_with_a_taste_part_tilts_its_scores_and_has_finite_gradients() -> None:
    torch.manual_seed(0)
    head = AttentionHead((4, 6, 8), hidden=4, taste=True).eval()
    z = (torch.rand(3, 4, 5, 5), torch.rand(3, 6, 5, 5), torch.rand(3, 8))
    stats, thumb = torch.rand(3, 21, requires_grad=True), torch.rand(3, 3, 96, 96)
    before = distribution_to_score(head(*z, stats, thumb))
    assert isinstance(head.taste, TastePart)
    with torch.no_grad():
        head.taste.style[0] = 2.0
    after = distribution_to_score(head(*z, stats, thumb))
    standardized = head.standardized_stats(stats)[:, 0]
    assert bool(((after - before).sign() == standardized.sign()).all())
    after.sum().backward()
    assert stats.grad is not None and bool(torch.isfinite(stats.grad).all())


@pytest.mark.parametrize("bad", [torch.zeros(3), torch.zeros(3, 3)])
def test_fit_refuses_pairs_that_are_not_m_by_2(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="M×2"):
        fit_taste(torch.zeros(3, 10), torch.zeros(3, 1), torch.zeros(3, 0), bad.long(), 1.0, math.inf)
