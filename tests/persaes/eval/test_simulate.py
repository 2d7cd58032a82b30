from __future__ import annotations

import pytest
import torch

from persaes.eval.simulate import AXES, CONSISTENT_TASTES, ConsistentTaste, edit_along
from retouch.metrics import TASTE_FEATURES, taste_features


@pytest.mark.parametrize("axis", list(AXES))
def test_each_edit_moves_its_taste_feature_its_way(axis: str) -> None:
    torch.manual_seed(0)
    image = 0.2 + 0.6 * torch.rand(2, 3, 32, 32)
    feature = TASTE_FEATURES.index(AXES[axis])
    low, high = (taste_features(edit_along(image, axis, a))[:, feature] for a in (-1.0, 1.0))
    assert bool((high > low).all())
    assert torch.allclose(edit_along(image, axis, 0.0), image, atol=1e-4)  # amount 0 leaves the photo as it is


def test_edit_refuses_unknown_axes_and_amounts() -> None:
    image = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="axis"):
        edit_along(image, "sharpness", 0.5)
    with pytest.raises(ValueError, match="amount"):
        edit_along(image, "brightness", 1.5)


def test_consistent_tastes_come_in_opposite_pairs_and_content_tastes_put_the_category_first() -> None:
    image = torch.rand(1, 3, 16, 16)
    assert CONSISTENT_TASTES["warm"].value(image) == -CONSISTENT_TASTES["cool"].value(image)
    animals = ConsistentTaste("animals", category="Animal")
    assert (animals.value(image, "Animal", 1.0) > animals.value(image, "Scenery", 7.0)
            > animals.value(image, "Person", 2.0))
