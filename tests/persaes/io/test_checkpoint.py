from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from persaes.io.checkpoint import CheckpointError, load_model, model_metadata, read_checkpoint, save_checkpoint


def _save(model, path: Path, **extra) -> Path:
    return save_checkpoint(path, model, model_metadata(model, "random", kind="test", **extra))


def test_save_load_gives_identical_outputs(random_model, tmp_path: Path) -> None:
    path = _save(random_model, tmp_path / "m.safetensors", trained_on="nothing")
    loaded, meta = load_model(path)
    x = torch.rand(2, 3, 200, 240)
    with torch.no_grad():
        assert torch.equal(random_model(x), loaded(x))
    assert meta["backbone"] == "efficientnet_lite2" and meta["trained_on"] == "nothing"
    assert meta["preprocessing"] == {"size": 260, "mean": [0.5] * 3, "std": [0.5] * 3}


def test_full_finetune_checkpoint_carries_the_backbone(random_model, tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "f.safetensors", random_model, model_metadata(random_model, "pretrained"),
                           include_backbone=True)
    loaded, meta = load_model(path)
    assert meta["includes_backbone"]
    assert torch.equal(loaded.backbone.stem[0].weight, random_model.backbone.stem[0].weight)


def test_mismatched_backbone_is_refused(random_model, tmp_path: Path) -> None:
    path = _save(random_model, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="made for backbone efficientnet_lite2, not vgg16"):
        load_model(path, backbone="vgg16")


def test_tampered_metadata_is_refused(random_model, tmp_path: Path) -> None:
    tensors, meta = read_checkpoint(_save(random_model, tmp_path / "m.safetensors"))
    meta["backbone"] = "vgg16"
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={"persaes": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="preprocessing"):
        load_model(bad)
    meta["preprocessing"] = {"size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    save_file(tensors, str(bad), metadata={"persaes": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="do not fit a vgg16 head"):
        load_model(bad)


def test_truncated_and_foreign_files_are_refused(random_model, tmp_path: Path) -> None:
    good = _save(random_model, tmp_path / "m.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        read_checkpoint(cut)
    bare = tmp_path / "bare.safetensors"
    save_file({"x": torch.zeros(1)}, str(bare))
    with pytest.raises(CheckpointError, match="no persaes metadata"):
        read_checkpoint(bare)
    with pytest.raises(CheckpointError, match="no such"):
        read_checkpoint(tmp_path / "missing.safetensors")
