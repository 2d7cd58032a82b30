"""Damaged, edited, foreign and malicious profile and weights files given to ``persaes score`` and ``retouch``.

Each is refused before any photo is touched, with one line naming the file; nothing is unpickled
(a pickle whose loading would create a marker file never creates it).
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import reliability_files as rf
import torch
from click.testing import CliRunner, Result
from persaes.cli.main import main
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from persaes.core.backbones import get_spec
from persaes.core.model import AttentionHead
from persaes.core.scorer import weights_dir
from persaes.io.checkpoint import tensors_digest


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


class MarkerPayload:
    """Unpickling it creates ``marker`` (stands for any code a malicious file would run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def generic() -> tuple[dict[str, torch.Tensor], dict]:
    path = weights_dir() / "generic.safetensors"
    with safe_open(str(path), "pt") as handle:
        meta = json.loads(handle.metadata()["persaes"])
    return load_file(str(path)), meta


def write(path: Path, tensors: dict[str, torch.Tensor], meta: dict, checksum: bool = True) -> Path:
    meta = {**meta, "tensors_sha256": tensors_digest(tensors)} if checksum else meta
    save_file(tensors, str(path), metadata={"persaes": json.dumps(meta)})
    return path


# each maker writes one bad file into a folder; the expected message follows "<file>: "

def truncated(folder: Path) -> Path:
    good = write(folder / "good.safetensors", *generic())
    (folder / "bad.safetensors").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return folder / "bad.safetensors"


def empty(folder: Path) -> Path:
    (folder / "bad.safetensors").write_bytes(b"")
    return folder / "bad.safetensors"


def huge_header_length(folder: Path) -> Path:
    data = write(folder / "good.safetensors", *generic()).read_bytes()
    (folder / "bad.safetensors").write_bytes(struct.pack("<Q", 2**62) + data[8:])
    return folder / "bad.safetensors"


def garbled_header(folder: Path) -> Path:
    data = bytearray(write(folder / "good.safetensors", *generic()).read_bytes())
    data[9:40] = b"#" * 31
    (folder / "bad.safetensors").write_bytes(bytes(data))
    return folder / "bad.safetensors"


def edited_weights(folder: Path) -> Path:
    """One weight changed in place: the file still parses, only the checksum tells."""
    tensors, meta = generic()
    good = write(folder / "good.safetensors", tensors, meta)
    data = bytearray(good.read_bytes())
    data[-3] ^= 0x40
    (folder / "bad.safetensors").write_bytes(bytes(data))
    return folder / "bad.safetensors"


def nan_weights(folder: Path) -> Path:
    tensors, meta = generic()
    name = min(tensors)
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    return write(folder / "bad.safetensors", tensors, meta, checksum=False)  # as a file without a checksum


def no_metadata(folder: Path) -> Path:
    save_file(generic()[0], str(folder / "bad.safetensors"))
    return folder / "bad.safetensors"


def other_format(folder: Path) -> Path:
    tensors, meta = generic()
    return write(folder / "bad.safetensors", tensors, {**meta, "format": "persaes-checkpoint/99"})


def older_format(folder: Path) -> Path:
    """A profile from before the quality branch (format 1)."""
    tensors, meta = generic()
    return write(folder / "bad.safetensors", tensors, {**meta, "format": "persaes-checkpoint/1"})


def unknown_backbone(folder: Path) -> Path:
    tensors, meta = generic()
    return write(folder / "bad.safetensors", tensors, {**meta, "backbone": "resnet50"})


def vgg16_profile(folder: Path) -> Path:
    """A profile made with the paper's VGG16 backbone, on a machine without VGG16 weights."""
    _, meta = generic()
    spec = get_spec("vgg16")
    width = meta["head"]["quality_width"]
    head = {f"head.{k}": v for k, v in AttentionHead(spec.channels, quality_width=width).state_dict().items()}
    return write(folder / "bad.safetensors", head, {**meta, "backbone": "vgg16", "preprocessing": spec.preprocessing()})


def head_of_another_backbone(folder: Path) -> Path:
    """Metadata says EfficientNet-Lite2, the tensors are a VGG16 head."""
    _, meta = generic()
    width = meta["head"]["quality_width"]
    vgg_head = AttentionHead(get_spec("vgg16").channels, quality_width=width)
    head = {f"head.{k}": v for k, v in vgg_head.state_dict().items()}
    return write(folder / "bad.safetensors", head, meta)


def retouch_model_as_profile(folder: Path) -> Path:
    from persaes.io.retouch_net_file import save_retouch_net
    from retouch import RetouchNet

    return save_retouch_net(folder / "bad.safetensors", RetouchNet(("exposure",)), {})


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "truncated": (truncated, "not a valid safetensors file ("),
    "empty": (empty, "not a valid safetensors file ("),
    "huge-header-length": (huge_header_length, "not a valid safetensors file ("),
    "garbled-header": (garbled_header, "not a valid safetensors file ("),
    "edited-weights": (edited_weights, "tensors do not match the checksum in the metadata (damaged or edited file)"),
    "nan-weights": (nan_weights, "holds NaN or infinite values (damaged file)"),
    "no-metadata": (no_metadata, "no persaes metadata in the safetensors header"),
    "other-format": (other_format, "unknown checkpoint format 'persaes-checkpoint/99'"),
    "older-format": (older_format, "made by an older persaes (format 'persaes-checkpoint/1'); "
                                   "run `persaes personalize` again on the same answers to rebuild it"),
    "retouch-model": (retouch_model_as_profile, "unknown checkpoint format 'persaes-retouchnet/1'"),
    "unknown-backbone": (unknown_backbone, "unknown backbone 'resnet50'; known: efficientnet_lite2, vgg16"),
    "vgg16-without-weights": (vgg16_profile, ""),
    "head-of-another-backbone": (head_of_another_backbone,
                                 "tensors do not fit a efficientnet_lite2 head (size mismatch for "),
}


