"""Fit edits against a differentiable loss, per photo or as a feed-forward network.

:func:`optimize_edit` fits one photo's edit parameters; :func:`train_retouch_net` trains a
feed-forward network that learns to make such fitted edits in one pass.

The loss is any callable ``images -> scalar`` (e.g. ``persaes.AestheticLoss``). Regularisers
keep edits natural, the answer to "the model learns to over-brighten": a fidelity term
(mean absolute change from the input), the ops' own smoothness/strength terms, bounded
parameters (every op maps raw parameters into a safe range), and two guards: no new clipped
highlights or crushed shadows, no cast on the input's whites and greys. The guards are priced
while fitting, and held as limits after it (:func:`hold_to_limits`): a price can be outbid by a
strong enough taste, a limit cannot.

Parameters are fitted on a copy whose longer side is at most ``work_size``; they are
global or coarse grids, so the same edit then applies to the full-size photo in one pass.

Example:
    >>> photo = 0.3 * torch.rand(1, 3, 240, 320, generator=torch.Generator().manual_seed(0))   # a dark photo
    >>> too_dark = lambda images: 10 * (0.5 - images.mean()).abs()   # in real use e.g. AestheticLoss("generic")
    >>> retoucher = optimize_edit(photo, too_dark, settings=EditSettings(steps=10, work_size=32))
    >>> full = retoucher.retouch_full(photo)                         # the fitted edit, applied at full size
    >>> full.shape, float(photo.mean()) < 0.2, float(full.mean()) > 0.3
    (torch.Size([1, 3, 240, 320]), True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from .color import check_image
from .dehaze import resize_to_fit
from .metrics import NEUTRAL_AREA, clipped_share, near_neutral_mask, neutral_cast, neutral_chroma, new_clipping
from .pipeline import OPS, Retoucher, RetouchNet

LossFn = Callable[[Tensor], Tensor]

FIT_BATCH = 4
"""Photos fitted together by default: on a 2-core CPU one fitting step costs 0.12 s a photo at 4, 0.20 s
alone and 0.26 s at 8 (memory-bound), and 4 photos of 500×400 peak at 1.8 GiB (8: 2.7 GiB); benchmarks/README.md §4."""


@dataclass(frozen=True)
class EditSettings:
    """How edits are fitted.

    Attributes:
        steps: optimisation steps per photo (or per batch for the network); 0 fits nothing
            (not even :func:`coarse_start`), so the edit is the identity. From the coarse start, the first
            5 steps make 0.25 of the objective's fall of 0.29 over 10, and protocol §2 and §3 are the same at
            5 as at 10 (benchmarks/README.md §4).
        lr: Adam learning rate. Adam's first steps move every raw parameter by about ``lr`` whatever its
            gradient; from the coarse start, 0.005 reaches a lower objective in 10 steps than 0.03 in 25
            (benchmarks/README.md, §4).
        fidelity: weight of the mean absolute change from the input. At 4 the generic retouch of clean photos
            changes them about two thirds as much as at 2 (ΔE00 3.55 against 5.07, lowest PSNR 19.9 against
            14.9 dB) while it restores degraded ones about as well (under-exposure 24.2 against 24.6 dB);
            benchmarks/README.md §2.
        regularization: weight of the ops' regularisers.
        work_size: longer side of the copy the parameters are fitted on; at least
            :data:`~retouch.dehaze.DEHAZE_WORK_SIZE`, dehaze estimates the haze of the copy and of the photo alike.
        clip_guard: weight of the share of pixels the edit clips that the input did not
            (:func:`~retouch.metrics.new_clipping`): at 100, clipping 1% more of the photo costs
            as much as a score point.
        neutral_guard: weight of the cast on the input's near-neutral pixels
            (:func:`~retouch.metrics.neutral_cast`, chroma beyond 5): at 0.2, a cast of chroma 10 on
            whites and greys costs as much as a score point.
        patience: a photo's fit stops once its objective has not improved by ``min_improvement`` for this
            many steps; 0 runs every step.
        min_improvement: the least fall of the objective that counts as an improvement for ``patience``.
        neutral_limit: after fitting, the most mean CIELAB chroma that the input's near-neutral pixels
            (:func:`~retouch.metrics.neutral_chroma`) may have in the edited photo where they cover at least
            :data:`~retouch.metrics.NEUTRAL_AREA` of it (:func:`hold_to_limits`, on a copy of at most
            :data:`HOLD_SIZE`); ``inf`` holds no limit.
        clip_limit: after fitting, the most share of the photo that the edit may clip beyond the input
            (:func:`~retouch.metrics.clipped_share`, 0.003 is 0.3 percentage points); ``inf`` holds no limit.
        loss_odds: 0 fits the loss as it is; ``R > 0`` fits a loss with values in ``(0, R)`` (an
            :class:`~persaes.core.aesthetic_loss.AestheticLoss`: 9) as its log-odds :func:`odds_loss`, whose
            slope is 1 at ``R / 2`` and grows toward either end, the guards scaled by that slope
            (:func:`odds_slope`) so that they keep their price against the loss. A profile's score saturates
            near 1 and 10 for photos its taste puts far to one side, where ``10 − f(x)`` is flat and the taste
            no longer moves the edit (:func:`persaes.core.retouching.taste_settings`).
    """

    steps: int = 5
    lr: float = 0.005
    fidelity: float = 4.0
    regularization: float = 1.0
    work_size: int = 256
    clip_guard: float = 100.0
    neutral_guard: float = 0.2
    patience: int = 0
    min_improvement: float = 0.0
    loss_odds: float = 0.0
    neutral_limit: float = 4.5
    clip_limit: float = 0.003

    def __post_init__(self) -> None:
        if not (isinstance(self.steps, int) and self.steps >= 0 and isinstance(self.work_size, int)
                and self.work_size >= 16):
            raise ValueError(f"steps must be a whole number >= 0 and work_size one >= 16, got {self.steps!r}, "
                             f"{self.work_size!r}")
        if not (isinstance(self.patience, int) and self.patience >= 0):
            raise ValueError(f"patience must be a whole number >= 0, got {self.patience!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        for name in ("fidelity", "regularization", "clip_guard", "neutral_guard", "min_improvement", "loss_odds",
                     "neutral_limit", "clip_limit"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    def as_dict(self) -> dict[str, float]:
        """Return the settings as a JSON-able dict."""
        return asdict(self)


ODDS_FLOOR = 1e-3
""":func:`odds_loss` holds a loss this close to either end of its range: nearer, a score's float32 softmax has no
reliable slope left."""


def odds_loss(losses: Tensor, top: float) -> Tensor:
    """Return ``(top / 4)·log(L / (top − L))`` of losses ``L`` in ``(0, top)``: their log-odds, slope 1 at ``top / 2``.

    Monotone in ``L``, so it ranks edits as the loss does, but it does not flatten toward the ends of the
    range: halving a loss of 0.1 gains as much as halving one of 1. ``L`` is held within
    :data:`ODDS_FLOOR` of each end.

    Args:
        losses: any shape, values in ``[0, top]``.
        top: the top of the loss's range (> 0).

    Returns:
        The same shape, values in about ``±(top / 4)·log(top / ODDS_FLOOR)``.

    Example:
        >>> odds_loss(torch.tensor([4.5, 0.1, 0.05]), 9.0)
        tensor([  0.0000, -10.0994, -11.6716])
    """
    if not top > 0:
        raise ValueError(f"top must be > 0, got {top!r}")
    held = losses.clamp(ODDS_FLOOR, top - ODDS_FLOOR)
    return top / 4 * torch.log(held / (top - held))


def odds_slope(losses: Tensor, top: float) -> Tensor:
    """Return the slope of :func:`odds_loss` at losses ``L``: ``top² / (4·L·(top − L))``, at least 1.

    Where :func:`odds_loss` holds ``L`` (within :data:`ODDS_FLOOR` of an end) it has no slope; there this is 1,
    the loss's own.

    Example:
        >>> odds_slope(torch.tensor([4.5, 0.1, 0.0]), 9.0)
        tensor([ 1.0000, 22.7528,  1.0000])
    """
    inside = (losses > ODDS_FLOOR) & (losses < top - ODDS_FLOOR)
    held = losses.clamp(ODDS_FLOOR, top - ODDS_FLOOR)
    return torch.where(inside, top ** 2 / (4 * held * (top - held)), torch.ones_like(held))


def edit_objectives(loss_fn: LossFn, edited: Tensor, source: Tensor, regularizers: Tensor,
                    settings: EditSettings, original: Tensor | None = None,
                    neutral_mask: Tensor | None = None) -> Tensor:
    """Return each photo's objective, which its edit is fitted to minimise: loss, regularisers and guards.

    A photo's objective is ``loss(edited) + fidelity·mean|edited − source| + regularization·regularizer`` (with
    ``settings.loss_odds``, :func:`odds_loss` of the loss, and the guards times its :func:`odds_slope`), plus the
    guards: ``clip_guard·new_clipping(edited, original) + neutral_guard·neutral_cast(edited, original)``. The guards
    hold however much the loss gains: no taste licenses clipping or casts.

    Args:
        loss_fn: images → one loss per photo (B), or a scalar when B is 1.
        edited: the edited photos, :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        source: the photos before the edit, same shape.
        regularizers: each photo's edit regulariser, :math:`(B,)`.
        settings: the weights of the terms.
        original: the photos as they were before any retouch, which the guards measure clipping and casts
            against (default: ``source``; for an edit on top of another retouch, the untouched photos), same shape.
        neutral_mask: ``near_neutral_mask(original)``, computed once for the many steps of a fit; default: computed.

    Returns:
        :math:`(B,)` objectives.

    Raises:
        ValueError: ``loss_fn`` gives one value for a batch of several photos.
    """
    losses = loss_fn(edited).reshape(-1)
    if len(losses) != len(edited):
        raise ValueError(f"the loss gives {len(losses)} value(s) for {len(edited)} photos; fitting several photos "
                         "at once needs one loss per photo (e.g. AestheticLoss(reduction='none'))")
    original = source if original is None else original
    guards = (settings.clip_guard * new_clipping(edited, original)
              + settings.neutral_guard * neutral_cast(edited, original, neutral_mask))
    if settings.loss_odds:
        # the guards keep their price in the loss's own units: scaled by the log-odds' slope where the photo is
        guards = guards * odds_slope(losses.detach(), settings.loss_odds)
        losses = odds_loss(losses, settings.loss_odds)
    fidelity = (edited - source).abs().mean(dim=(1, 2, 3))
    return losses + settings.fidelity * fidelity + settings.regularization * regularizers + guards


def within_limits(edited: Tensor, source: Tensor, original: Tensor, settings: EditSettings) -> tuple[Tensor, Tensor]:
    """Whether each edit keeps ``settings.clip_limit``, and whether it keeps ``settings.neutral_limit``.

    An edit is held to a limit, or to what ``source`` (the photo before this edit) had already if that was more:
    an edit on top of a base retouch is not blamed for the base's casts, only for adding to them.

    Args:
        edited: the edited photos, :math:`(B, 3, H, W)` in :math:`[0, 1]`.
        source: the photos before the edit, same shape.
        original: the untouched photos (``source`` unless the edit is on top of another retouch), same shape.
        settings: the limits.

    Returns:
        Two :math:`(B,)` booleans: clipping within its limit, near-neutral chroma within its limit.

    Example:
        >>> grey = torch.full((2, 3, 8, 8), 0.5)
        >>> cast = torch.cat([grey[:1], grey[1:] * torch.tensor([1.15, 1.0, 0.85]).view(1, 3, 1, 1)])
        >>> within_limits(cast, grey, grey, EditSettings())
        (tensor([True, True]), tensor([ True, False]))
    """
    base_clipped = clipped_share(original)
    allowed = (clipped_share(source) - base_clipped).clamp_min(settings.clip_limit)
    clipping = clipped_share(edited) - base_clipped <= allowed + 1e-6
    mask = near_neutral_mask(original)
    neutral = mask.flatten(1).float().mean(dim=1) >= NEUTRAL_AREA
    casts = torch.ones_like(clipping)
    if neutral.any():
        chroma = neutral_chroma(edited, original, mask).nan_to_num(0.0)
        allowed = neutral_chroma(source, original, mask).nan_to_num(0.0).clamp_min(settings.neutral_limit)
        casts = ~neutral | (chroma <= allowed + 1e-4)
    return clipping, casts


HOLD_SIZE = 1024
"""Longest side of the copy of a photo that :func:`optimize_edits` holds its fitted edit to the limits on. Not the
fitting copy: downscaling averages out fine colour noise that an edit amplifies (a dehaze of strength 0.57 on a
500×400 photo: near-neutral chroma 2.6 on its 256-px copy, 5.2 on the photo; benchmarks/README.md §3)."""

#: The blends :func:`hold_to_limits` tries, in order, for each group of parameters: the share of the fitted change
#: from the identity that is kept.
HOLD_BLENDS = (0.8, 0.6, 0.4, 0.2, 0.0)


def uncast(state: Mapping[str, Tensor], identity: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Return raw parameters with the parts of an edit that can cast colour taken out, its tone kept.

    Those parts: the colour op (white balance, saturation, LUT), the exposure curves' spread between channels (each
    iteration's curve becomes the mean of the three, :func:`~retouch.exposure.channel_spread` 0) and dehaze's airlight
    tint.

    Args:
        state: raw parameters, ``"<op>.<name>"`` keys, one row per photo.
        identity: the identity's raw parameters (one row), same keys.

    Returns:
        A new dict with ``state``'s keys and shapes.
    """
    out = {key: value.clone() for key, value in state.items()}
    for key in out:
        if key.startswith("color.") or key == "dehaze.airlight_offset":
            out[key][:] = identity[key]
    if "exposure.raw" in out:
        per_channel = out["exposure.raw"].unflatten(1, (-1, 3))
        out["exposure.raw"] = per_channel.mean(dim=2, keepdim=True).expand_as(per_channel).flatten(1, 2).contiguous()
    return out


