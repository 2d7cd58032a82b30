from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from cli_testing import chained_album, one_line_error, run

from persaes.core.scorer import load_scorer
from persaes.io.safetensors_file import read_safetensors

FAST = ["--epochs", "2", "--harden-rounds", "0", "--draws", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def data(photos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An OASIS-style rated set of the 4 fixture photos (ratings 1-7 of 3 people), and a prior of 2 photos."""
    root = tmp_path_factory.mktemp("refs")
    (root / "images.csv").write_text("image,file\n" + "".join(f"{p.stem},{p}\n" for p in photos))
    (root / "ratings.csv").write_text("participant,image,beauty\n" + "".join(
        f"{j},{p.stem},{1 + (2 * i + j) % 7}\n" for j in range(3) for i, p in enumerate(photos)))
    prior = root / "prior"
    prior.mkdir()
    for p in photos[:2]:
        shutil.copy(p, prior / p.name)
    return {"spec": f"ratings:{root / 'ratings.csv'}:{root / 'images.csv'}", "prior": prior, "root": root}


@pytest.fixture(scope="module")
def trained(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generic") / "mine.safetensors"
    result = run("train-generic", data["spec"], "--out", str(out), "--prior-photos", str(data["prior"]), *FAST)
    assert result.exit_code == 0, result.output
    assert f"weights written to {out} (4 references, 2 prior photos)" in result.stdout
    return out


def test_help_has_an_example() -> None:
    result = run("train-generic", "--help")
    assert result.exit_code == 0 and "Example" in result.output and "persaes train-generic" in result.output


def test_the_weights_load_and_score(trained: Path, photos: list[Path]) -> None:
    scorer = load_scorer(trained, device="cpu")
    scores = scorer.score(photos)
    assert bool(((scores >= 1) & (scores <= 10)).all())
    meta = scorer.metadata
    assert meta["kind"] == "generic" and meta["recipe"] == "statistics" and meta["prior_photos"] == 2
    assert meta["training"]["epochs"] == 2 and meta["recipe_settings"]["quality_width"] == 0
    result = run("score", *map(str, photos), "--profile", str(trained), "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [round(r["score"], 2) for r in listed] == [round(float(s), 2) for s in scores]


def test_personalize_starts_from_the_weights(trained: Path, photos: list[Path], tmp_path: Path) -> None:
    album, prefs = chained_album(photos, tmp_path)
    out = tmp_path / "me.safetensors"
    result = run("personalize", str(album), "--prefs", str(prefs), "--out", str(out), "--start", str(trained),
                  "--device", "cpu")
    assert result.exit_code == 0, result.output
    meta = load_scorer(out, device="cpu").metadata
    assert meta["trained_on"]["start"] == str(trained)
    assert meta["trained_on"]["start_trained_on"]["quality_prior"].startswith("2 photos")


def test_the_command_is_deterministic_and_the_prior_may_be_a_list(trained: Path, data: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    listing = tmp_path / "prior.txt"
    listing.write_text("# the prior\n" + "".join(f"{p}\n" for p in sorted(data["prior"].glob("*.jpg"))))
    out = tmp_path / "again.safetensors"
    result = run("train-generic", data["spec"], "--out", str(out), "--prior-photos", str(listing), *FAST)
    assert result.exit_code == 0, result.output
    first, second = read_safetensors(trained)[0], read_safetensors(out)[0]
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_bad_references_are_one_line_errors(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "o.safetensors"
    one_line_error(run("train-generic", "nope:x", "--out", str(out)), "reference spec 'nope:x'")
    missing = tmp_path / "missing.csv"
    one_line_error(run("train-generic", f"csv:{missing}", "--out", str(out)), str(missing), "not found")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,rating\nx.jpg,3\n")
    one_line_error(run("train-generic", f"csv:{bad}", "--out", str(out)), str(bad), "header")
    empty = tmp_path / "gone.csv"
    empty.write_text(f"file,score\n{tmp_path / 'gone.jpg'},5\n")
    one_line_error(run("train-generic", f"csv:{empty}", "--out", str(out)), "no usable reference")
    one_line_error(run("train-generic", data["spec"], "--out", str(out), "--prior-photos", str(tmp_path / "no")),
                    str(tmp_path / "no"))
    one_line_error(run("train-generic", data["spec"], "--out", str(out), "--recipe", "hardened"), "prior photos",
                   "hardening rounds to 0")
    assert not out.exists()


class Interrupted(Exception):
    pass


def test_state_resumes_an_interrupted_run_to_the_same_weights(trained: Path, data: dict[str, Path], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import persaes.cli.generic as generic

    real = generic.train_generic_weights

    def interrupted(*args, **kwargs):
        def stop(epoch: int, loss: float) -> None:
            if epoch == 1:
                raise Interrupted

        return real(*args, **kwargs, on_epoch=stop)

    out, state = tmp_path / "resumed.safetensors", tmp_path / "run.state.safetensors"
    command = ["train-generic", data["spec"], "--out", str(out), "--prior-photos", str(data["prior"]),
               "--state", str(state), *FAST]
    monkeypatch.setattr(generic, "train_generic_weights", interrupted)
    assert isinstance(run(*command).exception, Interrupted)
    assert state.is_file() and not out.exists()
    monkeypatch.undo()
    result = run(*command)
    assert result.exit_code == 0, result.output
    first, resumed = read_safetensors(trained)[0], read_safetensors(out)[0]
    assert all(torch.equal(first[k], resumed[k]) for k in first)
