"""Retouching models on disk: round trip, and one-line refusals of files that are not one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from persaes.io.checkpoint import model_metadata, save_checkpoint
from persaes.io.retouch_net_file import NET_FORMAT, load_retouch_net, save_retouch_net
from persaes.io.safetensors_file import SafetensorsFileError, read_safetensors
from retouch import RetouchNet


def test_round_trip_keeps_outputs_and_metadata(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = RetouchNet(("exposure", "color"), input_size=64, width=8)
    torch.nn.init.normal_(net.head.weight, std=0.01)
    path = save_retouch_net(tmp_path / "nets" / "net.safetensors", net, {"profile": "me.safetensors", "epochs": 3})
    loaded, meta = load_retouch_net(path)
    assert meta == {"format": NET_FORMAT, "ops": ["exposure", "color"], "input_size": 64, "width": 8,
                    "profile": "me.safetensors", "epochs": 3}
    assert not loaded.training
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        assert torch.equal(loaded(x), net.eval()(x))


def _rewrite(path: Path, out: Path, **changes: object) -> Path:
    tensors, meta = read_safetensors(path)
    save_file(tensors, str(out), metadata={"persaes": json.dumps({**meta, **changes})})
    return out


def test_files_that_are_not_a_retouching_model_are_refused_in_one_line(random_model, tmp_path: Path) -> None:
    good = save_retouch_net(tmp_path / "net.safetensors", RetouchNet(("exposure",)), {})
    profile = save_checkpoint(tmp_path / "profile.safetensors", random_model, model_metadata(random_model, "random"))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-100])
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(1)}, str(bare))
    cases = [
        (profile, "not a persaes retouching model (format 'persaes-checkpoint/3')"),
        (_rewrite(good, tmp_path / "no-ops.safetensors", ops=None),
         "metadata does not describe a retouching model (TypeError: "),
        (_rewrite(good, tmp_path / "other-ops.safetensors", ops=["exposure", "color"]),
         "tensors do not fit the model it describes (Missing key(s) in state_dict: "),
        (cut, "not a valid retouching model (Error while deserializing header: "),
        (bare, "no persaes metadata in the safetensors header"),
    ]
    for path, reason in cases:
        with pytest.raises(SafetensorsFileError) as exc:
            load_retouch_net(path)
        assert str(exc.value).startswith(f"{path}: {reason}") and "\n" not in str(exc.value), str(exc.value)
    with pytest.raises(FileNotFoundError, match="no such retouching model file"):
        load_retouch_net(tmp_path / "missing.safetensors")
