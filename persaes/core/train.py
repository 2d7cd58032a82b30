"""The two training stages of the method, on cached features (heads) or live images (full).

* Generic stage (:func:`train_generic`): EMD between the head's distribution and the rated
  references' histograms, optionally joined by a ranking objective on pairs (the quality
  prior: an original beats its degraded versions).
* Personal stage (:func:`train_personal`): a pairwise loss (hinge, margin 0.1, by default)
  on the user's answered and inferred pairs; AdamW with the learning rate halved every
  ``halve_every`` iterations, as in the paper; optional pull toward the starting weights.

Features come from a *source*: a function from a LongTensor of photo indices to
``(Z1, Z2, pooled Z3, statistics, thumbnail)`` float32 tensors.
:meth:`persaes.core.features.Features.take` is the cached source; :func:`live_source` runs the
backbone (for ``--finetune-backbone``).

Example:
    >>> from persaes.core.features import Features
    >>> g = torch.Generator().manual_seed(0)                 # tiny stand-ins for 4 photos' cached features
    >>> feats = Features(torch.randn(4, 8, 3, 3, generator=g), torch.randn(4, 16, 3, 3, generator=g),
    ...                  torch.randn(4, 32, generator=g), torch.randn(4, STATS, generator=g), torch.zeros(4, 3, 96, 96))
    >>> head = AttentionHead((8, 16, 32))                     # channels of Z1, Z2, Z3
    >>> pairs = torch.tensor([[0, 1], [1, 2], [2, 3]])        # photo 0 preferred to 1, 1 to 2, 2 to 3
    >>> losses = train_personal(head, feats.take, pairs, PersonalSettings(iterations=20, lr=1e-2))
    >>> len(losses), losses[-1]
    (20, 0.0)
    >>> scores = distribution_to_score(head(*feats.take([0, 1, 2, 3])))
    >>> bool((scores[:-1] > scores[1:]).all())                # the head now ranks the photos as answered
    True
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from persaes.core import distributed
from persaes.core.losses import PAIR_LOSSES, emd_loss, hinge_pair_loss
from persaes.core.model import STATS, AestheticModel, AttentionHead, distribution_to_score
from persaes.core.taste import TasteChoice, TastePart, choose_strength, expanded_pairs, fit_taste
from persaes.io.safetensors_file import read_safetensors, write_safetensors
from retouch.optimize import EditSettings

Source = Callable[[Tensor], tuple[Tensor, Tensor, Tensor, Tensor, Tensor]]


def _require(ok: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``ok``: the settings' checks on construction."""
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class GenericSettings:
    """Generic stage: the paper's 10 epochs at batch 32 (AdamW), validated on construction.

    ``pair_weight``, ``pair_margin`` and ``pair_content_grad`` shape the optional ranking term
    on pairs (the quality prior); ``pair_content_grad`` is the share of that term's gradient
    that reaches the head's content path (see :meth:`persaes.core.model.AttentionHead.forward`):
    at 1 the pairs also reshape how photos are ranked by content, which ranks held-out photos by
    consensus beauty worse (benchmarks/README.md, §2).

    Example:
        >>> GenericSettings(epochs=0)
        Traceback (most recent call last):
        ...
        ValueError: epochs must be a whole number >= 1, got 0
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    pair_weight: float = 1.0
    pair_margin: float = 0.1
    pair_content_grad: float = 0.5

    def __post_init__(self) -> None:
        _require(isinstance(self.epochs, int) and self.epochs >= 1,
                 f"epochs must be a whole number >= 1, got {self.epochs!r}")
        _require(isinstance(self.batch_size, int) and self.batch_size >= 1,
                 f"batch_size must be a whole number >= 1, got {self.batch_size!r}")
        _require(self.lr > 0, f"lr must be > 0, got {self.lr!r}")
        _require(self.weight_decay >= 0 and self.pair_weight >= 0 and self.pair_margin >= 0,
                 "weight_decay, pair_weight and pair_margin must be >= 0")
        _require(0.0 <= self.pair_content_grad <= 1.0,
                 f"pair_content_grad must be in [0, 1], got {self.pair_content_grad!r}")

    def as_dict(self) -> dict[str, float]:
        """The settings as a JSON-able dict (recorded in weights metadata)."""
        return asdict(self)


@dataclass(frozen=True)
class GenericRecipe:
    """How a generic weights file is made from its data (``weights/recipes/make_generic.py``).

    ``training`` is the generic stage's settings over the rated references and the quality
    prior's pairs; ``quality_width`` the channels of the quality branch's thumbnail CNN (0: the
    content-free statistics alone); ``draws`` the seeded versions per training photo and
    degradation kind. ``harden_rounds`` rounds of hardening against the retouching optimiser
    each fit the generic retouch of ``harden_photos`` further training photos against the
    weights as they are; every edit scored more than ``harden_gain`` above its original becomes
    a pair the original wins (entered ``harden_repeat`` times an epoch), and the head trains
    ``harden_epochs`` more epochs on all pairs. The hardening fits use ``harden_edit``, every
    field spelled out: the generic retouch's settings when the ``hardened`` file was made (10 steps,
    fidelity weight 2; ``persaes retouch`` now fits 5 steps at 4), so that the recipe keeps making
    that file whatever :class:`~retouch.optimize.EditSettings`' defaults become.
    """

    training: GenericSettings
    quality_width: int = 16
    draws: int = 2
    harden_rounds: int = 0
    harden_photos: int = 120
    harden_gain: float = 0.05
    harden_epochs: int = 3
    harden_repeat: int = 20
    harden_edit: EditSettings = EditSettings(steps=10, lr=0.005, fidelity=2.0, regularization=1.0, work_size=256,
                                             clip_guard=100.0, neutral_guard=0.2, patience=0, min_improvement=0.0,
                                             loss_odds=0.0, neutral_limit=4.5, clip_limit=0.003)

    def __post_init__(self) -> None:
        _require(self.quality_width >= 0 and self.harden_rounds >= 0, "quality_width and harden_rounds must be >= 0")
        _require(self.draws >= 1 and self.harden_photos >= 1 and self.harden_epochs >= 1 and self.harden_repeat >= 1,
                 "draws, harden_photos, harden_epochs and harden_repeat must be >= 1")


def generic_recipe(name: str, epochs: int | None = None, **fields: int | None) -> GenericRecipe:
    """The named :data:`GENERIC_RECIPES` entry with the fields given (``None``: the recipe's own).

    Args:
        name: a key of :data:`GENERIC_RECIPES`.
        epochs: epochs of the generic stage (``training.epochs``).
        fields: other :class:`GenericRecipe` fields, e.g. ``quality_width``, ``draws``, ``harden_rounds``.

    Example:
        >>> recipe = generic_recipe("thumbnail", epochs=2, quality_width=0, draws=None)
        >>> recipe.training.epochs, recipe.training.pair_weight, recipe.quality_width, recipe.draws
        (2, 3.0, 0, 2)
    """
    if name not in GENERIC_RECIPES:
        raise ValueError(f"unknown generic recipe {name!r}; known: {', '.join(sorted(GENERIC_RECIPES))}")
    recipe = GENERIC_RECIPES[name]
    training = recipe.training if epochs is None else replace(recipe.training, epochs=epochs)
    return replace(recipe, training=training, **{k: v for k, v in fields.items() if v is not None})


_STATISTICS = GenericRecipe(GenericSettings(epochs=10, pair_weight=3.0, pair_margin=0.5), quality_width=0)
GENERIC_RECIPES: dict[str, GenericRecipe] = {
    "statistics": _STATISTICS,
    "hardened": replace(_STATISTICS, harden_rounds=2),
    "thumbnail": GenericRecipe(GenericSettings(epochs=40, pair_weight=3.0, pair_margin=0.5)),
}
"""Named generic recipes. ``statistics`` makes ``weights/generic.safetensors``: a quality branch on the
content-free image statistics alone, ten epochs over the references (each going over all
quality-prior pairs once, a ranking term of weight 3 and margin 0.5). ``hardened`` adds two rounds of
hardening against the retouching optimiser (shipped before the prior's pairs included desaturated
versions). ``thumbnail`` adds a thumbnail CNN of width 16 beside the statistics and trains 40 epochs
without hardening: it learns the training photos themselves, ranks held-out photos' versions worse and
retouches clean photos less faithfully (benchmarks/README.md, §2)."""
#: The :data:`GENERIC_RECIPES` entry that makes ``weights/generic.safetensors``: the default of every way to train
#: generic weights.
SHIPPED_RECIPE = "statistics"


@dataclass(frozen=True)
class PersonalSettings:
    """Personal stage: the profile's taste part, optionally after fine-tuning the head.

    ``taste`` fits the profile's :class:`~persaes.core.taste.TastePart` on the answers (a pairwise
    logistic model over style statistics and content features with the fine-tuned or generic
    head as its offset); ``generic_weight`` (the weight ``γ`` of that offset, in ``[0, 1]``),
    ``style_l2`` and ``content_l2`` fix its weight and strengths one by one, and ``None`` lets the
    answers' evidence choose (:func:`persaes.core.taste.choose_strength`).

    ``iterations > 0`` first fine-tunes the head itself with the paper's pairwise loss (hinge,
    margin 0.1), AdamW with the learning rate halved every ``halve_every`` steps. ``anchor``
    weighs an L2 pull of the trained parameters toward their starting values; ``layers`` is
    ``"all"`` (the whole head) or ``"fc"`` (the final linear layer). ``iterations="auto"``
    holds out a seeded fifth of the pairs and keeps the best of :data:`AUTO_CANDIDATES`.
    ``epochs`` caps a set number of iterations at that many passes over the pairs
    (``None``: no cap).
    """

    taste: bool = True
    generic_weight: float | None = None
    style_l2: float | None = None
    content_l2: float | None = None
    iterations: int | str = 0
    epochs: float | None = None
    batch_size: int = 32
    lr: float = 3e-4
    halve_every: int = 500
    loss: str = "hinge"
    margin: float = 0.1
    anchor: float = 0.0
    weight_decay: float = 0.0
    layers: str = "all"

    def __post_init__(self) -> None:
        _require(self.iterations == "auto" or (isinstance(self.iterations, int) and self.iterations >= 0),
                 f"iterations must be 'auto' or a whole number >= 0, got {self.iterations!r}")
        _require(self.loss in PAIR_LOSSES, f"unknown pairwise loss {self.loss!r}; known: {', '.join(PAIR_LOSSES)}")
        _require(self.layers in ("all", "fc"), f"layers must be 'all' or 'fc', got {self.layers!r}")
        _require(self.epochs is None or self.epochs > 0, f"epochs must be None or > 0, got {self.epochs!r}")
        _require(isinstance(self.batch_size, int) and self.batch_size >= 1,
                 f"batch_size must be a whole number >= 1, got {self.batch_size!r}")
        _require(self.lr > 0 and self.halve_every >= 1, "lr must be > 0 and halve_every >= 1")
        _require(self.margin >= 0 and self.anchor >= 0 and self.weight_decay >= 0,
                 "margin, anchor and weight_decay must be >= 0")
        for name in ("style_l2", "content_l2"):
            value = getattr(self, name)
            _require(value is None or value > 0, f"{name} must be None (chosen from the answers) or > 0")
        _require(self.generic_weight is None or 0 <= self.generic_weight <= 1,
                 f"generic_weight must be None (chosen from the answers) or in [0, 1], got {self.generic_weight!r}")

    def as_dict(self) -> dict[str, float | str | bool | None]:
        """The settings as a JSON-able dict (recorded in profile metadata)."""
        return asdict(self)


PERSONAL_PRESETS: dict[str, PersonalSettings] = {
    "taste": PersonalSettings(),
    "paper": PersonalSettings(taste=False, iterations=100, epochs=10.0),
}
"""Named personal stages: ``taste`` (the default) fits the taste part with strengths chosen by
the answers' evidence; ``paper`` is the paper's personal stage, the head fine-tuned
with the hinge loss (at most 100 iterations and 10 passes over the pairs)."""


AUTO_CANDIDATES = (0, 25, 50, 100, 200, 400)
AUTO_HOLDOUT = 0.2
#: Photos whose statistics set the quality branch's standardisation in :func:`train_generic`.
STATS_SAMPLE = 2048


def _pair_accuracy(head: AttentionHead, source: Source, pairs: Tensor) -> float:
    """Share of ``pairs`` (M×2, the first preferred) that ``head`` scores in that order."""
    head.eval()
    with torch.no_grad():
        photos, where = pairs.unique(return_inverse=True)
        scores = distribution_to_score(head(*source(photos)))[where]
    return float((scores[:, 0] > scores[:, 1]).float().mean())


def choose_iterations(head: AttentionHead, source: Source, pairs: Tensor, settings: PersonalSettings,
                      seed: int = 0) -> int:
    """Choose how many iterations to fine-tune on ``pairs``.

    The choice is the best held-out count of a trial run (see :class:`PersonalSettings`); with fewer than
    10 pairs, the middle candidate.
    """
    if len(pairs) < 10:
        return AUTO_CANDIDATES[len(AUTO_CANDIDATES) // 2]
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))
    held = max(2, int(len(pairs) * AUTO_HOLDOUT))
    trial = copy.deepcopy(head)
    scores: dict[int, float] = {0: _pair_accuracy(trial, source, pairs[order[:held]])}

    def check(step: int) -> None:
        if step in AUTO_CANDIDATES:
            scores[step] = _pair_accuracy(trial, source, pairs[order[:held]])
            trial.train()

    trial_settings = replace(settings, iterations=max(AUTO_CANDIDATES), epochs=None)
    train_personal(trial, source, pairs[order[held:]], trial_settings, seed, on_step=check)
    return max(AUTO_CANDIDATES, key=lambda c: (scores[c], -c))


def parse_iterations(text: str | int) -> int | str:
    """``"auto"`` or a positive whole number of iterations (for command-line options)."""
    if text == "auto":
        return "auto"
    value = int(text)
    if value < 0:
        raise ValueError(f"iterations must be 'auto' or a number >= 0, got {text!r}")
    return value


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterable[Tensor]:
    while True:
        yield from torch.randperm(n, generator=generator).split(batch_size)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Return the shuffling generator of one epoch.

    Each epoch's draws depend only on (seed, epoch), so a run resumed from a saved epoch makes the same
    batches as one that never stopped.
    """
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


