from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from persaes.core.generic_weights import VERSIONS, train_generic_weights
from persaes.core.scorer import load_scorer
from persaes.core.train import GENERIC_RECIPES, SHIPPED_RECIPE
from persaes.io.references import read_score_csv
from persaes.io.safetensors_file import read_safetensors

SHIPPED = GENERIC_RECIPES[SHIPPED_RECIPE]
#: The shipped recipe cut down for speed: 2 epochs, one draw per kind, no hardening rounds.
SMALL = replace(SHIPPED, training=replace(SHIPPED.training, epochs=2), draws=1, harden_rounds=0)


def references(photos: list[Path], folder: Path):
    """Three of the fixture photos rated 3, 6 and 8 (``file,score``, absolute paths)."""
    table = folder / "scores.csv"
    table.write_text("file,score\n" + "".join(f"{p},{s}\n" for p, s in zip(photos[:3], (3, 6, 8))))
    return read_score_csv(table)


@pytest.fixture(scope="module")
def trained(photos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("generic")
    # the prior: one reference photo and one that is no reference
    result = train_generic_weights(references(photos, folder), folder / "a.safetensors", SMALL, photos[2:],
                                   seed=3, recipe_name="small", description="three photos")
    return folder / "a.safetensors", result


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return read_safetensors(path)[0]


def test_the_file_is_a_normal_weights_file(trained, photos: list[Path]) -> None:
    path, result = trained
    scorer = load_scorer(path, device="cpu")
    scores = scorer.score(photos)
    assert scores.shape == (4,) and bool(((scores >= 1) & (scores <= 10)).all())
    meta = scorer.metadata
    assert meta["kind"] == "generic" and meta["recipe"] == "small" and meta["seed"] == 3
    assert meta["prior_photos"] == 2 and result["prior_photos"] == 2 and result["references"] == 3
    assert meta["trained_on"]["references"] == "three photos, 3 photos"
    assert meta["trained_on"]["quality_prior"] == f"2 photos x {len(VERSIONS)} kinds x 1 draws"
    assert meta["recipe_settings"]["quality_width"] == 0 and meta["training"]["epochs"] == 2
    assert set(result["train_preference"]) == {k if lv is None else f"{k}/{lv}" for k, lv in VERSIONS}
    assert len(result["history"]) == 2 and result["problems"] == []


def test_training_is_deterministic(trained, photos: list[Path], tmp_path: Path) -> None:
    path, _ = trained
    again = train_generic_weights(references(photos, tmp_path), tmp_path / "b.safetensors", SMALL, photos[2:],
                                  seed=3, recipe_name="small", description="three photos")
    first, second = tensors(path), tensors(again["out"])
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    other = train_generic_weights(references(photos, tmp_path), tmp_path / "c.safetensors", SMALL, photos[2:], seed=4)
    assert not torch.equal(tensors(other["out"])["head.fc.weight"], first["head.fc.weight"])


class Interrupted(Exception):
    pass


def test_an_interrupted_run_resumes_from_its_state_to_the_same_weights(trained, photos: list[Path],
                                                                        tmp_path: Path) -> None:
    path, _ = trained
    state = tmp_path / "run.state.safetensors"
    out = tmp_path / "resumed.safetensors"

    def stop(epoch: int, loss: float) -> None:
        if epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_generic_weights(references(photos, tmp_path), out, SMALL, photos[2:], seed=3, state=state, on_epoch=stop)
    assert state.is_file() and not out.exists()
    epochs = []
    train_generic_weights(references(photos, tmp_path), out, SMALL, photos[2:], seed=3, state=state,
                          on_epoch=lambda epoch, loss: epochs.append(epoch))
    assert epochs == [2]  # only the epoch left was trained
    first, resumed = tensors(path), tensors(out)
    assert all(torch.equal(first[k], resumed[k]) for k in first)


def test_hardening_needs_prior_photos(photos: list[Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hardening rounds"):
        train_generic_weights(references(photos, tmp_path), tmp_path / "h.safetensors", "hardened")
    with pytest.raises(ValueError, match="unknown generic recipe"):
        train_generic_weights(references(photos, tmp_path), tmp_path / "h.safetensors", "nope")
    assert not (tmp_path / "h.safetensors").exists()


def test_hardening_rounds_add_pairs_from_fitted_edits(photos: list[Path], tmp_path: Path) -> None:
    hardened = GENERIC_RECIPES["hardened"]
    recipe = replace(hardened, training=replace(hardened.training, epochs=1), draws=1, harden_photos=1,
                     harden_epochs=1)
    result = train_generic_weights(references(photos, tmp_path), tmp_path / "h.safetensors", recipe, photos[:2],
                                   seed=0, state=tmp_path / "h.state.safetensors")
    rounds = load_scorer(result["out"], device="cpu").metadata["hardening"]
    assert [r["photos"] for r in rounds] == [1, 1] and rounds == result["hardening"]
    assert (tmp_path / "h.state.round1.safetensors").is_file() and (tmp_path / "h.state.round2.safetensors").is_file()
    assert len(result["history"]) == 3