@torch.no_grad()
def hold_to_limits(retoucher: Retoucher, state: Mapping[str, Tensor], source: Tensor, original: Tensor,
                   settings: EditSettings) -> dict[str, Tensor]:
    """Blend each photo's fitted parameters back until its edit keeps the limits.

    A photo whose edit is not :func:`within_limits` first has the parts of its edit that cast colour (:func:`uncast`)
    taken back, :data:`HOLD_BLENDS` in turn, until it keeps both limits, its tone edit kept. One that still does not
    (it clips, or its tone edit tints near-neutral pixels: haze added toward a coloured airlight, a dehaze that
    amplifies their colour noise) then has its whole edit blended toward the identity. The first blend within the
    limits is kept; at the identity an edit changes nothing and keeps them by definition.

    Args:
        retoucher: the chain the parameters belong to (renders them).
        state: fitted raw parameters, one row per photo (:meth:`~retouch.pipeline.Retoucher.state` layout).
        source: the photos the edits apply to, :math:`(B, 3, h, w)` in :math:`[0, 1]` (any size: the edit is
            resolution-independent).
        original: the untouched photos, same shape.
        settings: the limits (``settings.neutral_limit``, ``settings.clip_limit``).

    Returns:
        The held parameters, a new dict with ``state``'s keys and shapes.
    """
    held = {key: value.clone() for key, value in state.items()}

    def failing(rows: Tensor) -> Tensor:
        if not len(rows):
            return rows
        params = {key: value[rows].to(source.device) for key, value in held.items()}
        clipping, casts = within_limits(retoucher.render(source[rows], params), source[rows], original[rows], settings)
        return rows[~(clipping & casts).cpu()]

    pending = failing(torch.arange(len(source)))
    if not len(pending):
        return held
    identity = {key: value.expand_as(state[key]) for key, value in Retoucher.shaped_like(state).state().items()}

    def blend_toward(target: Mapping[str, Tensor], rows: Tensor) -> Tensor:
        start = {key: value.clone() for key, value in held.items()}
        for share in HOLD_BLENDS:
            if not len(rows):
                break
            for key in held:
                held[key][rows] = target[key][rows] + share * (start[key][rows] - target[key][rows])
            rows = failing(rows)
        return rows

    blend_toward(identity, blend_toward(uncast(state, identity), pending))
    return held


