"""Training pairs for the feed-forward retoucher: photos and the edits fitted to them.

``persaes train-retoucher`` fits each photo's edit as ``persaes retouch`` does
(:func:`persaes.app.retouch_folder.retouch_image`: a profile's edit on top of the generic
retouch), on the photo itself, and keeps square training copies of the photo and of its
edit (:func:`fitted_pair`); the network learns to make those edits in one pass
(:func:`retouch.optimize.train_retouch_net`).

Example::

    >>> pairs = EditPairs()
    >>> photo = training_copy(torch.rand(1, 3, 40, 60), 32)
    >>> pairs.add(photo, photo.flip(-1))
    >>> [tuple(t.shape) for t in next(iter(pairs.batches(8, seed=0)()))]
    [(1, 3, 32, 32), (1, 3, 32, 32)]
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from persaes.app.retouch_folder import retouch_image
from persaes.core.aesthetic_loss import AestheticLoss
from persaes.io.images import to_bytes
from retouch.color import check_image
from retouch.dehaze import resize_to_fit
from retouch.optimize import EditSettings


def training_copy(image: Tensor, size: int) -> Tensor:
    """The ``size``-square training copy of a :math:`(1, 3, H, W)` photo in :math:`[0, 1]`.

    Downscaled with antialiasing so its longer side is ``size``, then stretched to the square
    (edits are global or coarse grids, so the stretch does not change which edit fits).
    """
    check_image(image)
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    square = F.interpolate(resize_to_fit(image, size), size=(size, size), mode="bilinear", align_corners=False)
    return square.clamp(0.0, 1.0)


def fitted_pair(photo: Tensor, loss: AestheticLoss, ops: Sequence[str], settings: EditSettings, size: int,
                seed: int = 0, base: AestheticLoss | None = None) -> tuple[Tensor, Tensor]:
    """Square training copies of a :math:`(1, 3, H, W)` photo and of its fitted edit.

    The edit is fitted on the photo itself, as ``persaes retouch`` fits it (the scorer judges a
    photo differently when it sees a small or stretched copy), then both are copied with
    :func:`training_copy`: the edits are global or coarse grids, so the copy of the edit is the
    edit of the copy.
    """
    edited = retouch_image(photo, loss, ops, settings, seed=seed, base=base)
    return training_copy(photo, size), training_copy(edited, size)


class EditPairs:
    """Photos and their fitted edits, kept as 8-bit CPU tensors (a quarter of float32's memory)."""

    def __init__(self) -> None:
        self._inputs: list[Tensor] = []
        self._targets: list[Tensor] = []

    def __len__(self) -> int:
        return len(self._inputs)

    def add(self, image: Tensor, target: Tensor) -> None:
        """Keep a :math:`(1, 3, h, w)` training copy and its fitted edit (same shape, :math:`[0, 1]`)."""
        check_image(image)
        if target.shape != image.shape:
            raise ValueError(f"target shape {tuple(target.shape)} differs from the image's {tuple(image.shape)}")
        if self._inputs and image.shape != self._inputs[0].shape:
            raise ValueError(f"all pairs must have one shape, got {tuple(image.shape)} after "
                             f"{tuple(self._inputs[0].shape)}")
        self._inputs.append(to_bytes(image.detach()).cpu())
        self._targets.append(to_bytes(target.detach()).cpu())

    def batches(self, batch_size: int, seed: int) -> Callable[[], Iterator[tuple[Tensor, Tensor]]]:
        """One epoch's ``(inputs, targets)`` float batches per call, in a new seeded order each call."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        epochs = itertools.count()

        def epoch() -> Iterator[tuple[Tensor, Tensor]]:
            order = list(range(len(self)))
            random.Random(seed * 1_000_003 + next(epochs)).shuffle(order)
            for start in range(0, len(order), batch_size):
                chosen = order[start:start + batch_size]
                yield (torch.cat([self._inputs[i] for i in chosen]).float() / 255,
                       torch.cat([self._targets[i] for i in chosen]).float() / 255)

        return epoch
