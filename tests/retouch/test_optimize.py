from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from retouch.baselines import auto_gamma
from retouch.exposure import channel_spread
from retouch.metrics import clipped_share, neutral_cast, neutral_chroma, new_clipping
from retouch.optimize import (
    EditSettings,
    coarse_start,
    edit_objectives,
    hold_to_limits,
    odds_loss,
    odds_slope,
    optimize_edit,
    optimize_edits,
    train_retouch_net,
    uncast,
    within_limits,
)
from retouch.pipeline import OPS, Retoucher


def _brightness_loss(target: float):
    return lambda images: (images.mean() - target) ** 2 * 100


def test_optimize_edit_moves_toward_the_loss_and_applies_at_full_size() -> None:
    torch.manual_seed(0)
    photo = F.interpolate(torch.rand(1, 3, 6, 8) * 0.4, size=(300, 400), mode="bilinear", align_corners=False)
    # random dark blocks, a few of them near-neutral: brightening them 2.5 times tints those, which the neutral
    # limit would hold back (tested below); here only the fit is tested
    settings = EditSettings(steps=60, lr=0.1, fidelity=0.0, regularization=0.0, work_size=64,
                            neutral_limit=float("inf"))
    retoucher = optimize_edit(photo, _brightness_loss(0.5), ("exposure",), settings)
    full = retoucher.retouch_full(photo)
    assert abs(float(full.mean()) - 0.5) < abs(float(photo.mean()) - 0.5) / 3
    small = F.interpolate(photo, size=(48, 64), mode="area")
    assert torch.allclose(F.interpolate(full, size=(48, 64), mode="area"), retoucher(small), atol=3e-3)


def test_coarse_start_escapes_a_loss_that_is_flat_at_the_identity() -> None:
    # No gradient at the identity: only brightening past a threshold lowers this loss (like a
    # hazy photo that scores little better when lightly dehazed but much better when fully).
    photo = torch.full((1, 3, 32, 32), 0.5)

    def threshold(images: torch.Tensor) -> torch.Tensor:
        return -10 * torch.relu(images.mean() - 0.55)

    settings = EditSettings(steps=10, fidelity=0.0, regularization=0.0)
    assert float(optimize_edit(photo, threshold, ("exposure",), settings).retouch_full(photo).mean()) > 0.55
    chain = Retoucher(OPS)
    coarse_start(chain, lambda: threshold(chain(photo)))
    assert float(chain(photo).mean().detach()) > 0.55


def test_coarse_start_keeps_the_identity_when_nothing_beats_it() -> None:
    photo = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    chain = Retoucher(OPS)
    before = chain.state()
    coarse_start(chain, lambda: (chain(photo) - photo).abs().mean())
    assert all(torch.equal(before[k], v) for k, v in chain.state().items())


def test_regularisers_hold_edits_back() -> None:
    photo = torch.rand(1, 3, 64, 64) * 0.4
    free = optimize_edit(photo, _brightness_loss(0.8), ("exposure",),
                         EditSettings(steps=30, fidelity=0.0, regularization=0.0))
    held = optimize_edit(photo, _brightness_loss(0.8), ("exposure",),
                         EditSettings(steps=30, fidelity=5.0, regularization=5.0))
    assert (held(photo) - photo).abs().mean() < (free(photo) - photo).abs().mean()


def test_guards_stop_a_loss_that_pays_for_clipping_and_casts(photos) -> None:
    from persaes.io.images import load_image

    photo = load_image(photos[1], max_side=128)[None] * 0.6  # Car1 darkened: grey road, white lines, room to brighten

    def greedy(images: torch.Tensor) -> torch.Tensor:  # pays for brightness and for red over blue, without limit
        return -4 * images.mean() - 4 * (images[:, 0] - images[:, 2]).mean()

    ops = ("exposure", "color")
    unguarded = EditSettings(steps=30, fidelity=2.0, clip_guard=0.0, neutral_guard=0.0, neutral_limit=float("inf"),
                             clip_limit=float("inf"))
    free = optimize_edit(photo, greedy, ops, unguarded)(photo).detach()
    held = optimize_edit(photo, greedy, ops, replace(unguarded, clip_guard=100.0, neutral_guard=0.2))(photo).detach()

    def added(edited: torch.Tensor) -> float:
        return float(clipped_share(edited) - clipped_share(photo))

    assert added(free) > 0.1 and added(held) < 0.005
    assert float(neutral_chroma(free, photo)) > 10 and float(neutral_chroma(held, photo)) < 5
    assert float(held.mean()) > float(photo.mean()) + 0.1  # the loss still moves what the guards allow

    # a score near its top, fitted as its log-odds (a profile's edit): that is greedy five times over, and the
    # guards, scaled by the log-odds' slope, still hold
    def saturated(images: torch.Tensor) -> torch.Tensor:
        return 9 * torch.sigmoid(2 * greedy(images) - 3)

    odds = optimize_edit(photo, saturated, ops, replace(unguarded, clip_guard=100.0, neutral_guard=0.2,
                                                        loss_odds=9.0))(photo).detach()
    assert float(saturated(photo)) < 0.1
    assert added(odds) < 0.005 and float(neutral_chroma(odds, photo)) < 5
    assert float(odds.mean()) > float(photo.mean()) + 0.1


