from __future__ import annotations

import math

import pytest
import torch

from persaes.core.model import AttentionHead, distribution_to_score
from persaes.core.taste import (
    REPLACING_STYLE_L2,
    TastePart,
    choose_strength,
    expanded_pairs,
    fit_taste,
    log_evidence,
    tilt,
)


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


def test_fit_reaches_the_optimum_of_its_objective_by_autograd() -> None:
    # fit_taste's closed-form gradient: autograd's gradient of the same objective is ~0 at its result
    logits, style, content, answered = _planted(seed=1, flip=0.1)
    content = torch.randn(len(style), 3, generator=torch.Generator().manual_seed(2))
    beta, weight = 0.7, 0.5

    def gradient(style_w: torch.Tensor, content_w: torch.Tensor) -> torch.Tensor:
        style_w, content_w = style_w.clone().requires_grad_(), content_w.clone().requires_grad_()
        s = distribution_to_score(torch.softmax(tilt(weight * logits, style @ style_w + content @ content_w), 1))
        objective = (torch.nn.functional.softplus(-beta * (s[answered[:, 0]] - s[answered[:, 1]])).sum()
                     + 0.5 * (style_w ** 2).sum() + 50.0 * (content_w ** 2).sum())
        objective.backward()
        return torch.cat([style_w.grad, content_w.grad]).abs().max()

    fitted = fit_taste(logits, style, content, answered, 1.0, 100.0, beta, generic_weight=weight)
    assert float(fitted.content.abs().max()) > 1e-3 and float(fitted.style.abs().max()) > 0.1
    assert float(gradient(torch.zeros(4), torch.zeros(3))) > 5  # the start is far from the optimum
    assert float(gradient(fitted.style, fitted.content)) < 0.05  # float32's optimum


def test_consistent_answers_choose_a_weak_strength_and_coin_flips_keep_the_generic_model() -> None:
    for seed in range(3):
        logits, style, content, answered = _planted(seed=seed)
        choice = choose_strength(logits, style, content, answered)
        assert choice.style_l2 <= 1
        # the evidence of the choice beats both the generic model and answers that carry no information
        assert choice.evidence[(choice.generic_weight, choice.style_l2, choice.content_l2)] > max(
            choice.evidence[(1.0, math.inf, math.inf)], -len(answered) * math.log(2))
    for seed in range(5):
        logits, style, content, answered = _planted(seed=seed, coin=True)
        choice = choose_strength(logits, style, content, answered)
        assert (choice.generic_weight, choice.style_l2, choice.content_l2) == (1.0, math.inf, math.inf)


def test_answers_against_a_confident_generic_model_choose_less_of_it() -> None:
    # the generic model ranks by the first statistic, confidently; the answers go by the second alone
    g = torch.Generator().manual_seed(3)
    style = torch.randn(60, 4, generator=g)
    logits = 3 * style[:, :1] * torch.linspace(-1, 1, 10)[None]
    pairs = torch.randint(60, (200, 2), generator=g)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]][:60]
    answered = torch.where((style[pairs[:, 0], 1] > style[pairs[:, 1], 1])[:, None], pairs, pairs.flip(1))
    choice = choose_strength(logits, style, torch.zeros(60, 0), answered)
    assert choice.generic_weight < 1 and math.isfinite(choice.style_l2)
    assert choice.evidence[(choice.generic_weight, choice.style_l2, math.inf)] > choice.evidence[
        (1.0, choice.style_l2, math.inf)]
    # the replacing style strengths are scored beside less of the generic model, never beside all of it
    assert any(s in REPLACING_STYLE_L2 for _, s, _ in choice.evidence)
    assert all(w < 1 for w, s, _ in choice.evidence if s in REPLACING_STYLE_L2)
    # less of the generic model only beside a style part: never a wider logistic scale alone
    assert all(math.isfinite(s) for w, s, _ in choice.evidence if w < 1)
    # a choice with neither the generic model nor a taste part would rank nothing: never scored, never chosen
    assert (0.0, math.inf, math.inf) not in choice.evidence
    weights = fit_taste(logits, style, torch.zeros(60, 0), answered, choice.style_l2, math.inf,
                        generic_weight=choice.generic_weight)
    held = torch.randn(40, 4, generator=g)
    held_logits = choice.generic_weight * 3 * held[:, :1] * torch.linspace(-1, 1, 10)[None]
    s = distribution_to_score(torch.softmax(tilt(held_logits, held @ weights.style), 1))
    assert float(torch.corrcoef(torch.stack([s, held[:, 1]]))[0, 1]) > 0.8


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
    fixed = choose_strength(logits, style, content, answered, style_grid=(3.0,), content_grid=(7.0,),
                            weight_grid=(0.5,))
    assert (fixed.generic_weight, fixed.style_l2, fixed.content_l2, fixed.evidence) == (0.5, 3.0, 7.0, {})


def test_taste_part_weighs_the_generic_logits_and_loads_a_state_saved_before_the_weight() -> None:
    part = TastePart(2, 3)
    with torch.no_grad():
        part.style.copy_(torch.tensor([1.0, -1.0]))
        part.generic_weight.fill_(0.5)
    logits, stats, z3 = torch.randn(4, 10), torch.randn(4, 2), torch.randn(4, 3)
    assert torch.allclose(part.tilted(logits, stats, z3), tilt(0.5 * logits, stats @ part.style))
    older = {k: v for k, v in part.state_dict().items() if k != "generic_weight"}
    loaded = TastePart(2, 3)
    loaded.load_state_dict(older, strict=True)
    assert float(loaded.generic_weight) == 1.0 and torch.equal(loaded.style, part.style)


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