_STATE_KEY = "persaes_training"
"""The safetensors header key of a training state's metadata."""


def save_training_state(path: Path, head: AttentionHead, optimizer: torch.optim.Optimizer, epoch: int,
                        history: list[float], fingerprint: dict[str, object]) -> None:
    """Write the head, the optimiser's moments and the epochs done to ``path`` (safetensors + JSON), atomically."""
    tensors = {f"head.{k}": v for k, v in head.state_dict().items()}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value)
    meta = {"epoch": epoch, "history": history, "fingerprint": fingerprint}
    write_safetensors(path, tensors, meta, key=_STATE_KEY)


def load_training_state(path: Path, head: AttentionHead, optimizer: torch.optim.Optimizer,
                        fingerprint: dict[str, object]) -> tuple[int, list[float]]:
    """Restore what :func:`save_training_state` wrote; returns ``(epochs done, history)``.

    Raises:
        ValueError: the state belongs to another run (settings, seed or data differ) or is unreadable.
    """
    tensors, meta = read_safetensors(path, key=_STATE_KEY, what="training state")
    if meta.get("fingerprint") != json.loads(json.dumps(fingerprint, sort_keys=True)):
        raise ValueError(f"{path}: training state of another run (settings, seed or data differ); "
                         "remove it or drop --resume")
    head.load_state_dict({k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")})
    state = optimizer.state_dict()
    moments: dict[int, dict[str, Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            moments.setdefault(int(index), {})[key] = value
    state["state"] = moments
    optimizer.load_state_dict(state)
    return int(meta["epoch"]), list(meta["history"])


def _share_mean(values: Tensor, total: int, size: int) -> Tensor:
    """This rank's part of the mean of ``total`` per-item values over ``size`` ranks, ``values`` its own items.

    Scaled so that ``DistributedDataParallel``'s average of the ranks' gradients is the gradient of the
    mean over the whole batch, however the items fall on the ranks; in one process the plain mean.
    """
    return values.mean() if size == 1 else values.sum() * (size / total)


class _StepLoss(nn.Module):
    """The generic stage's loss of one step on this rank's share of the batch (one forward pass, for DDP).

    EMD on the rated photos plus the weighted ranking hinge on the pairs, each the share of its mean
    over the whole batch (:func:`_share_mean`).
    """

    def __init__(self, head: AttentionHead, settings: GenericSettings, size: int) -> None:
        super().__init__()
        self.head = head
        self.settings = settings
        self.size = size

    def forward(self, rated: tuple[Tensor, ...], targets: Tensor, rated_total: int,
                pairs: tuple[Tensor, ...] | None, pairs_total: int) -> Tensor:
        """The loss of the rated photos' features ``rated`` (histograms ``targets``) and the pairs' ``pairs``."""
        loss = _share_mean(emd_loss(self.head(*rated), targets, reduction="none"), rated_total, self.size)
        if len(targets) == 0:  # more ranks than rows: every parameter still takes part in the backward pass
            loss = loss + 0.0 * sum(p.sum() for p in self.head.parameters())
        if pairs is not None:
            scores = distribution_to_score(self.head(*pairs, content_grad=self.settings.pair_content_grad))
            scores = scores.reshape(-1, 2)
            hinge = hinge_pair_loss(scores[:, 0], scores[:, 1], self.settings.pair_margin, reduction="none")
            loss = loss + self.settings.pair_weight * _share_mean(hinge, pairs_total, self.size)
        return loss


def train_generic(
    head: AttentionHead,
    source: Source,
    hists: Tensor,
    settings: GenericSettings,
    seed: int = 0,
    pairs: Tensor | None = None,
    rated: Tensor | None = None,
    state_path: Path | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    standardize: bool = True,
) -> list[float]:
    """Train ``head`` with EMD on rated photos (and a ranking term on ``pairs``) in place.

    Args:
        head: the head to train.
        source: indices → features.
        hists: N×10 target histograms (rows of unrated photos are ignored).
        settings: epochs, batch size, learning rate.
        seed: fixes shuffling and dropout.
        pairs: optional M×2 indices ``(preferred, other)`` into the same photos; each epoch
            goes over all of them once, spread over its steps.
        rated: indices of the photos that have histograms (default: all N).
        state_path: where to keep the training state after every epoch; a run given the path
            of an earlier, interrupted run of the same settings, seed and data resumes from its
            last epoch and ends with the same weights as an uninterrupted run.
        on_epoch: called with (epochs done, mean loss) after each epoch.
        standardize: set the quality branch's input standardisation first, from the statistics
            of up to :data:`STATS_SAMPLE` of the photos (``False`` keeps the head's own, as a
            head trained further must).

    Under ``torchrun`` (:mod:`persaes.core.distributed`) every rank runs this with the same arguments:
    each step's batch (rated photos and pairs) is shared out among the ranks, the head is trained in
    ``DistributedDataParallel`` (gradients averaged, so the step is that of the whole batch, as in one
    process), and rank 0 alone writes ``state_path``.

    Returns:
        The mean loss of each epoch (over the whole batch, on every rank).
    """
    rated = torch.arange(hists.shape[0]) if rated is None else rated
    photos = rated if pairs is None else torch.cat([rated, pairs.reshape(-1)]).unique()
    sample = photos[torch.randperm(len(photos), generator=_epoch_generator(seed, -1))[:STATS_SAMPLE]]
    if standardize and len(sample) >= 2:
        head.standardize_stats(source(sample)[3].cpu())
    steps = max(1, -(-len(rated) // settings.batch_size))
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    device = next(head.parameters()).device
    n_pairs = 0 if pairs is None else len(pairs)
    fingerprint = {"settings": settings.as_dict(), "seed": seed, "rated": len(rated), "pairs": n_pairs,
                   "photos": int(hists.shape[0]), "quality_width": head.quality_width}
    done, history = 0, []
    if state_path is not None and state_path.is_file():
        done, history = load_training_state(state_path, head, optimizer, fingerprint)
    me = distributed.world()
    step_loss = distributed.data_parallel(_StepLoss(head, settings, me.size))
    head.train()
    for epoch in range(done, settings.epochs):
        torch.manual_seed(seed * 1_000_003 + epoch)  # dropout
        generator = _epoch_generator(seed, epoch)
        rated_order = rated[torch.randperm(len(rated), generator=generator)]
        rated_order = torch.cat([rated_order, rated_order])[: steps * settings.batch_size].split(settings.batch_size)
        pair_order = torch.randperm(n_pairs, generator=generator).tensor_split(steps) if n_pairs else None
        total = 0.0
        for step in range(steps):
            index = rated_order[step][me.rank::me.size]  # this rank's share (distributed.shard)
            batch = pairs[pair_order[step]] if pair_order is not None and len(pair_order[step]) else None
            mine = None if batch is None else batch[me.rank::me.size]
            loss = step_loss(source(index), hists[index].to(device), len(rated_order[step]),
                             None if mine is None or not len(mine) else source(mine.reshape(-1)),
                             0 if batch is None else len(batch))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        history.append(distributed.all_mean(total) / steps)
        if state_path is not None and me.is_main:
            save_training_state(state_path, head, optimizer, epoch + 1, history, fingerprint)
        if on_epoch is not None:
            on_epoch(epoch + 1, history[-1])
    head.eval()
    return history


def train_personal(
    head: AttentionHead,
    source: Source,
    pairs: Tensor,
    settings: PersonalSettings,
    seed: int = 0,
    extra_params: Iterable[nn.Parameter] = (),
    on_step: Callable[[int], None] | None = None,
) -> list[float]:
    """Fine-tune on preference pairs ``pairs`` (M×2 indices, the first preferred) in place.

    Args:
        head: the head to fine-tune.
        source: indices → features.
        pairs: M×2 LongTensor of photo indices.
        settings: see :class:`PersonalSettings`.
        seed: fixes sampling and dropout.
        extra_params: further parameters to train (the backbone's, for a full fine-tune).
        on_step: called with the number of iterations done after each one.

    Returns:
        The loss at each iteration.
    """
    if pairs.ndim != 2 or pairs.shape[1] != 2 or len(pairs) == 0:
        raise ValueError(f"pairs must be a non-empty M×2 index tensor, got shape {tuple(pairs.shape)}")
    if settings.iterations == "auto":
        settings = replace(settings, iterations=choose_iterations(head, source, pairs, settings, seed))
    elif settings.epochs is not None:
        cap = math.ceil(settings.epochs * len(pairs) / settings.batch_size)
        settings = replace(settings, iterations=min(int(settings.iterations), cap))
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    trained = head.fc.parameters() if settings.layers == "fc" else head.parameters()
    params = [*trained, *extra_params]
    start = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.halve_every, gamma=0.5)
    pair_loss = PAIR_LOSSES[settings.loss]
    kwargs = {"margin": settings.margin} if settings.loss == "hinge" else {}
    batches = _batches(len(pairs), settings.batch_size, generator)
    head.train()
    history = []
    for step in range(1, int(settings.iterations) + 1):
        photos, where = pairs[next(batches)].unique(return_inverse=True)
        scores = distribution_to_score(head(*source(photos)))[where]
        loss = pair_loss(scores[:, 0], scores[:, 1], **kwargs)
        if settings.anchor > 0:
            loss = loss + settings.anchor * sum(((p - s) ** 2).sum() for p, s in zip(params, start))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        history.append(float(loss.detach()))
        if on_step is not None:
            on_step(step)
    head.eval()
    return history


@torch.no_grad()
def train_taste(head: AttentionHead, source: Source, answered: Tensor, settings: PersonalSettings) -> TasteChoice:
    """Fit ``head``'s taste part on answered pairs (M×2 indices, the first preferred), in place.

    The strengths not fixed by ``settings`` are those the answers give the most evidence for
    (:func:`persaes.core.taste.choose_strength`); the fit itself uses the answers and their
    one-step transitive pairs. The head's logits (with whatever fine-tuning it had) are the
    offset; each content channel is standardised over the answered photos.
    """
    if answered.ndim != 2 or answered.shape[1] != 2 or len(answered) == 0:
        raise ValueError(f"answered must be a non-empty M×2 index tensor, got shape {tuple(answered.shape)}")
    head.eval()
    head.taste = None
    photos, where = answered.unique(return_inverse=True)
    z1, z2, z3, stats, thumb = source(photos)
    logits = head.logits(z1, z2, z3, stats, thumb).float().cpu()
    part = TastePart(STATS, z3.shape[1])
    part.content_mean.copy_(z3.mean(0))
    if len(z3) > 1:
        part.content_scale.copy_(z3.std(0).clamp_min(1e-3))
    style = head.standardized_stats(stats).float().cpu()
    content = part.content_features(z3).float().cpu()
    rows = where.view(-1, 2).cpu()
    style_grid = None if settings.style_l2 is None else (settings.style_l2,)
    content_grid = None if settings.content_l2 is None else (settings.content_l2,)
    weight_grid = None if settings.generic_weight is None else (settings.generic_weight,)
    choice = choose_strength(logits, style, content, rows, style_grid, content_grid, weight_grid)
    fitted = fit_taste(logits, style, content, expanded_pairs(rows), choice.style_l2, choice.content_l2,
                       generic_weight=choice.generic_weight)
    part.style.copy_(fitted.style)
    part.content.copy_(fitted.content)
    part.generic_weight.fill_(choice.generic_weight)
    head.taste = part.to(z3.device)
    return choice


def live_source(model: AestheticModel, images: Tensor) -> Source:
    """A source that runs the backbone on ``images`` (N×3×H×W in ``[0, 1]``) at every step."""
    device = next(model.parameters()).device

    def source(index: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return model.features(images[index].to(device))

    return source
