from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from persaes.core import generic_weights
from persaes.core.features import FeatureCache
from persaes.core.model import distribution_to_score
from persaes.core.scorer import load_scorer
from retouch.optimize import EditSettings

RECIPE = Path(__file__).resolve().parents[2] / "weights" / "recipes" / "make_generic.py"
_spec = importlib.util.spec_from_file_location("make_generic", RECIPE)
make_generic = importlib.util.module_from_spec(_spec)
sys.modules["make_generic"] = make_generic
_spec.loader.exec_module(make_generic)
edit_features = generic_weights.edit_features


def test_the_recipe_is_a_call_of_the_library() -> None:
    """make_generic.py keeps its names, now the library's (persaes train-generic trains the same way)."""
    assert make_generic.edit_features is generic_weights.edit_features
    assert make_generic.version_features is generic_weights.version_features
    assert make_generic.VERSIONS is generic_weights.VERSIONS


def test_edit_features_fit_the_generic_retouch_once_per_head(photos, tmp_path, monkeypatch) -> None:
    """Hardening fits each photo's retouch against the head as it is now; the features of that edit
    come from the cache on a rerun, and a changed head fits anew."""
    model = load_scorer("generic", device="cpu").model
    for p in model.parameters():
        p.requires_grad_(True)
    cache = FeatureCache(tmp_path, "efficientnet_lite2", "pretrained")
    files = photos[:2]
    first = edit_features(model, files, seed=0, cache=cache)
    assert len(first) == 2 and len(list(tmp_path.rglob("*.safetensors"))) == 2
    assert all(p.requires_grad for p in model.parameters())  # the fit used a frozen copy
    # the fitted edit is what the optimiser found: it scores no lower than the original under the same head
    with torch.no_grad():
        originals = model(torch.cat([model_input(f) for f in files]))
        edited = model.head(*first.take([0, 1]))
    assert bool((distribution_to_score(edited) >= distribution_to_score(originals) - 0.02).all())

    def refuse(*args, **kwargs):
        raise AssertionError("a cached edit was fitted again")

    monkeypatch.setattr("persaes.core.generic_weights.retouch_image", refuse)
    again = edit_features(model, files, seed=0, cache=cache)
    assert torch.equal(again.z3, first.z3)
    with torch.no_grad():
        model.head.fc.bias.add_(0.1)
    monkeypatch.undo()
    edit_features(model, files[:1], seed=0, cache=cache)
    assert len(list(tmp_path.rglob("*.safetensors"))) == 3
    edit_features(model, files[:1], seed=0, cache=cache, settings=EditSettings(fidelity=2.0))  # other settings
    assert len(list(tmp_path.rglob("*.safetensors"))) == 4


def model_input(path):
    from persaes.io.images import load_image

    return load_image(path)[None]
