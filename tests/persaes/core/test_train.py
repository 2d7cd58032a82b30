from __future__ import annotations

import dataclasses

import pytest
import torch

from persaes.core.features import Features
from persaes.core.losses import emd_loss
from persaes.core.model import STATS, THUMB, AttentionHead, distribution_to_score
from persaes.core.scorer import resolve_weights
from persaes.core.train import (
    GENERIC_RECIPES,
    PERSONAL_PRESETS,
    SHIPPED_RECIPE,
    GenericSettings,
    PersonalSettings,
    generic_recipe,
    train_generic,
    train_personal,
)
from persaes.io.safetensors_file import read_safetensors
from retouch.optimize import EditSettings


def _feats(n: int, seed: int = 0) -> Features:
    """Random backbone features; the image statistics and thumbnails are all equal, so only the features can
    explain a target."""
    g = torch.Generator().manual_seed(seed)
    return Features(torch.randn(n, 4, 5, 5, generator=g), torch.randn(n, 6, 5, 5, generator=g),
                    torch.randn(n, 8, generator=g), torch.zeros(n, STATS), torch.full((n, 3, THUMB, THUMB), 0.5))


def test_generic_stage_fits_histograms() -> None:
    feats = _feats(64)
    target = torch.softmax(3 * feats.z3[:, :1] * torch.linspace(-1, 1, 10), dim=1)
    head = AttentionHead((4, 6, 8), hidden=4, dropout=0.0)
    with torch.no_grad():
        before = float(emd_loss(head(*feats.take(range(64))), target))
    history = train_generic(head, feats.take, target, GenericSettings(epochs=40, lr=1e-2), seed=0)
    with torch.no_grad():
        after = float(emd_loss(head(*feats.take(range(64))), target))
    assert after < 0.5 * before and history[-1] < history[0]


def test_generic_stage_learns_pairs_and_resumes_to_the_same_weights(tmp_path) -> None:
    feats = _feats(48, seed=4)
    # photos 32..47 are "processed" copies of 0..15: brighter (their luma statistics), same backbone features
    for t in (feats.z1, feats.z2, feats.z3, feats.thumb):
        t[32:] = t[:16]
    feats.stats[:, :2] = torch.rand(48, 2, generator=torch.Generator().manual_seed(5))
    feats.stats[32:, 0] = feats.stats[:16, 0] + 0.3
    target = torch.softmax(2 * feats.z3[:32, :1] * torch.linspace(-1, 1, 10), dim=1)
    hists = torch.cat([target, torch.zeros(16, 10)])
    pairs = torch.stack([torch.arange(16), torch.arange(32, 48)], dim=1)
    settings = GenericSettings(epochs=6, lr=1e-2, pair_weight=3.0, pair_margin=0.3)

    def run(state=None, stop_after: int | None = None, epochs: int = settings.epochs) -> AttentionHead:
        def on_epoch(epoch: int, loss: float) -> None:
            if epoch == stop_after:
                raise KeyboardInterrupt  # the job is killed after writing this epoch's state

        head = AttentionHead((4, 6, 8), hidden=4)
        head.load_state_dict(start)
        try:
            train_generic(head, feats.take, hists, GenericSettings(**{**settings.as_dict(), "epochs": epochs}), seed=3,
                          pairs=pairs, rated=torch.arange(32), state_path=state, on_epoch=on_epoch)
        except KeyboardInterrupt:
            pass
        return head

    torch.manual_seed(0)
    start = AttentionHead((4, 6, 8), hidden=4).state_dict()
    whole = run()
    with torch.no_grad():
        scores = distribution_to_score(whole(*feats.take(range(48))))
    assert bool((scores[:16] > scores[32:]).all())  # the originals win their pairs
    state = tmp_path / "state.safetensors"
    run(state, stop_after=2)
    resumed = run(state)
    for name, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    with pytest.raises(ValueError, match="another run"):
        run(state, epochs=9)
    with pytest.raises(ValueError, match="another run"):  # a head of another design
        train_generic(AttentionHead((4, 6, 8), hidden=4, quality_width=2), feats.take, hists, settings, seed=3,
                      pairs=pairs, rated=torch.arange(32), state_path=state)


def test_personal_stage_learns_an_ordering_and_anchor_holds_it_back() -> None:
    torch.manual_seed(0)
    feats = _feats(40, seed=1)
    truth = feats.z3[:, 0]
    pairs = torch.tensor([[i, j] if truth[i] > truth[j] else [j, i] for i in range(20) for j in range(i + 1, 20)])
    held = [(i, j) for i in range(20, 40) for j in range(i + 1, 40) if truth[i] != truth[j]]

    def accuracy(head: AttentionHead) -> float:
        with torch.no_grad():
            s = distribution_to_score(head(*feats.take(range(40))))
        return sum(float((s[i] > s[j]) == (truth[i] > truth[j])) for i, j in held) / len(held)

    free = AttentionHead((4, 6, 8), hidden=4)
    start = accuracy(free)
    initial = [p.detach().clone() for p in free.parameters()]
    anchored = AttentionHead((4, 6, 8), hidden=4)
    anchored.load_state_dict(free.state_dict())
    losses = train_personal(free, feats.take, pairs, PersonalSettings(iterations=200, lr=1e-2, epochs=None), seed=0)
    train_personal(anchored, feats.take, pairs, PersonalSettings(iterations=200, lr=1e-2, anchor=100.0, epochs=None),
                   seed=0)
    assert accuracy(free) > 0.85 and accuracy(free) > start and losses[-1] < losses[0]

    def drift(head: AttentionHead) -> float:
        return sum(float((p.detach() - q).pow(2).sum()) for p, q in zip(head.parameters(), initial))

    assert 0 < drift(anchored) < 0.5 * drift(free)