def row_regularizations(retoucher: Retoucher, params: Mapping[str, Tensor] | None = None) -> Tensor:
    """Return the regulariser of each row of a chain's raw parameters, :math:`(B,)` for parameters of B rows."""
    params = dict(retoucher.named_parameters()) if params is None else params
    rows = len(next(iter(params.values())))
    return torch.stack([retoucher.regularization({key: value[row:row + 1] for key, value in params.items()})
                        for row in range(rows)])


def _hold_on_photo(retoucher: Retoucher, state: Mapping[str, Tensor], image: Tensor, original: Tensor | None,
                   settings: EditSettings) -> dict[str, Tensor]:
    """:func:`hold_to_limits` of one photo's edit on a copy of the photo of at most :data:`HOLD_SIZE`.

    ``original`` is the untouched photo when ``image`` is a retouch already (same size); ``None``: ``image``.
    """
    source = resize_to_fit(image, HOLD_SIZE)
    reference = source if original is None else resize_to_fit(original, HOLD_SIZE)
    return hold_to_limits(retoucher, state, source, reference, settings)


def _objective_values(value: Tensor | float) -> Tensor:
    return torch.as_tensor(value).detach().reshape(-1)


@torch.no_grad()
def coarse_start(retoucher: Retoucher, objective: Callable[[], Tensor]) -> None:
    """Set each op's main knob, one op after the other, to its best coarse starting point.

    Gradient steps alone stay near the identity when the loss is flat there and only rises
    further out (a hazy photo scores little better at dehaze strength 0.3 but much better at
    0.9, while the regularisers pull toward 0). So before the steps, each op's
    ``starts()`` (e.g. dehaze strengths −0.3…0.9) are tried in the chain's order, and the
    one with the lowest ``objective()`` is kept if it beats the current parameters. A chain whose
    parameters have B rows (one per photo, see :func:`optimize_edits`) chooses each row's start by its
    own objective.

    Args:
        retoucher: the chain, changed in place.
        objective: evaluates the fitting objective for the chain's current parameters: a scalar, or one
            value per row of the parameters.
    """
    best_value = _objective_values(objective())  # each op starts from the chain's best so far
    for name in retoucher.ops:
        op = getattr(retoucher, name)
        current = {key: value.detach().clone() for key, value in op.named_parameters()}
        best = {key: value.clone() for key, value in current.items()}
        for start in op.starts():
            for key, value in start.items():
                getattr(op, key).copy_(value.expand_as(current[key]))
            value = _objective_values(objective())
            better = value < best_value
            best_value = torch.where(better, value, best_value)
            for key in start:
                best[key][better] = getattr(op, key)[better]
                getattr(op, key).copy_(current[key])
        for key, value in best.items():
            getattr(op, key).copy_(value)