def test_limits_hold_what_a_loss_strong_enough_to_outbid_the_guards_would_clip_and_cast(photos) -> None:
    from persaes.io.images import load_image

    photo = load_image(photos[1], max_side=128)[None] * 0.6

    def greedy(images: torch.Tensor) -> torch.Tensor:  # 50 times the price the guards test above pays
        return -200 * images.mean() - 200 * (images[:, 0] - images[:, 2]).mean()

    ops = ("exposure", "color")
    priced = EditSettings(steps=30, neutral_limit=float("inf"), clip_limit=float("inf"))
    outbid = optimize_edit(photo, greedy, ops, priced)(photo).detach()
    held = optimize_edit(photo, greedy, ops, EditSettings(steps=30))(photo).detach()
    assert float(neutral_chroma(outbid, photo)) > 10  # the guards' price alone is outbid
    assert float(clipped_share(held) - clipped_share(photo)) <= 0.003 + 1e-6
    assert float(neutral_chroma(held, photo)) <= 4.5 + 1e-3
    assert float(held.mean()) > float(photo.mean()) + 0.05  # what the limits allow still moves
    assert float((held[:, 0] - held[:, 2]).mean()) > float((photo[:, 0] - photo[:, 2]).mean())


def test_hold_to_limits_takes_back_what_casts_and_keeps_the_tone_edit() -> None:
    generator = torch.Generator().manual_seed(5)
    grey = 0.35 + 0.1 * torch.rand(2, 1, 32, 32, generator=generator)
    photos = grey.expand(2, 3, 32, 32).contiguous()  # near-neutral throughout, nothing clipped
    chain = Retoucher(("exposure", "color"))
    state = {key: value.repeat(2, *[1] * (value.dim() - 1)) for key, value in chain.state().items()}
    state["exposure.raw"][:] = 0.3  # brightens both photos
    state["color.log_gains"][0] = torch.tensor([0.1, 0.0, -0.1])  # casts the first
    edited = chain.render(photos, state)
    assert within_limits(edited, photos, photos, EditSettings())[1].tolist() == [False, True]
    held = hold_to_limits(chain, state, photos, photos, EditSettings())
    after = chain.render(photos, held)
    assert all(check.all() for check in within_limits(after, photos, photos, EditSettings()))
    assert torch.equal(held["exposure.raw"], state["exposure.raw"])  # the tone edit stays
    assert torch.equal(held["color.log_gains"][1], state["color.log_gains"][1])  # the photo within is untouched
    assert 0 < float(held["color.log_gains"][0, 0]) < 0.1  # the cast is cut back, not removed
    assert float(neutral_chroma(after[:1], photos[:1])) <= 4.5 + 1e-4


def test_a_fitted_edit_keeps_the_neutral_limit_on_the_photo_not_only_on_its_fitting_copy() -> None:
    # grey with fine colour noise: the 32-px fitting copy averages it out (chroma 0.5 there, 3.1 on the photo)
    photo = (0.5 + 0.03 * torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))).clamp(0, 1)

    def warm(images: torch.Tensor) -> torch.Tensor:
        return -20 * (images[:, 0] - images[:, 2]).mean(dim=(1, 2))

    settings = EditSettings(steps=20, work_size=32, neutral_guard=0.0)
    held = optimize_edit(photo, warm, ("color",), settings).retouch_full(photo)
    free = optimize_edit(photo, warm, ("color",), replace(settings, neutral_limit=float("inf"))).retouch_full(photo)
    assert float(neutral_chroma(free, photo)) > 10
    assert float(neutral_chroma(held, photo)) <= settings.neutral_limit + 1e-3
    assert float((held[:, 0] - held[:, 2]).mean()) > 0.02  # warmer, as far as the limit allows