def test_epochs_cap_the_fine_tune_by_the_number_of_pairs() -> None:
    feats = _feats(40, seed=3)
    every = torch.tensor([[i, j] for i in range(40) for j in range(40) if i != j])  # 1560 pairs

    def iterations(n_pairs: int, **settings: float | None) -> int:
        head = AttentionHead((4, 6, 8), hidden=4)
        return len(train_personal(head, feats.take, every[:n_pairs], PersonalSettings(iterations=100, **settings)))

    assert iterations(45, epochs=10.0) == 15  # ceil(10 · 45 / 32)
    assert iterations(45, epochs=2.5) == 4  # ceil(2.5 · 45 / 32)
    assert iterations(1560, epochs=10.0) == 100  # the iteration count is the tighter cap
    assert iterations(45, epochs=None) == 100


def test_auto_iterations_follow_held_out_answers() -> None:
    from persaes.core.train import AUTO_HOLDOUT, choose_iterations

    feats = _feats(40, seed=2)
    truth = feats.z3[:, 0]
    consistent = torch.tensor([[i, j] if truth[i] > truth[j] else [j, i] for i in range(40) for j in range(i + 1, 40)])
    # The same pairs, but those that choose_iterations holds out (seeded) contradict the rest.
    order = torch.randperm(len(consistent), generator=torch.Generator().manual_seed(0))
    held = order[: int(len(consistent) * AUTO_HOLDOUT)]
    misleading = consistent.clone()
    misleading[held] = consistent[held].flip(1)
    settings = PersonalSettings(iterations="auto", lr=1e-3)
    torch.manual_seed(0)
    head = AttentionHead((4, 6, 8), hidden=4)
    long = choose_iterations(head, feats.take, consistent, settings, seed=0)
    assert long >= 100
    assert choose_iterations(head, feats.take, misleading, settings, seed=0) == 0
    losses = train_personal(head, feats.take, consistent, settings, seed=0)
    assert len(losses) == long  # "auto" then trains the chosen count on all pairs


@pytest.mark.parametrize("field, value", [("epochs", 0), ("batch_size", 0), ("lr", 0.0), ("pair_content_grad", 1.5),
                                          ("pair_margin", -0.1)])
def test_generic_settings_refuse_bad_values_when_made(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        GenericSettings(**{field: value})


@pytest.mark.parametrize("field, value", [("iterations", -1), ("iterations", "many"), ("loss", "square"),
                                          ("layers", "backbone"), ("epochs", 0.0), ("style_l2", 0.0),
                                          ("batch_size", 0)])
def test_personal_settings_refuse_bad_values_when_made(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        PersonalSettings(**{field: value})


def test_settings_are_frozen_and_a_preset_changes_one_field_with_replace() -> None:
    preset = PERSONAL_PRESETS["paper"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset.iterations = 5  # type: ignore[misc]
    changed = dataclasses.replace(preset, iterations=5)
    assert changed.iterations == 5 and changed.epochs == preset.epochs and not changed.taste
    with pytest.raises(ValueError, match="iterations"):
        dataclasses.replace(preset, iterations=-5)


def test_generic_recipes_name_the_shipped_weights_recipe() -> None:
    meta = read_safetensors(resolve_weights("generic"))[1]
    assert meta["recipe"] == SHIPPED_RECIPE  # it made the shipped file, with these settings
    shipped = GENERIC_RECIPES[SHIPPED_RECIPE]
    assert meta["recipe_settings"] == {k: v for k, v in dataclasses.asdict(shipped).items() if k != "training"}
    assert (shipped.training.epochs, shipped.training.pair_weight, shipped.quality_width) == (10, 3.0, 0)
    assert shipped.harden_rounds == 0
    hardened = GENERIC_RECIPES["hardened"]  # the statistics recipe, then two rounds against the optimiser
    assert hardened.training == shipped.training and hardened.harden_rounds == 2
    assert (hardened.harden_edit.steps, hardened.harden_edit.fidelity) == (10, 2.0)  # as when its file was made
    assert hardened.harden_edit != EditSettings()  # not today's retouch
    thumbnail = GENERIC_RECIPES["thumbnail"]
    assert (thumbnail.training.epochs, thumbnail.quality_width, thumbnail.harden_rounds) == (40, 16, 0)
    with pytest.raises(ValueError, match="draws"):
        dataclasses.replace(shipped, draws=0)


def test_generic_recipe_overrides_only_the_fields_given() -> None:
    recipe = generic_recipe("hardened", epochs=4, harden_photos=10, draws=None)
    assert recipe.training.epochs == 4 and recipe.harden_photos == 10
    assert recipe.harden_rounds == GENERIC_RECIPES["hardened"].harden_rounds and recipe.quality_width == 0
    with pytest.raises(ValueError, match="unknown generic recipe 'tiny'"):
        generic_recipe("tiny")
