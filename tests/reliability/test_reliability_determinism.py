"""Same inputs and seed, same outputs, through the commands: profiles bit-identical on the CPU, retouched
files byte-identical. (The API-level check is tests/persaes/core/test_personalize.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import reliability_files as rf
import torch
from click.testing import CliRunner, Result
from persaes.cli.main import main
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def make_project(root: Path) -> Path:
    """root/album (four photos, one in a subfolder, odd names) and root/answers.jsonl."""
    album = root / "album"
    (album / "sub folder").mkdir(parents=True)
    names = ["a.jpg", "b é.png", "sub folder/c.jpg", "d.webp"]
    for name, photo in zip(names, sorted(rf.PHOTOS.glob("*.jpg"))):
        Image.open(photo).resize((150, 120)).save(album / name)
    answers = [(names[0], names[1]), (names[1], names[2]), (names[3], names[2]), (names[0], names[3])]
    (root / "answers.jsonl").write_text(
        "".join(json.dumps({"winner": winner, "loser": loser}) + "\n" for winner, loser in answers)
    )
    return root


def personalize_in(root: Path, monkeypatch: pytest.MonkeyPatch, seed: int = 0) -> bytes:
    monkeypatch.chdir(root)
    result = invoke("personalize", "album", "--prefs", "answers.jsonl", "--out", "me.safetensors", "--iterations", "30",
                    "--seed", seed, "--device", "cpu")
    assert result.exit_code == 0, result.output
    return (root / "me.safetensors").read_bytes()


def metadata(path: Path) -> dict:
    with safe_open(str(path), "pt") as handle:
        return json.loads(handle.metadata()["persaes"])


def test_same_inputs_and_seed_give_a_byte_identical_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two copies of a project, a cold then a warm feature cache, SOURCE_DATE_EPOCH fixing the date."""
    monkeypatch.setenv("PERSAES_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first, second = make_project(tmp_path / "one"), tmp_path / "two"
    shutil.copytree(first, second, symlinks=True)
    a = personalize_in(first, monkeypatch)  # features computed
    b = personalize_in(second, monkeypatch)  # features from the cache
    assert a == b
    assert metadata(first / "me.safetensors")["created"] == "2023-11-14T22:13:20Z"

    monkeypatch.delenv("SOURCE_DATE_EPOCH")  # without it only the date may differ
    personalize_in(second, monkeypatch)
    one, two = load_file(str(first / "me.safetensors")), load_file(str(second / "me.safetensors"))
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    meta_one, meta_two = metadata(first / "me.safetensors"), metadata(second / "me.safetensors")
    assert ({k: v for k, v in meta_one.items() if k != "created"}
            == {k: v for k, v in meta_two.items() if k != "created"})

    other = personalize_in(second, monkeypatch, seed=1)  # the seed matters
    other_tensors = load_file(str(second / "me.safetensors"))
    assert other != a and not all(torch.equal(one[k], other_tensors[k]) for k in one)


def test_same_inputs_and_seed_give_byte_identical_retouched_files(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_project(tmp_path)
    monkeypatch.chdir(root)
    outputs = []
    for out in ("out1", "out2"):
        result = invoke("retouch", "album", out, "--steps", "2", "--seed", "3", "--device", "cpu")
        assert result.exit_code == 0 and "4 photos retouched" in result.stdout, result.output
        outputs.append({p.relative_to(root / out).as_posix(): p.read_bytes()
                        for p in sorted((root / out).rglob("*")) if p.is_file()})
    assert sorted(outputs[0]) == ["a.jpg", "b é.png", "d.webp", "scores.csv", "sub folder/c.jpg"]
    assert outputs[0] == outputs[1]
