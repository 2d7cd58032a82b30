"""Throughput of ``persaes train-generic``'s two halves on 1 and 2 processes (torchrun, gloo on the CPU).

    python benchmarks/components.py --parts distributed      # this part of the components benchmark
    python benchmarks/distributed_throughput.py              # the same, alone

Each figure is timed between two barriers inside a ``python -m torch.distributed.run --standalone
--nproc-per-node N`` job, one thread per process (``OMP_NUM_THREADS=1``), the way train-generic runs:

* ``extract``: reference features (``extract_features`` on each rank's shard into an empty feature
  cache, as the command's first half) of ``--photos`` JPEGs (500×400, made here), photos/s.
* ``train``: the generic stage (``train_generic``, DistributedDataParallel when N > 1) for one epoch
  over ``--references`` references with random features of the default backbone's shapes and as many
  quality-prior pairs, global batch 32 as in one process; references/s.
* ``decode``: what a rank does on the CPU per photo before the backbone (hash the file, decode and
  resize it), in one process: on a GPU this, not the backbone, bounds a rank's extraction.

Also measured, for context: 1 process with every thread of the machine (``threads_all``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve()


def make_photos(folder: Path, n: int) -> list[Path]:
    """``n`` random-noise-over-gradient JPEGs of 500×400 (AVA's typical size), made once."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    paths = []
    for i in range(n):
        path = folder / f"p{i:04d}.jpg"
        if not path.exists():
            ramp = torch.linspace(0, 1, 500)[None, None, :].expand(3, 400, 500)
            pixels = (0.6 * ramp + 0.4 * torch.rand(3, 400, 500, generator=g)).clamp(0, 1)
            Image.fromarray((pixels.permute(1, 2, 0) * 255).byte().numpy()).save(path, quality=90)
        paths.append(path)
    return paths


def worker(args: argparse.Namespace) -> None:
    """One rank of a measuring job: rank 0 prints ``{"seconds": ...}`` (the slowest rank's, barrier to barrier)."""
    from persaes.core import distributed
    from persaes.core.backbones import DEFAULT_BACKBONE, create_backbone, get_spec
    from persaes.core.model import AestheticModel, AttentionHead

    me = distributed.init("cpu")
    spec = get_spec(DEFAULT_BACKBONE)
    model = AestheticModel(spec, create_backbone(spec.name, "pretrained"), AttentionHead(spec.channels)).eval()
    if args.worker == "extract":
        from persaes.core.features import FeatureCache, extract_features

        paths = sorted(Path(args.folder).glob("*.jpg"))
        cache = FeatureCache(Path(args.folder) / f"cache-{me.size}-{os.environ.get('OMP_NUM_THREADS')}",
                             spec.name, "pretrained")
        extract_features(model, paths[:2], None)  # warm-up, untimed
        distributed.barrier()
        start = time.perf_counter()
        extract_features(model, distributed.shard(paths, me), cache)
        distributed.barrier()
        seconds, count = time.perf_counter() - start, len(paths)
    else:
        seconds, count = _train(model, args.references, distributed)
    if me.is_main:
        print(json.dumps({"seconds": seconds, "items": count, "processes": me.size,
                          "threads_per_process": torch.get_num_threads()}))
    distributed.shutdown()


def _train(model, references: int, distributed) -> tuple[float, int]:
    from persaes.core.features import Features, features_of_tensors
    from persaes.core.train import GenericSettings, train_generic

    one = features_of_tensors(model, torch.rand(1, 3, 260, 260))  # the shapes of real cached features
    g = torch.Generator().manual_seed(0)
    feats = Features(*(t.expand(references, *t.shape[1:]).clone() for t in one.tensors()))
    feats.z3 = torch.randn(references, feats.z3.shape[1], generator=g).half()
    feats.stats = torch.randn(references, feats.stats.shape[1], generator=g)
    hists = torch.softmax(torch.randn(references, 10, generator=g), dim=1)
    pairs = torch.randint(0, references, (references, 2), generator=g)
    settings = GenericSettings(epochs=1, pair_weight=3.0, pair_margin=0.5)
    train_generic(model.head, feats.take, hists[:64], GenericSettings(epochs=1), rated=torch.arange(64))  # warm-up
    distributed.barrier()
    start = time.perf_counter()
    train_generic(model.head, feats.take, hists, settings, pairs=pairs)
    distributed.barrier()
    return time.perf_counter() - start, references


def launch(what: str, processes: int, threads: int, args: argparse.Namespace) -> dict:
    """Run one measuring job under torchrun and return rank 0's figures."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
               str(HERE), "--worker", what, "--folder", str(args.folder), "--references", str(args.references)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{what} on {processes} processes failed:\n{result.stderr[-3000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures["per_s"] = round(figures["items"] / figures["seconds"], 2)
    return figures


def decode_seconds(paths: list[Path]) -> float:
    """Seconds per photo to hash, decode and resize it to the backbone's input (one thread)."""
    from persaes.core.backbones import DEFAULT_BACKBONE, get_spec
    from persaes.core.features import file_digest
    from persaes.core.model import load_square

    size = get_spec(DEFAULT_BACKBONE).input_size
    torch.set_num_threads(1)
    start = time.perf_counter()
    for path in paths:
        file_digest(path)
        load_square(path, size)
    return (time.perf_counter() - start) / len(paths)


def measure(photos: int = 48, references: int = 2048) -> dict:
    """The part's figures: extraction and training on 1 and 2 processes, their ratios, the decode cost."""
    with tempfile.TemporaryDirectory() as tmp:
        args = argparse.Namespace(folder=Path(tmp) / "photos", references=references)
        paths = make_photos(args.folder, photos)
        out: dict = {"cpu_cores": os.cpu_count()}
        for what in ("extract", "train"):
            one, two = launch(what, 1, 1, args), launch(what, 2, 1, args)
            every = launch(what, 1, os.cpu_count() or 1, args)
            out[what] = {"unit": "photos/s" if what == "extract" else "references/s", "items": one["items"],
                         "1_process": one["per_s"], "2_processes": two["per_s"],
                         "ratio_2_over_1": round(two["per_s"] / one["per_s"], 2),
                         "1_process_all_threads": every["per_s"]}
        out["decode_s_per_photo"] = round(decode_seconds(paths), 4)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=48, help="photos to extract (made here, 500×400 JPEG)")
    ap.add_argument("--references", type=int, default=2048, help="references to train one epoch on")
    ap.add_argument("--worker", choices=("extract", "train"), help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return 0
    print(json.dumps(measure(args.photos, args.references), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
