from __future__ import annotations

import math

import pytest
import torch

from persaes.core.losses import emd_loss, exp_pair_loss, hinge_pair_loss, logistic_pair_loss


def _direct_emd(p: list[float], q: list[float], r: float = 2.0) -> float:
    cp = cq = 0.0
    total = 0.0
    for a, b in zip(p, q):
        cp += a
        cq += b
        total += abs(cp - cq) ** r
    return (total / len(p)) ** (1 / r)


def test_emd_identical_is_zero() -> None:
    p = torch.softmax(torch.randn(4, 10), 1)
    assert torch.allclose(emd_loss(p, p, reduction="none"), torch.zeros(4), atol=1e-5)


def test_emd_all_mass_at_the_ends() -> None:
    p = torch.zeros(1, 10)
    p[0, 0] = 1
    q = torch.zeros(1, 10)
    q[0, 9] = 1
    assert float(emd_loss(p, q)) == pytest.approx(math.sqrt(9 / 10), abs=1e-6)


def test_emd_matches_direct_computation_on_hand_made_histograms() -> None:
    p = [0.1, 0.2, 0.3, 0.4, 0, 0, 0, 0, 0, 0]
    q = [0, 0, 0, 0, 0.25, 0.25, 0.25, 0.25, 0, 0]
    for r in (1.0, 2.0):
        got = float(emd_loss(torch.tensor([p]), torch.tensor([q]), r=r))
        assert got == pytest.approx(_direct_emd(p, q, r), abs=1e-6)


def test_emd_batched_reduction_and_gradient() -> None:
    logits = torch.randn(3, 10, requires_grad=True)
    q = torch.softmax(torch.randn(3, 10), 1)
    per = emd_loss(torch.softmax(logits, 1), q, reduction="none")
    assert per.shape == (3,)
    summed = emd_loss(torch.softmax(logits, 1), q, reduction="sum")
    assert float(summed.detach()) == pytest.approx(float(per.sum().detach()), rel=1e-6)
    emd_loss(torch.softmax(logits, 1), q).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_emd_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        emd_loss(torch.ones(2, 10), torch.ones(2, 5))


def test_pair_losses_values_and_gradients() -> None:
    good = torch.tensor([6.0, 5.0, 5.0], requires_grad=True)
    bad = torch.tensor([5.0, 5.05, 7.0], requires_grad=True)
    hinge = hinge_pair_loss(good, bad, reduction="none")
    assert torch.allclose(hinge, torch.tensor([0.0, 0.15, 2.1]), atol=1e-6)
    hinge.sum().backward()
    assert good.grad.tolist() == [0.0, -1.0, -1.0] and bad.grad.tolist() == [0.0, 1.0, 1.0]
    d = torch.tensor([-1.0, 0.05, 2.0])
    assert torch.allclose(exp_pair_loss(good.detach(), bad.detach(), reduction="none"), d.exp())
    assert torch.allclose(logistic_pair_loss(good.detach(), bad.detach(), reduction="none"), torch.log1p(d.exp()))
    g = torch.tensor([1.0], requires_grad=True)
    logistic_pair_loss(g, torch.tensor([1.0])).backward()
    assert float(g.grad) == pytest.approx(-0.5)


def test_pair_loss_checks() -> None:
    with pytest.raises(ValueError):
        hinge_pair_loss(torch.ones(2), torch.ones(3))
    with pytest.raises(ValueError, match="reduction"):
        hinge_pair_loss(torch.ones(2), torch.ones(2), reduction="max")