def _widen(retoucher: Retoucher, rows: int) -> Retoucher:
    """Give every parameter of ``retoucher`` ``rows`` rows (copies of its one row), in place."""
    for name in retoucher.ops:
        op = getattr(retoucher, name)
        for key, value in list(op.named_parameters()):
            setattr(op, key, torch.nn.Parameter(value.detach().repeat(rows, *[1] * (value.dim() - 1))))
    return retoucher


def _fit_batch(small: Tensor, loss_fn: LossFn, ops: Iterable[str], settings: EditSettings,
               original: Tensor) -> list[Retoucher]:
    """Fit the edits of B photos of one size together; one chain per photo.

    ``small`` is :math:`(B, 3, h, w)`; ``original`` (what the guards measure against) has the same shape.
    """
    retoucher = _widen(Retoucher(ops).to(small.device), len(small))
    neutral = near_neutral_mask(original)
    if settings.steps > 0:
        coarse_start(retoucher, lambda: edit_objectives(loss_fn, retoucher(small), small,
                                                        row_regularizations(retoucher), settings, original, neutral))
    optimizer = torch.optim.Adam(retoucher.parameters(), lr=settings.lr)
    best_values = torch.full((len(small),), float("inf"))
    best_state = retoucher.state()
    stale = torch.zeros(len(small), dtype=torch.long)  # steps since each photo last improved by min_improvement
    active = torch.arange(len(small))
    for step in range(settings.steps + 1):
        params = {key: value[active] for key, value in retoucher.named_parameters()}
        with torch.no_grad() if step == settings.steps else nullcontext():  # the last step is only looked at
            values = edit_objectives(loss_fn, retoucher.render(small[active], params), small[active],
                                     row_regularizations(retoucher, params), settings, original[active],
                                     neutral[active])
        found = values.detach().cpu()
        better = found < best_values[active]
        progress = found < best_values[active] - settings.min_improvement
        for key, value in params.items():
            best_state[key][active[better]] = value.detach().cpu()[better]
        best_values[active] = torch.where(better, found, best_values[active])
        stale[active] = torch.where(progress, 0, stale[active] + 1)
        keep = stale[active] < settings.patience if settings.patience else torch.ones_like(better)
        if step == settings.steps or not keep.any():
            break
        optimizer.zero_grad()
        values[keep].sum().backward()
        for parameter in retoucher.parameters():  # a non-finite gradient (a scorer's blind spot) moves nothing
            if parameter.grad is not None:
                parameter.grad.nan_to_num_(0.0, 0.0, 0.0)
        optimizer.step()
        active = active[keep]
    return [Retoucher.from_state({key: value[row:row + 1] for key, value in best_state.items()}).to(small.device).eval()
            for row in range(len(small))]


