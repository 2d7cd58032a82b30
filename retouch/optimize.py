"""Fit edits against a differentiable loss, per photo or as a feed-forward network.

:func:`optimize_edit` fits one photo's edit parameters; :func:`train_retouch_net` trains a
feed-forward network that learns to make such fitted edits in one pass.

The loss is any callable ``images -> scalar`` (e.g. ``persaes.AestheticLoss``). Regularisers
keep edits natural, the answer to "the model learns to over-brighten": a fidelity term
(mean absolute change from the input), the ops' own smoothness/strength terms, bounded
parameters (every op maps raw parameters into a safe range), and two guards that no gain of
the loss outweighs: no new clipped highlights or crushed shadows, no cast on the input's
whites and greys.

Parameters are fitted on a copy whose longer side is at most ``work_size``; they are
global or coarse grids, so the same edit then applies to the full-size photo in one pass.

Example:
    >>> photo = 0.3 * torch.rand(1, 3, 240, 320, generator=torch.Generator().manual_seed(0))   # a dark photo
    >>> too_dark = lambda images: 10 * (0.5 - images.mean()).abs()   # in real use e.g. AestheticLoss("generic")
    >>> retoucher = optimize_edit(photo, too_dark, settings=EditSettings(steps=10, work_size=32))
    >>> full = retoucher.retouch_full(photo)                         # the fitted edit, applied at full size
    >>> full.shape, float(photo.mean()) < 0.2, float(full.mean()) > 0.4
    (torch.Size([1, 3, 240, 320]), True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from .color import check_image
from .dehaze import resize_to_fit
from .metrics import neutral_cast, new_clipping
from .pipeline import OPS, Retoucher, RetouchNet

LossFn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class EditSettings:
    """How edits are fitted.

    Attributes:
        steps: optimisation steps per photo (or per batch for the network); 0 fits nothing
            (not even :func:`coarse_start`), so the edit is the identity.
        lr: Adam learning rate.
        fidelity: weight of the mean absolute change from the input.
        regularization: weight of the ops' regularisers.
        work_size: longer side of the copy the parameters are fitted on.
        clip_guard: weight of the share of pixels the edit clips that the input did not
            (:func:`~retouch.metrics.new_clipping`): at 100, clipping 1% more of the photo costs
            as much as a score point.
        neutral_guard: weight of the cast on the input's near-neutral pixels
            (:func:`~retouch.metrics.neutral_cast`, chroma beyond 5): at 0.2, a cast of chroma 10 on
            whites and greys costs as much as a score point.
    """

    steps: int = 25
    lr: float = 0.03
    fidelity: float = 2.0
    regularization: float = 1.0
    work_size: int = 256
    clip_guard: float = 100.0
    neutral_guard: float = 0.2

    def __post_init__(self) -> None:
        if not (isinstance(self.steps, int) and self.steps >= 0 and isinstance(self.work_size, int)
                and self.work_size >= 16):
            raise ValueError(f"steps must be a whole number >= 0 and work_size one >= 16, got {self.steps!r}, "
                             f"{self.work_size!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        for name in ("fidelity", "regularization", "clip_guard", "neutral_guard"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    def as_dict(self) -> dict[str, float]:
        """Return the settings as a JSON-able dict."""
        return asdict(self)


def edit_objective(loss_fn: LossFn, edited: Tensor, source: Tensor, regularizer: Tensor,
                   settings: EditSettings) -> Tensor:
    """Return the scalar objective an edit is fitted to minimise: the loss, the regularisers and the guards.

    The objective is ``loss(edited) + fidelity·mean|edited − source| + regularization·regularizer``, plus the
    guards: ``clip_guard·new_clipping(edited, source) + neutral_guard·neutral_cast(edited, source)`` (means over
    the batch). The guards hold however much the loss gains: no taste licenses clipping or casts.
    """
    guards = (settings.clip_guard * new_clipping(edited, source).mean()
              + settings.neutral_guard * neutral_cast(edited, source).mean())
    return (loss_fn(edited) + settings.fidelity * (edited - source).abs().mean()
            + settings.regularization * regularizer + guards)


@torch.no_grad()
def coarse_start(retoucher: Retoucher, objective: Callable[[], Tensor]) -> None:
    """Set each op's main knob, one op after the other, to its best coarse starting point.

    Gradient steps alone stay near the identity when the loss is flat there and only rises
    further out (a hazy photo scores little better at dehaze strength 0.3 but much better at
    0.9, while the regularisers pull toward 0). So before the steps, each op's
    ``starts()`` (e.g. dehaze strengths −0.3…0.9) are tried in the chain's order, and the
    one with the lowest ``objective()`` is kept if it beats the current parameters.

    Args:
        retoucher: the chain, changed in place.
        objective: evaluates the fitting objective for the chain's current parameters.
    """
    for name in retoucher.ops:
        op = getattr(retoucher, name)
        best, best_value = None, float(objective())
        for start in op.starts():
            saved = {key: getattr(op, key).detach().clone() for key in start}
            for key, value in start.items():
                getattr(op, key).copy_(value)
            value = float(objective())
            if value < best_value:
                best, best_value = start, value
            for key, value in saved.items():
                getattr(op, key).copy_(value)
        for key, value in (best or {}).items():
            getattr(op, key).copy_(value)


def optimize_edit(image: Tensor, loss_fn: LossFn, ops: Iterable[str] = OPS,
                  settings: EditSettings | None = None, seed: int = 0) -> Retoucher:
    """Fit one photo's edit parameters against ``loss_fn``.

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
    """
    check_image(image)
    if image.shape[0] != 1:
        raise ValueError(f"optimize_edit fits one photo at a time, got a batch of {image.shape[0]}")
    settings = settings or EditSettings()
    torch.manual_seed(seed)
    small = resize_to_fit(image, settings.work_size).detach()
    retoucher = Retoucher(ops).to(image.device)
    if settings.steps > 0:
        coarse_start(retoucher, lambda: edit_objective(loss_fn, retoucher(small), small, retoucher.regularization(),
                                                        settings))
    optimizer = torch.optim.Adam(retoucher.parameters(), lr=settings.lr)
    best = (float("inf"), retoucher.state())
    for _ in range(settings.steps + 1):
        objective = edit_objective(loss_fn, retoucher(small), small, retoucher.regularization(), settings)
        value = float(objective.detach())
        if value < best[0]:
            best = (value, retoucher.state())
        optimizer.zero_grad()
        objective.backward()
        optimizer.step()
    retoucher.load_state_dict(best[1])
    return retoucher.eval()


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
