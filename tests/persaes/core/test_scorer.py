from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from persaes.core.model import resize_square
from persaes.core.scorer import Scorer, load_scorer, resolve_weights
from persaes.io.checkpoint import load_model, model_metadata, save_checkpoint
from persaes.io.images import ImageError, load_image


@pytest.fixture()
def scorer(pretrained_model, tmp_path: Path) -> Scorer:
    path = save_checkpoint(tmp_path / "s.safetensors", pretrained_model, model_metadata(pretrained_model, "pretrained"))
    return load_scorer(path, device="cpu")


def test_generic_scorer_loads_by_name() -> None:
    scorer = load_scorer("generic", device="cpu")
    assert scorer.metadata["backbone"] == "efficientnet_lite2"
    assert scorer.lower_better is False and scorer.score_range == (1.0, 10.0)


def test_paths_pil_and_tensors_agree(scorer: Scorer, photos: list[Path]) -> None:
    by_path = scorer.score(photos)
    by_pil = scorer.score([Image.open(p).convert("RGB") for p in photos])
    by_tensor = scorer.score([load_image(p) for p in photos])
    assert by_path.shape == (4,)
    assert torch.allclose(by_path, by_pil, atol=1e-4) and torch.allclose(by_path, by_tensor, atol=1e-4)
    assert ((by_path > 1) & (by_path < 10)).all()
    assert torch.allclose(scorer.score(photos, batch_size=1), by_path, atol=1e-4)


def test_scores_equal_the_unfolded_models(photos: list[Path]) -> None:
    model, _ = load_model(resolve_weights("generic"))
    scorer = load_scorer("generic", device="cpu")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in scorer.modules())
    images = torch.cat([resize_square(load_image(p)[None], model.spec.input_size) for p in photos])
    with torch.no_grad():
        assert torch.allclose(scorer(images), model.score(images), atol=1e-4)


def test_forward_is_differentiable_wrt_pixels(scorer: Scorer) -> None:
    x = torch.rand(2, 3, 128, 160, requires_grad=True)
    scorer(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in scorer.parameters())


def test_iter_scores_carries_on_after_a_bad_file(scorer: Scorer, photos: list[Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    results = list(scorer.iter_scores([photos[0], bad, photos[1]], batch_size=2))
    assert [r[0] for r in results] == [photos[0], bad, photos[1]]
    assert results[1][1] is None and "bad.jpg" in results[1][2]
    assert results[0][1] == pytest.approx(float(scorer.score(photos[0])), abs=1e-4)
    with pytest.raises(ImageError):
        scorer.score([bad])


def test_generic_scorer_prefers_originals_to_their_degraded_and_over_processed_versions(photos: list[Path]) -> None:
    """The shipped quality prior: each photo beats its strong over-processed versions (over-dehazed,
    over-saturated, over-contrasted, over-sharpened, brightened, darkened, recoloured, desaturated) and its
    protocol degradations, in all but a few of the pairs."""
    from retouch import DEGRADATIONS, OVER_PROCESSING, degrade, over_process

    scorer = load_scorer("generic", device="cpu")
    wins, total = 0, 0
    for n, path in enumerate(photos):
        image = load_image(path)[None]
        versions = [over_process(image, kind, "strong", 100 + n)[0] for kind in OVER_PROCESSING]
        versions += [degrade(image, kind, 200 + n)[0] for kind in DEGRADATIONS]
        scores = scorer.score([image[0], *(v[0] for v in versions)])
        wins += int((scores[0] > scores[1:]).sum())
        total += len(versions)
    assert wins >= 0.9 * total, f"the original won {wins} of {total} pairs"
