"""Training pairs of the feed-forward retoucher: square copies, 8-bit storage, seeded epochs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from persaes.app.retouch_training import EditPairs, fit_pairs, training_copy
from persaes.core.aesthetic_loss import AestheticLoss
from persaes.core.scorer import load_scorer
from retouch.optimize import EditSettings


def _pairs(n: int, size: int = 8) -> tuple[EditPairs, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    pairs, images = EditPairs(), []
    for _ in range(n):
        image = torch.rand(1, 3, size, size, generator=g)
        pairs.add(image, 1.0 - image)
        images.append(image)
    return pairs, images


def test_training_copy_is_a_square_of_the_whole_photo() -> None:
    photo = torch.zeros(1, 3, 300, 600)
    photo[..., 300:] = 1.0  # right half white
    copy = training_copy(photo, 64)
    assert copy.shape == (1, 3, 64, 64) and 0.0 <= float(copy.min()) and float(copy.max()) <= 1.0
    assert float(copy[..., :30].max()) == 0.0 and float(copy[..., 34:].min()) == pytest.approx(1.0)


def test_every_epoch_covers_each_pair_once_in_a_new_seeded_order() -> None:
    pairs, images = _pairs(5)
    epochs = pairs.batches(2, seed=3)
    orders = []
    for _ in range(3):
        batches = list(epochs())
        assert [len(b[0]) for b in batches] == [2, 2, 1]
        inputs = torch.cat([b[0] for b in batches])
        targets = torch.cat([b[1] for b in batches])
        # stored in 8 bits: within half a level of the float values, and each target stays with its input
        assert (targets - (1.0 - inputs)).abs().max() <= 1.5 / 255
        order = [min(range(5), key=lambda i: float((images[i][0] - x).abs().max())) for x in inputs]
        assert sorted(order) == list(range(5))
        orders.append(order)
    assert len({tuple(o) for o in orders}) > 1
    # the same seed gives the same epochs
    first = [torch.cat([b[0] for b in pairs.batches(2, seed=3)()]) for _ in range(2)]
    assert torch.equal(first[0], first[1])


def test_pairs_of_another_shape_are_refused() -> None:
    pairs, _ = _pairs(1)
    with pytest.raises(ValueError, match="differs"):
        pairs.add(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="one shape"):
        pairs.add(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="batch_size"):
        pairs.batches(0, seed=0)


def test_no_pairs_make_no_batches() -> None:
    with pytest.raises(ValueError, match="no pairs"):
        EditPairs().batches(2, seed=0)


def test_fit_pairs_fits_the_readable_photos_and_names_the_others(photos: list[Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    loss = AestheticLoss(load_scorer("generic", device="cpu"))
    calls: list[tuple[int, int]] = []
    errors: list[str] = []
    pairs = fit_pairs([photos[0], broken], loss, ("exposure",), EditSettings(steps=0), 32,
                      progress=lambda done, total: calls.append((done, total)), on_error=errors.append)
    assert len(pairs) == 1 and calls == [(0, 2), (1, 2), (2, 2)]
    assert len(errors) == 1 and "broken.jpg" in errors[0]
    photo, edit = pairs[0]
    assert photo.dtype == torch.uint8 and photo.shape == (3, 32, 32) and torch.equal(photo, edit)  # 0 steps: no edit