def optimize_edits(images: Sequence[Tensor], loss_fn: LossFn, ops: Iterable[str] = OPS,
                   settings: EditSettings | None = None, seed: int = 0, batch_size: int = FIT_BATCH,
                   originals: Sequence[Tensor] | None = None) -> list[Retoucher]:
    """Fit the edit parameters of several photos, those of one working size together in batches.

    Each photo's edit is what :func:`optimize_edit` fits for it alone (the photos of a batch share the
    scorer's passes, not their parameters or objectives): started from :func:`coarse_start`, then Adam
    steps on the sum of the photos' objectives (:func:`edit_objectives`), each photo's step of lowest
    objective kept. With ``settings.patience``, a photo leaves its batch once its objective has not
    improved by ``settings.min_improvement`` for that many steps.

    Args:
        images: photos, each :math:`(1, 3, H, W)` in :math:`[0, 1]`, of any sizes (small copies are fitted).
        loss_fn: images → one loss per photo (e.g. ``AestheticLoss(reduction="none")``); a loss giving a
            scalar fits one photo at a time.
        ops: ops to use (see :data:`retouch.OPS`).
        settings: steps, learning rate, early stopping and regulariser weights.
        seed: fixes any randomness (deterministic on the CPU).
        batch_size: most photos fitted together.
        originals: for edits made on top of another retouch (``images``), the untouched photos, each the size
            of its image: the guards hold the edits to them (:func:`edit_objectives`). Default: ``images``.

    Returns:
        One fitted :class:`Retoucher` per photo, in order (on its device). Apply it to the full photo with
        ``retouch_full``.

    Raises:
        ValueError: an image is not one photo in ``[0, 1]``, or ``originals`` do not match ``images``.

    Example:
        >>> photos = [0.3 * torch.rand(1, 3, 24, 32), 0.5 * torch.rand(1, 3, 32, 24)]
        >>> too_dark = lambda images: 10 * (0.6 - images.mean(dim=(1, 2, 3))).abs()   # one value per photo
        >>> fitted = optimize_edits(photos, too_dark, ("exposure",), EditSettings(steps=10, work_size=32))
        >>> [bool(r.retouch_full(p).mean() > p.mean()) for r, p in zip(fitted, photos)]
        [True, True]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    settings = settings or EditSettings()
    for image in images:
        check_image(image)
        if image.shape[0] != 1:
            raise ValueError(f"each photo is one image (1×3×H×W), got a batch of {image.shape[0]}")
    if originals is not None and [o.shape for o in originals] != [i.shape for i in images]:
        raise ValueError("originals must be one photo of the same size for each image")
    torch.manual_seed(seed)
    smalls = [resize_to_fit(image, settings.work_size).detach() for image in images]
    guarded = smalls if originals is None else [resize_to_fit(o, settings.work_size).detach() for o in originals]
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, small in enumerate(smalls):
        by_shape.setdefault(tuple(small.shape), []).append(index)
    fitted: list[Retoucher | None] = [None] * len(images)
    for indices in by_shape.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            batch = _fit_batch(torch.cat([smalls[i] for i in chunk]), loss_fn, ops, settings,
                               torch.cat([guarded[i] for i in chunk]))
            for index, retoucher in zip(chunk, batch):
                fitted[index] = retoucher
    for index, retoucher in enumerate(fitted):
        if retoucher is not None:  # each edit as the photo shows it: fine colour noise the copy averages out
            original = None if originals is None else originals[index]
            retoucher.load_state_dict(_hold_on_photo(retoucher, retoucher.state(), images[index], original, settings))
    return [retoucher for retoucher in fitted if retoucher is not None]


@torch.no_grad()
def predicted_edit(net: RetouchNet, image: Tensor, settings: EditSettings | None = None,
                   original: Tensor | None = None) -> Retoucher:
    """Return a :class:`RetouchNet`'s edit of one photo as a chain, held to the limits as fitted edits are.

    Args:
        net: the trained network.
        image: 1×3×H×W in ``[0, 1]``.
        settings: the limits (``neutral_limit``, ``clip_limit``); default :class:`EditSettings`.
        original: the untouched photo when ``image`` is a retouch already (same size); default ``image``.

    Returns:
        The predicted edit (on ``image``'s device), after :func:`hold_to_limits` on a copy of the photo of at most
        :data:`HOLD_SIZE`. Apply it with ``retouch_full``.

    Example:
        >>> net = RetouchNet(("color",))
        >>> _ = net.retoucher.color.log_gains.data.copy_(torch.tensor([[0.3, 0.0, -0.3]]))   # a strong cast
        >>> grey = torch.full((1, 3, 16, 16), 0.5)
        >>> bool(neutral_chroma(net(grey), grey) > 10), bool(neutral_chroma(predicted_edit(net, grey)(grey), grey) < 5)
        (True, True)
    """
    check_image(image)
    settings = settings or EditSettings()
    state = {key: value.detach().cpu() for key, value in net.predict(image).items()}
    held = _hold_on_photo(net.retoucher, state, image, original, settings)
    haze = getattr(net.retoucher, "dehaze", None)
    kwargs = {} if haze is None else {"dehaze_patch": haze.patch, "dehaze_work_size": haze.work_size}
    return Retoucher.from_state(held, **kwargs).to(image.device).eval()


def optimize_edit(image: Tensor, loss_fn: LossFn, ops: Iterable[str] = OPS,
                  settings: EditSettings | None = None, seed: int = 0) -> Retoucher:
    """Fit one photo's edit parameters against ``loss_fn`` (:func:`optimize_edits` for one photo).

    Args:
        image: 1×3×H×W in ``[0, 1]`` (any size; a small copy is used for fitting).
        loss_fn: images → scalar loss to minimise.
        ops: ops to use (see :data:`retouch.OPS`).
        settings: steps, learning rate and regulariser weights.
        seed: fixes any randomness (deterministic on the CPU).

    Returns:
        The fitted :class:`Retoucher` (on ``image``'s device), started from
        :func:`coarse_start`; the step with the lowest objective is kept. Apply it to the full photo with
        ``retouch_full``.

    Raises:
        ValueError: ``image`` is not one photo in ``[0, 1]`` (:func:`optimize_edits` checks it).
    """
    return optimize_edits([image], loss_fn, ops, settings, seed)[0]


def train_retouch_net(pairs: Callable[[], Iterable[tuple[Tensor, Tensor]]],
                      ops: Iterable[str] = OPS, epochs: int = 100, lr: float = 0.01,
                      seed: int = 0, device: torch.device | str = "cpu",
                      on_step: Callable[[int, float], None] | None = None) -> RetouchNet:
    """Train a :class:`RetouchNet` to make fitted edits in one pass (amortised optimisation).

    Fitting an edit against a loss (:func:`optimize_edit`) costs dozens of scorer passes per
    photo; the network learns to predict such edits from the photo itself. Its objective is
    ``mean|net(x) − target|``, so it needs no scorer pass and trains for many epochs in the time
    of a few fits. The targets carry the fit's regularisers; charging them again held the network
    short of strong edits, and the ops' bounds hold whatever it predicts.

    Args:
        pairs: called once per epoch, yields ``(inputs, targets)``, both B×3×h×w in ``[0, 1]``:
            photos and their edits fitted against a loss (e.g. pairs of
            :func:`persaes.app.retouch_training.fitted_pair`).
        ops: ops the network predicts.
        epochs: passes over ``pairs()``.
        lr: Adam learning rate.
        seed: fixes initialisation.
        device: where the network trains.
        on_step: ``on_step(step, objective)`` after every optimiser step.

    Example:
        >>> photos = torch.rand(4, 3, 32, 32) * 0.5
        >>> net = train_retouch_net(lambda: [(photos, photos * 1.5)], ("exposure",), epochs=2)
    """
    torch.manual_seed(seed)
    net = RetouchNet(ops).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    step = 0
    net.train()
    for _ in range(epochs):
        for inputs, targets in pairs():
            inputs, targets = inputs.to(device), targets.to(device)
            objective = (net(inputs) - targets).abs().mean()
            optimizer.zero_grad()
            objective.backward()
            optimizer.step()
            step += 1
            if on_step is not None:
                on_step(step, float(objective.detach()))
    return net.eval()
