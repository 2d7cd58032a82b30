"""Training pairs for the feed-forward retoucher: photos and the edits fitted to them.

``persaes train-retoucher`` fits each photo's edit as ``persaes retouch`` does
(:func:`persaes.core.retouching.retouch_image`: a profile's edit on top of the generic
retouch), on the photo itself, and keeps square training copies of the photo and of its
edit (:func:`fitted_pair`, for a folder's photos :func:`fit_pairs`); the network learns to
make those edits in one pass (:func:`retouch.optimize.train_retouch_net`).

Example::

    >>> pairs = EditPairs()
    >>> photo = training_copy(torch.rand(1, 3, 40, 60), 32)
    >>> pairs.add(photo, photo.flip(-1))
    >>> [tuple(t.shape) for t in next(iter(pairs.batches(8, seed=0)()))]
    [(1, 3, 32, 32), (1, 3, 32, 32)]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate

from persaes.app.progress import ProgressCallback
from persaes.core.aesthetic_loss import AestheticLoss
from persaes.core.retouching import retouch_image
from persaes.io.images import ImageError, load_image, to_bytes
from retouch.color import check_image
from retouch.dehaze import resize_to_fit
from retouch.optimize import EditSettings

TEACHER_SIDE = 1024
"""Longest side photos are read at for fitting their edits: edits are fitted on a 256-px copy and
dehazing estimates haze on a 512-px one, so a larger photo gets the same edit."""


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


def _float_batch(items: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """8-bit ``(input, target)`` pairs stacked into a float batch in ``[0, 1]``."""
    inputs, targets = default_collate(items)
    return inputs.float() / 255, targets.float() / 255


class EditPairs(Dataset[tuple[Tensor, Tensor]]):
    """Photos and their fitted edits, kept as 8-bit CPU tensors (a quarter of float32's memory).

    Item ``i`` is the ``i``-th pair added, as two uint8 :math:`(3, h, w)` tensors.
    """

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

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self._inputs[index][0], self._targets[index][0]

    def batches(self, batch_size: int, seed: int) -> Callable[[], Iterator[tuple[Tensor, Tensor]]]:
        """Shuffled float batches of the pairs, one epoch per call.

        Args:
            batch_size: pairs per batch; an epoch's last batch holds the rest.
            seed: seeds the shuffling: each call of the result is a new order, and the same
                seed gives the same sequence of orders.

        Returns:
            ``epoch()``: the ``(inputs, targets)`` batches of one pass over the pairs, both
            :math:`(B, 3, h, w)` float in :math:`[0, 1]`, from a :class:`~torch.utils.data.DataLoader`.

        Raises:
            ValueError: ``batch_size`` is below 1, or there are no pairs.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not len(self):
            raise ValueError("no pairs to make batches of")
        loader = DataLoader(self, batch_size=batch_size, shuffle=True, collate_fn=_float_batch,
                            generator=torch.Generator().manual_seed(seed))
        return lambda: iter(loader)


def fit_pairs(files: Sequence[str | os.PathLike[str]], loss: AestheticLoss, ops: Sequence[str],
              settings: EditSettings, size: int, seed: int = 0, base: AestheticLoss | None = None,
              progress: ProgressCallback | None = None,
              on_error: Callable[[str], None] | None = None) -> EditPairs:
    """The training pairs of photo files: each read at :data:`TEACHER_SIDE`, then :func:`fitted_pair`.

    Args:
        files: the photos.
        loss: the loss the edits are fitted against; the photos go to its scorer's device.
        ops: the ops to fit (see :data:`retouch.OPS`).
        settings: how the edits are fitted.
        size: the side of the square training copies.
        seed: fixes each fit.
        base: the loss of the retouch each edit is made on top of.
        progress: told the files done (unreadable ones included).
        on_error: told each unreadable file's one-line reason; the others are fitted.

    Returns:
        The pairs of the readable files, in file order.
    """
    pairs = EditPairs()
    if progress:
        progress(0, len(files))
    for done, path in enumerate(files, 1):
        try:
            photo = load_image(path, max_side=TEACHER_SIDE)[None].to(loss.scorer.device)
        except ImageError as exc:
            if on_error:
                on_error(str(exc))
        else:
            pairs.add(*fitted_pair(photo, loss, ops, settings, size, seed=seed, base=base))
        if progress:
            progress(done, len(files))
    return pairs
