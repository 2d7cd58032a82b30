"""``persaes train-generic`` under torchrun: 2 CPU processes (gloo) against one process, and a killed run resumed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from cli_testing import run
from PIL import Image, ImageEnhance

from persaes.core.features import FeatureCache, extract_features, features_of_tensors, file_digest
from persaes.core.generic_weights import VERSIONS
from persaes.core.model import distribution_to_score, load_square
from persaes.core.scorer import load_scorer
from persaes.eval.protocol import spearman

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="no gloo backend")

#: Brightness of the references (8 per fixture photo: 32) and of the held-out photos; the consensus
#: score rises with it from 2 to 8.
LEVELS = (0.25, 0.36, 0.47, 0.58, 0.69, 0.8, 0.91, 1.0)
HELD_OUT = (0.3, 0.63, 0.96)
OPTIONS = ["--epochs", "30", "--harden-rounds", "0", "--draws", "1", "--device", "cpu"]
#: What the job caches: the references, the prior photo that is no reference, both prior photos' versions.
CACHED = len(LEVELS) * 4 + 1 + 2 * len(VERSIONS)
PERSAES = shutil.which("persaes", path=str(Path(sys.executable).parent)) or shutil.which("persaes")


def consensus(level: float) -> float:
    return 2 + 6 * (level - 0.25) / 0.75


@pytest.fixture(scope="module")
def job(photos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A ``csv:`` reference set of 32 darkened fixture photos, 12 held-out ones and a prior of 2 photos."""
    root = tmp_path_factory.mktemp("distributed")
    (root / "refs").mkdir()
    held = []
    for photo in photos:
        small = Image.open(photo).convert("RGB").resize((200, 160))
        for level in LEVELS + HELD_OUT:
            folder = root / ("refs" if level in LEVELS else "held")
            folder.mkdir(exist_ok=True)
            path = folder / f"{photo.stem}_{round(level * 100)}.jpg"
            ImageEnhance.Brightness(small).enhance(level).save(path, quality=90)
            if level in HELD_OUT:
                held.append((path, consensus(level)))
    table = root / "refs" / "scores.csv"
    table.write_text("file,score\n" + "".join(f"{p.stem}_{round(lv * 100)}.jpg,{consensus(lv):.3f}\n"
                                              for p in photos for lv in LEVELS))
    Image.open(photos[0]).convert("RGB").resize((180, 150)).save(root / "extra.jpg", quality=90)
    prior = root / "prior.txt"  # one reference and one photo that is no reference
    prior.write_text(f"refs/{photos[1].stem}_100.jpg\nextra.jpg\n")
    return {"spec": f"csv:{table}", "prior": prior, "held": held, "root": root, "cache": root / "cache"}


def torchrun(job: dict, *command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc-per-node 2 COMMAND`` on the job's cache."""
    environ = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    environ.update({"PERSAES_CACHE": str(job["cache"]), "OMP_NUM_THREADS": "1", **(env or {})})
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           *command], cwd=job["root"], env=environ, capture_output=True, text=True, timeout=600)


def train_command(job: dict, out: Path) -> list[str]:
    return ["train-generic", job["spec"], "--out", str(out), "--prior-photos", str(job["prior"]), *OPTIONS]


def cached(job: dict) -> dict[Path, tuple[int, int]]:
    """Every cached feature file, with its inode and modification time (a rewrite changes both)."""
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in job["cache"].rglob("*.safetensors")}


@pytest.fixture(scope="module")
def killed(job: dict) -> tuple[subprocess.CompletedProcess, dict]:
    """A 2-process run whose rank 1 dies after caching 3 features; what it left in the cache."""
    helper = str(Path(__file__).with_name("killed_rank.py"))
    result = torchrun(job, helper, *train_command(job, job["root"] / "killed.safetensors"), env={"KILL_AFTER": "3"})
    return result, cached(job)


@pytest.fixture(scope="module")
def two(job: dict, killed: tuple) -> tuple[subprocess.CompletedProcess, dict, Path]:
    """The same command run again, unchanged, under ``torchrun --no-python persaes``: it resumes from the cache."""
    if PERSAES is None:
        pytest.skip("the persaes command is not installed")
    out = job["root"] / "two.safetensors"
    result = torchrun(job, "--no-python", PERSAES, *train_command(job, out))
    return result, cached(job), out


@pytest.fixture(scope="module")
def one(job: dict, two: tuple) -> Path:
    """The one-process run of the same command, in this process, on the same feature cache."""
    out = job["root"] / "one.safetensors"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PERSAES_CACHE", str(job["cache"]))
        result = run(*train_command(job, out))
    assert result.exit_code == 0, result.output
    return out


def test_a_killed_run_resumes_from_the_cache(job: dict, killed: tuple, two: tuple) -> None:
    crash, before = killed
    assert crash.returncode != 0 and not (job["root"] / "killed.safetensors").exists()
    assert 3 <= len(before) < len(LEVELS) * 4, crash.stderr[-2000:]  # rank 1's share of the references is not done
    result, after, _ = two
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(after) == CACHED
    assert all(after[path] == stamp for path, stamp in before.items())  # what was cached is read, not recomputed


def test_two_processes_train_the_model_one_process_trains(job: dict, two: tuple, one: Path) -> None:
    result, _, out = two
    assert result.stdout.count("weights written to") == 1  # rank 0 alone reports
    assert f"weights written to {out} (32 references, 2 prior photos)" in result.stdout
    assert result.stderr.count("generic stage: 30/30") == 1  # and shows progress
    files, truth = [p for p, _ in job["held"]], torch.tensor([s for _, s in job["held"]])
    scores = {}
    for path in (out, one):
        scorer = load_scorer(path, device="cpu")
        if not scores:
            feats, found, _ = extract_features(scorer.model, files, None)
            assert found == list(range(len(files)))
        with torch.no_grad():
            scores[scorer.metadata["world_size"]] = distribution_to_score(scorer.model.head(*feats.take(found)))
    assert sorted(scores) == [1, 2]
    assert spearman(scores[1], scores[2]) >= 0.9
    assert (scores[1] - scores[2]).abs().max() < 0.75
    assert spearman(scores[1], truth) >= 0.8 and spearman(scores[2], truth) >= 0.8  # each tracks the consensus


def test_each_rank_cached_the_features_of_its_own_photos(job: dict, two: tuple, pretrained_model) -> None:
    """The ranks' cache entries are the features of the photos they are filed under (ranks 0 and 1's first)."""
    cache = FeatureCache(job["cache"], pretrained_model.spec.name, "pretrained")
    for name in ("Bird3_25.jpg", "Bird3_36.jpg"):
        path = job["root"] / "refs" / name
        direct = features_of_tensors(pretrained_model, load_square(path, pretrained_model.spec.input_size))
        stored = cache.get(file_digest(path))
        assert stored is not None
        assert all(torch.allclose(a.float(), b.float(), rtol=1e-2, atol=1e-2)
                   for a, b in zip(stored.tensors(), direct.tensors()))