@pytest.fixture(scope="module")
def album(tmp_path_factory: pytest.TempPathFactory) -> Path:
    album = tmp_path_factory.mktemp("weights") / "album"
    album.mkdir()
    rf.one_pixel(album)
    return album


@pytest.fixture(autouse=True)
def _no_vgg16_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERSAES_VGG16_WEIGHTS", raising=False)


def refused(result: Result, path: Path, reason: str) -> None:
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: {reason}"), lines


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", ["score", "retouch"])
def test_bad_profiles_are_refused_in_one_line(case: str, command: str, album: Path, tmp_path: Path) -> None:
    make, reason = CASES[case]
    bad = make(tmp_path)
    if command == "score":
        result = invoke("score", album, "--profile", bad, "--device", "cpu")
    else:
        result = invoke("retouch", album, tmp_path / "out", "--profile", bad, "--steps", "1", "--device", "cpu")
        assert not (tmp_path / "out").exists()
    if case == "vgg16-without-weights":
        reason = "vgg16 needs a torchvision vgg16 state-dict file: pass its path or set PERSAES_VGG16_WEIGHTS"
        assert result.stderr.startswith(f"Error: {reason}") and len(result.stderr.splitlines()) == 1, result.stderr
        assert result.exit_code == 1
    else:
        refused(result, bad, reason)


def test_a_good_rewritten_profile_still_loads(album: Path, tmp_path: Path) -> None:
    """The control: the files above differ from a working one only by what each case names."""
    good = write(tmp_path / "good.safetensors", *generic())
    assert invoke("score", album, "--profile", good, "--device", "cpu").exit_code == 0


# -- pickles are never loaded ----------------------------------------------------------------------------------------

def pickle_files(folder: Path, marker: Path) -> dict[str, Path]:
    plain = folder / "plain-pickle.safetensors"
    plain.write_bytes(pickle.dumps({"head.weight": MarkerPayload(marker)}))
    zipped = folder / "torch-save.safetensors"
    torch.save({"head.weight": MarkerPayload(marker)}, zipped)
    pth = folder / "weights.pth"
    shutil.copy(zipped, pth)
    return {"plain": plain, "torch-save": zipped, "pth": pth}


def test_the_payload_is_live(tmp_path: Path) -> None:
    """Control: unpickling the payload with pickle does create its marker."""
    marker = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(MarkerPayload(marker)))
    assert marker.exists()


PICKLE = "a pickle or torch.save file; persaes loads only safetensors (pickles can run code)"


@pytest.mark.parametrize("kind", ["plain", "torch-save", "pth"])
def test_pickles_are_refused_without_running(album: Path, tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "marker"
    path = pickle_files(tmp_path, marker)[kind]
    refused(invoke("score", album, "--profile", path, "--device", "cpu"), path, PICKLE)
    refused(invoke("retouch", album, tmp_path / "out", "--profile", path, "--device", "cpu"), path, PICKLE)
    refused(invoke("retouch", album, tmp_path / "out", "--model", path, "--device", "cpu"), path, PICKLE)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_bad_retouching_models_are_refused_in_one_line(album: Path, tmp_path: Path) -> None:
    from persaes.io.retouch_net_file import save_retouch_net
    from retouch import RetouchNet

    good = save_retouch_net(tmp_path / "net.safetensors", RetouchNet(("exposure",)), {})
    tensors = load_file(str(good))
    with safe_open(str(good), "pt") as handle:
        meta = json.loads(handle.metadata()["persaes"])
    no_ops = tmp_path / "no-ops.safetensors"
    save_file(tensors, str(no_ops), metadata={"persaes": json.dumps({k: v for k, v in meta.items() if k != "ops"})})
    other_ops = tmp_path / "other-ops.safetensors"
    save_file(tensors, str(other_ops), metadata={"persaes": json.dumps({**meta, "ops": ["exposure", "color"]})})
    profile = write(tmp_path / "profile.safetensors", *generic())
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-100])
    for path, reason in [
        (no_ops, "metadata does not describe a retouching model (KeyError: 'ops')"),
        (other_ops, "tensors do not fit the model it describes (Missing key(s) in state_dict: "),
        (profile, "not a persaes retouching model (format 'persaes-checkpoint/3')"),
        (cut, "not a valid retouching model (Error while deserializing header: "),
    ]:
        refused(invoke("retouch", album, tmp_path / "out", "--model", path, "--device", "cpu"), path, reason)
    assert invoke("retouch", album, tmp_path / "out", "--model", good, "--device", "cpu").exit_code == 0  # control


def test_a_profile_naming_a_pickle_as_its_backbone_weights_runs_no_code(album: Path, tmp_path: Path) -> None:
    """A profile's metadata may name its backbone's weights file (VGG16); a pickle with code there is refused."""
    marker = tmp_path / "marker"
    pth = pickle_files(tmp_path, marker)["pth"]
    profile = vgg16_profile(tmp_path)
    tensors = load_file(str(profile))
    with safe_open(str(profile), "pt") as handle:
        meta = json.loads(handle.metadata()["persaes"])
    write(profile, tensors, {**meta, "backbone_weights": str(pth)})
    refused(invoke("score", album, "--profile", profile, "--device", "cpu"), pth,
            "holds more than tensors (objects or code), refused")
    assert not marker.exists()
