"""The one safetensors writer and reader: round trip, atomic writes, pickles refused, one-line errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import safetensors.torch
import torch

import persaes.io.safetensors_file as stf
from persaes.io.safetensors_file import SafetensorsFileError, read_safetensors, write_safetensors


class MarkerPayload:
    """Unpickling it creates ``marker`` (stands for any code a malicious file would run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"head.weight": torch.randn(3, 4, generator=g), "head.bias": torch.arange(3, dtype=torch.int64),
            "half": torch.randn(2, 2, generator=g).half()}


def _one_line_error(exc: pytest.ExceptionInfo[BaseException], path: Path, reason: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {reason}"), message


def test_round_trip_with_metadata(tmp_path: Path) -> None:
    tensors = _tensors()
    meta = {"format": "x/1", "name": "café", "nested": {"b": [1, 2.5, None], "a": True}}
    path = write_safetensors(tmp_path / "sub" / "m.safetensors", tensors, meta)
    assert path == tmp_path / "sub" / "m.safetensors"
    loaded, loaded_meta = read_safetensors(path)
    assert loaded_meta == meta
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name


def test_bytes_are_the_established_format(tmp_path: Path) -> None:
    """Sorted-key JSON under the key: what profiles, training states and retouching models always held."""
    tensors, meta = _tensors(), {"z": 1, "a": [2, 3]}
    path = write_safetensors(tmp_path / "m.safetensors", tensors, meta, key="persaes_training")
    expected = safetensors.torch.save(tensors, metadata={"persaes_training": json.dumps(meta, sort_keys=True)})
    assert path.read_bytes() == expected
    bare = write_safetensors(tmp_path / "bare.safetensors", tensors)
    assert bare.read_bytes() == safetensors.torch.save(tensors)


def test_other_key_and_no_key(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "k.safetensors", _tensors(), {"format": 1}, key="persaes_knn")
    assert read_safetensors(path, key="persaes_knn")[1] == {"format": 1}
    assert read_safetensors(path, key=None)[1] == {}
    with pytest.raises(SafetensorsFileError) as exc:
        read_safetensors(path)
    _one_line_error(exc, path, "no persaes metadata in the safetensors header")


def test_non_contiguous_and_grad_tensors_are_written(tmp_path: Path) -> None:
    weight = torch.randn(4, 3, requires_grad=True)
    path = write_safetensors(tmp_path / "t.safetensors", {"w": weight, "wt": weight.detach().T})
    loaded, _ = read_safetensors(path, key=None)
    assert torch.equal(loaded["w"], weight.detach()) and torch.equal(loaded["wt"], weight.detach().T)


def _half_then_fail(tensors, filename, metadata=None) -> None:
    data = safetensors.torch.save(tensors, metadata)
    Path(filename).write_bytes(data[: len(data) // 2])
    raise OSError("No space left on device")


def test_a_failing_write_keeps_the_old_file_and_leaves_no_partial_file(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_safetensors(tmp_path / "m.safetensors", _tensors(), {"version": "old"})
    old = path.read_bytes()
    monkeypatch.setattr(stf, "save_file", _half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_safetensors(path, {"w": torch.zeros(1000)}, {"version": "new"})
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    monkeypatch.undo()
    shared = torch.zeros(8)
    with pytest.raises(RuntimeError):  # safetensors refuses tensors that share memory
        write_safetensors(path, {"a": shared, "b": shared[:4]}, {"version": "new"})
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    assert read_safetensors(path)[1] == {"version": "old"}


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    with pytest.raises(ValueError, match="tensors must map names to tensors, got 'w': list"):
        write_safetensors(path, {"w": [1.0]})
    with pytest.raises(ValueError, match="metadata must be a dict or None, got list"):
        write_safetensors(path, {"w": torch.zeros(1)}, [1])
    with pytest.raises(ValueError, match="metadata is not JSON-able"):
        write_safetensors(path, {"w": torch.zeros(1)}, {"when": object()})
    with pytest.raises(ValueError, match="metadata key must be a non-empty string"):
        write_safetensors(path, {"w": torch.zeros(1)}, {}, key="")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["pickle", "torch-save"])
def test_pickles_are_refused_unread_in_one_line(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "weights.safetensors"
    payload = {"head.weight": MarkerPayload(marker)}
    if kind == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    with pytest.raises(SafetensorsFileError) as exc:
        read_safetensors(path)
    _one_line_error(exc, path, "a pickle or torch.save file; persaes loads only safetensors (pickles can run code)")
    assert not marker.exists()


def _truncated(path: Path) -> None:
    data = safetensors.torch.save(_tensors(), {"persaes": "{}"})
    path.write_bytes(data[:-7])


def _garbled_header(path: Path) -> None:
    data = bytearray(safetensors.torch.save(_tensors(), {"persaes": "{}"}))
    data[8:20] = b"}}}}}}}}}}}}"
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("make", [_truncated, _garbled_header, lambda p: p.write_bytes(b""),
                                  lambda p: p.write_bytes(b"not a weights file at all")],
                         ids=["truncated", "garbled-header", "empty", "text"])
def test_corrupt_files_give_one_line_errors(tmp_path: Path, make) -> None:
    path = tmp_path / "bad.safetensors"
    make(path)
    with pytest.raises(SafetensorsFileError) as exc:
        read_safetensors(path)
    _one_line_error(exc, path, "not a valid safetensors file (")
    with pytest.raises(SafetensorsFileError) as exc:
        read_safetensors(path, what="training state")
    _one_line_error(exc, path, "not a valid training state (")


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"text"'])
def test_metadata_that_is_not_a_json_object_is_refused(tmp_path: Path, raw: str) -> None:
    path = tmp_path / "m.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(1)}, str(path), metadata={"persaes": raw})
    with pytest.raises(SafetensorsFileError) as exc:
        read_safetensors(path)
    _one_line_error(exc, path, "the persaes metadata in the safetensors header is not a JSON object")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_safetensors(tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_safetensors(tmp_path)