def test_hold_to_limits_takes_a_chain_of_any_shape_back_to_its_own_identity() -> None:
    photos = torch.full((1, 3, 16, 16), 0.5)
    chain = Retoucher(("exposure", "color"), exposure_grid=(2, 2), lut_size=5)  # not the default shapes
    state = chain.state()
    state["color.log_gains"][:] = torch.tensor([0.3, 0.0, -0.3])
    held = hold_to_limits(chain, state, photos, photos, EditSettings())
    assert {key: value.shape for key, value in held.items()} == {key: value.shape for key, value in state.items()}
    assert float(neutral_chroma(chain.render(photos, held), photos)) <= 4.5 + 1e-4


def test_uncast_keeps_each_curves_mean_and_drops_the_colour_edits() -> None:
    chain = Retoucher(OPS)
    identity = chain.state()
    state = {key: value + torch.rand(value.shape, generator=torch.Generator().manual_seed(2))
             for key, value in identity.items()}
    out = uncast(state, identity)
    assert float(channel_spread(torch.tanh(out["exposure.raw"]))) < 1e-6
    assert torch.allclose(out["exposure.raw"].unflatten(1, (-1, 3)).mean(dim=2),
                          state["exposure.raw"].unflatten(1, (-1, 3)).mean(dim=2))
    for key in ("color.log_gains", "color.raw_saturation", "color.lut_residual", "dehaze.airlight_offset"):
        assert torch.equal(out[key], identity[key])
    assert torch.equal(out["dehaze.raw_strength"], state["dehaze.raw_strength"])  # dehazing is tone, not colour


def test_hold_to_limits_pulls_back_an_edit_that_clips_until_it_clips_no_more_than_the_limit() -> None:
    generator = torch.Generator().manual_seed(6)
    photos = (0.55 + 0.4 * torch.rand(1, 1, 32, 32, generator=generator)).expand(1, 3, 32, 32).contiguous()
    chain = Retoucher(("exposure",))
    state = {"exposure.raw": torch.full((1, 12, 1, 1), 1.5)}  # brightens hard: most highlights clip
    settings = EditSettings()
    assert float(clipped_share(chain.render(photos, state))) > 0.2
    held = hold_to_limits(chain, state, photos, photos, settings)
    after = chain.render(photos, held)
    assert float(clipped_share(after) - clipped_share(photos)) <= settings.clip_limit + 1e-6
    assert 0 < float(held["exposure.raw"].mean()) < 1.5


def test_hold_to_limits_pulls_back_a_tone_edit_that_casts_when_taking_back_the_colour_edits_is_not_enough() -> None:
    photo = torch.full((1, 3, 32, 32), 0.5)
    photo[:, :, :8] = torch.tensor([0.98, 0.93, 0.7]).view(1, 3, 1, 1)  # a pale yellow sky: the airlight
    chain = Retoucher(("dehaze",))
    state = chain.state()
    state["dehaze.raw_strength"] = torch.full((1,), math.atanh(-0.9))  # adds yellow haze over the grey
    settings = EditSettings()
    assert float(neutral_chroma(chain.render(photo, state), photo)) > 9
    assert torch.equal(uncast(state, chain.state())["dehaze.raw_strength"], state["dehaze.raw_strength"])
    held = hold_to_limits(chain, state, photo, photo, settings)
    assert float(neutral_chroma(chain.render(photo, held), photo)) <= settings.neutral_limit + 1e-4
    assert -0.9 < float(torch.tanh(held["dehaze.raw_strength"])) < 0  # some haze is still added


def test_an_edit_on_top_of_a_retouch_is_held_only_for_what_it_adds() -> None:
    grey = torch.full((1, 3, 16, 16), 0.5)
    cast = grey * torch.tensor([1.2, 1.0, 0.8]).view(1, 3, 1, 1)  # a base retouch that cast the photo
    settings = EditSettings()
    assert not within_limits(cast, grey, grey, settings)[1]
    assert within_limits(cast, cast, grey, settings)[1]  # kept as the base made it
    assert not within_limits(cast * torch.tensor([1.05, 1.0, 0.95]).view(1, 3, 1, 1), cast, grey, settings)[1]
    brighter = torch.cat([torch.full((1, 3, 8, 16), 0.9), torch.full((1, 3, 8, 16), 0.5)], dim=2)
    clipped = within_limits(brighter * 1.2, brighter, brighter, settings)[0]
    assert not clipped and within_limits(brighter * 1.2, brighter * 1.2, brighter, settings)[0]


def test_train_retouch_net_learns_each_photos_fitted_edit() -> None:
    # the fitted edits bring each photo's mean to mid-grey: dark photos are brightened, bright ones darkened, so
    # the network has to read each photo to predict its edit
    g = torch.Generator().manual_seed(0)
    photos = torch.rand(16, 3, 32, 32, generator=g) * torch.linspace(0.15, 1.0, 16).view(-1, 1, 1, 1) ** 0.5
    targets = auto_gamma(photos)
    train, held = slice(0, 16, 2), slice(1, 16, 2)
    losses: list[float] = []
    net = train_retouch_net(lambda: [(photos[train], targets[train])], ("exposure",), epochs=150,
                            on_step=lambda step, value: losses.append(value))
    assert len(losses) == 150 and losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        error = (net(photos[held]) - targets[held]).abs().mean()
    assert error < 0.4 * (photos[held] - targets[held]).abs().mean()


@pytest.mark.parametrize("field, value", [("steps", -1), ("lr", 0.0), ("fidelity", -1.0), ("clip_guard", -0.5),
                                          ("work_size", 8), ("loss_odds", -1.0),
                                          ("neutral_limit", -1.0), ("clip_limit", -0.1)])
def test_edit_settings_refuse_bad_values_when_made(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        EditSettings(**{field: value})


def _per_photo_brightness(target: float):
    return lambda images: (images.mean(dim=(1, 2, 3)) - target) ** 2 * 100


def test_optimize_edits_fits_each_photo_as_it_would_be_fitted_alone() -> None:
    generator = torch.Generator().manual_seed(1)
    photos = [torch.rand(1, 3, 40, 56, generator=generator) * 0.5 + offset for offset in (0.0, 0.2, 0.5)]
    photos.append(torch.rand(1, 3, 56, 40, generator=generator) * 0.4)  # another working size: its own batch
    settings = EditSettings(steps=12, work_size=32)
    together = optimize_edits(photos, _per_photo_brightness(0.5), ("exposure", "color"), settings, batch_size=2)
    for photo, fitted in zip(photos, together):
        alone = optimize_edit(photo, _brightness_loss(0.5), ("exposure", "color"), settings)
        assert torch.allclose(fitted.retouch_full(photo), alone.retouch_full(photo), atol=1e-5)
    assert float(together[0].retouch_full(photos[0]).mean()) > float(photos[0].mean()) + 0.05  # dark: brightened
    assert float(together[2].retouch_full(photos[2]).mean()) < float(photos[2].mean()) - 0.05  # bright: darkened


class _NanGradientForFirst(torch.autograd.Function):
    """Identity whose backward gives the first photo of the batch a NaN gradient (a scorer's blind spot)."""

    @staticmethod
    def forward(ctx, images: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return images.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        grad = grad.clone()
        grad[0] = float("nan")
        return grad


def test_a_non_finite_gradient_moves_nothing_and_leaves_the_other_photos_as_they_were() -> None:
    generator = torch.Generator().manual_seed(2)
    photos = [torch.rand(1, 3, 32, 32, generator=generator) * 0.4 for _ in range(2)]
    settings = EditSettings(steps=6, work_size=32)
    brightness = _per_photo_brightness(0.5)
    seen: list[torch.Tensor] = []

    def loss(images: torch.Tensor) -> torch.Tensor:
        values = brightness(_NanGradientForFirst.apply(images))
        if images.requires_grad:  # the Adam steps (the coarse start and the last step only evaluate)
            seen.append(values.detach())
        return values

    together = optimize_edits(photos, loss, ("exposure", "color"), settings, batch_size=2)
    first = [float(values[0]) for values in seen]
    assert len(first) == settings.steps and first == [first[0]] * len(first)  # its edit never moved
    alone = optimize_edit(photos[1], _brightness_loss(0.5), ("exposure", "color"), settings)
    assert torch.allclose(together[1].retouch_full(photos[1]), alone.retouch_full(photos[1]), atol=1e-5)


def test_optimize_edits_refuses_a_loss_that_averages_the_batch() -> None:
    photos = [torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)]
    with pytest.raises(ValueError, match="one loss per photo"):
        optimize_edits(photos, _brightness_loss(0.5), ("exposure",), EditSettings(steps=2, work_size=32))


def test_patience_stops_a_photo_whose_objective_no_longer_falls() -> None:
    photos = [torch.full((1, 3, 32, 32), 0.5), torch.full((1, 3, 32, 32), 0.2)]
    rows: list[int] = []

    def flat_for_the_first(images: torch.Tensor) -> torch.Tensor:
        rows.append(len(images))
        values = (images.mean(dim=(1, 2, 3)) - 0.5) ** 2 * 100
        return values * (images.mean(dim=(1, 2, 3)) < 0.45)  # the grey photo is at its optimum from the start

    settings = EditSettings(steps=20, work_size=32, fidelity=0.0, regularization=0.0, patience=3,
                            min_improvement=1e-4)
    fitted = optimize_edits(photos, flat_for_the_first, ("exposure",), settings)
    steps = [n for n in rows[-21:]]  # after the coarse start: one call per step
    assert 1 in steps and steps[0] == 2  # the first photo left the batch, the second kept fitting
    assert float(fitted[1].retouch_full(photos[1]).mean()) > 0.3
    assert len(rows) < len(optimize_calls(photos, settings))


def optimize_calls(photos: list[torch.Tensor], settings: EditSettings) -> list[int]:
    rows: list[int] = []

    def counted(images: torch.Tensor) -> torch.Tensor:
        rows.append(len(images))
        return (images.mean(dim=(1, 2, 3)) - 0.5) ** 2 * 100 * (images.mean(dim=(1, 2, 3)) < 0.45)

    optimize_edits(photos, counted, ("exposure",), replace(settings, patience=0))
    return rows


def test_edit_settings_refuse_a_negative_patience() -> None:
    with pytest.raises(ValueError, match="patience"):
        EditSettings(patience=-1)


def test_odds_loss_ranks_as_the_loss_does_and_stays_steep_near_the_ends() -> None:
    losses = torch.tensor([0.0, 0.01, 0.05, 1.0, 4.5, 8.0, 9.0], requires_grad=True)
    odds = odds_loss(losses, 9.0)
    odds.sum().backward()
    assert torch.isfinite(odds).all() and torch.isfinite(losses.grad).all()
    assert (odds[1:-1].diff() > 0).all()  # monotone: it ranks edits as the loss does
    assert losses.grad[4] == pytest.approx(1.0)  # slope 1 at mid-range
    assert losses.grad[2] > 40 and losses.grad[5] > 2  # steep toward the ends, where the score saturates
    assert losses.grad[0] == 0 and losses.grad[-1] == 0  # held within ODDS_FLOOR of the ends
    with pytest.raises(ValueError, match="top"):
        odds_loss(losses, 0.0)


def test_loss_odds_lets_a_saturated_loss_move_the_edit() -> None:
    # a score already near its top: 10 − f(x) is nearly flat, and the fidelity term outweighs its slope
    photo = torch.full((1, 3, 32, 32), 0.5)

    def saturated(images: torch.Tensor) -> torch.Tensor:
        return 9.0 * torch.sigmoid(-30.0 * (images.mean(dim=(1, 2, 3)) - 0.3))

    settings = EditSettings(steps=10, work_size=32)
    plain = optimize_edit(photo, saturated, ("exposure",), settings).retouch_full(photo)
    odds = optimize_edit(photo, saturated, ("exposure",), replace(settings, loss_odds=9.0)).retouch_full(photo)
    assert torch.allclose(plain, photo, atol=1e-3)
    assert float(odds.mean()) > 0.52


def test_fitted_as_log_odds_the_guards_are_scaled_by_its_slope() -> None:
    source = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.9
    edited = (source * torch.tensor([1.6, 1.0, 0.7]).view(1, 3, 1, 1)).clamp(0, 1)  # clips and casts
    losses = torch.tensor([4.5, 0.05])

    def loss_fn(images: torch.Tensor) -> torch.Tensor:
        return losses

    settings = EditSettings(fidelity=0.0, loss_odds=9.0)
    guards = settings.clip_guard * new_clipping(edited, source) + settings.neutral_guard * neutral_cast(edited, source)
    objectives = edit_objectives(loss_fn, edited, source, torch.zeros(2), settings)
    assert (guards > 0).all()
    assert torch.allclose(objectives, odds_loss(losses, 9.0) + odds_slope(losses, 9.0) * guards)
    assert odds_slope(losses, 9.0)[1] > 40  # near the top of the score the guards weigh 40 times more
    assert odds_slope(torch.tensor([0.0, 9.0]), 9.0).tolist() == [1.0, 1.0]  # held there: no slope to scale by
