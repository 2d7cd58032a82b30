"""Speed and memory (protocol §4), each figure beside a reference measured in the same run.

Example::

    python benchmarks/speed.py --folder ../shared/data/oasis/images --json out/speed.json

Each part runs in its own process so its peak resident memory is its own:

* ``scoring``: images/s over ``--images`` photos of a folder (JPEG decoding included),
  batch 32, on ``--device`` (``cpu`` or ``cuda``): the default backbone's feature pass alone
  (the reference), the full scorer (backbone + head), and the paper's VGG16 layout (random
  weights: speed only); then the same models over batches decoded beforehand (``*_preloaded``:
  model throughput alone). Memory: peak RSS, and on CUDA ``torch.cuda.max_memory_allocated``.
* ``personalize``: seconds from an album of ``--album`` photos and 100 answers to a saved
  profile, cold (empty feature cache) and warm; reference: the cold run's backbone pass.
* ``retouch``: seconds per 12-megapixel photo (4000×3000) per op, applying a fitted edit
  and optimising it (``--steps`` steps); reference: decoding + encoding the photo alone.
* ``album`` (minutes; only when named in ``--parts``): seconds per photo to retouch a folder of
  ``--photos`` photos (the first files of ``--folder`` in sorted order, copied to a temp folder)
  with ``retouch_folder`` as ``persaes retouch`` runs it (``--steps`` steps, the default ops and
  fidelity, seed 0, scores before and after included): generic (the shipped generic scorer, no
  base), and with a profile learned from the bundled ``examples/album`` + ``examples/answers.jsonl``
  (its edit fitted on top of the generic retouch, ``--base generic``, the CLI's default); reference:
  scoring the same files (``Scorer.score``, generic scorer, batch 32). Models are loaded and one
  photo retouched (untimed) before the timed runs, as the scoring part warms up its models.
* ``retouch50`` (only when named in ``--parts``): one 50-megapixel JPEG (8160×6120, the first photo of
  ``--folder`` upscaled) retouched as ``persaes retouch`` does it (``retouch_folder``, generic scorer, the default
  ops, ``--steps`` steps, scores before and after, the JPEG written): seconds and peak RSS, beside the peak RSS
  once the scorer is loaded.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from retouch.optimize import EditSettings


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def copy_album(files: list[Path], album: Path) -> Path:
    """Copy ``files`` into a new folder ``album`` (the photos a part works on, apart from the data)."""
    album.mkdir()
    for f in files:
        shutil.copy(f, album / f.name)
    return album


def part_scoring(args: argparse.Namespace) -> dict:
    from persaes.core.backbones import create_backbone, get_spec
    from persaes.core.model import AestheticModel, AttentionHead, load_square, preprocess
    from persaes.core.scorer import load_scorer
    from persaes.io.images import iter_images

    files = list(iter_images([args.folder]))[: args.images]
    device = torch.device(args.device)
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    def rate(step, items=None, passes: int = 1) -> float:
        items = [files[i:i + 32] for i in range(0, len(files), 32)] if items is None else items
        sync()
        start = time.perf_counter()
        for _ in range(passes):
            for item in items:
                with torch.no_grad():
                    step(item)
        sync()
        return passes * len(files) / (time.perf_counter() - start)

    def batch_of(paths, size: int) -> torch.Tensor:
        return torch.cat([load_square(p, size) for p in paths]).to(device)

    scorer = load_scorer("generic", device=args.device)
    spec = scorer.model.spec
    backbone = scorer.model.backbone
    vgg_spec = get_spec("vgg16")
    torch.manual_seed(0)
    vgg = AestheticModel(vgg_spec, create_backbone("vgg16", "random"), AttentionHead(vgg_spec.channels)).eval()
    vgg = vgg.to(device)
    for f in files:  # every timed pass finds the files in the OS cache alike
        Path(f).read_bytes()
    # warm-up: one full batch through each model (lazy kernel loading, per-shape kernel choice on CUDA)
    rate(lambda paths: backbone(preprocess(batch_of(paths, spec.input_size), spec)), [files[:32]])
    rate(lambda paths: scorer.score(paths, batch_size=32), [files[:32]])
    rate(lambda paths: vgg.score(batch_of(paths, vgg_spec.input_size)), [files[:32]])
    backbone_only = rate(lambda paths: backbone(preprocess(batch_of(paths, spec.input_size), spec)))
    scoring = rate(lambda paths: scorer.score(paths, batch_size=32))
    vgg_rate = rate(lambda paths: vgg.score(batch_of(paths, vgg_spec.input_size)))
    out = {"device": torch.cuda.get_device_name(device) if cuda else "cpu", "images": len(files),
           "backbone_only_img_s": backbone_only, "scorer_img_s": scoring, "scorer_vs_backbone": scoring / backbone_only,
           "vgg16_layout_img_s": vgg_rate, "default_vs_vgg16": scoring / vgg_rate, "threads": torch.get_num_threads(),
           "peak_rss_mib": _peak_mib()}
    if cuda:
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    # Model throughput alone: every batch decoded (and moved to the device) before the timer starts.
    batches = [batch_of(files[i:i + 32], spec.input_size) for i in range(0, len(files), 32)]
    passes = args.passes
    out["backbone_only_preloaded_img_s"] = rate(lambda batch: backbone(preprocess(batch, spec)), batches, passes)
    out["scorer_preloaded_img_s"] = rate(lambda batch: scorer.model.score(batch), batches, passes)
    batches = [batch_of(files[i:i + 32], vgg_spec.input_size) for i in range(0, len(files), 32)]
    out["vgg16_layout_preloaded_img_s"] = rate(lambda batch: vgg.score(batch), batches, passes)
    out["preloaded_passes"] = passes
    out["default_vs_vgg16_preloaded"] = out["scorer_preloaded_img_s"] / out["vgg16_layout_preloaded_img_s"]
    out["preloaded_peak_rss_mib"] = _peak_mib()
    if cuda:
        out["preloaded_cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def part_personalize(args: argparse.Namespace) -> dict:
    from persaes.core.features import FeatureCache
    from persaes.core.personalize import personalize
    from persaes.io.images import iter_images
    from persaes.io.preferences import Answer, append_answer, sample_pairs

    files = list(iter_images([args.folder]))[: args.album]
    with tempfile.TemporaryDirectory() as tmp:
        album = copy_album(files, Path(tmp) / "album")
        prefs = Path(tmp) / "answers.jsonl"
        for a, b in sample_pairs(sorted(f.name for f in files), 100, 0):
            append_answer(prefs, Answer(winner=a, loser=b))
        cache = FeatureCache(Path(tmp) / "cache", "efficientnet_lite2", "pretrained")
        stages: dict[str, float] = {}
        last = [time.perf_counter(), ""]

        def progress(stage: str, done: int, total: int) -> None:
            now = time.perf_counter()
            if last[1]:
                stages[last[1]] = stages.get(last[1], 0.0) + now - last[0]
            last[:] = [now, stage]

        start = time.perf_counter()
        personalize(album, prefs, Path(tmp) / "cold.safetensors", device="cpu", cache=cache, progress=progress)
        cold = time.perf_counter() - start
        backbone_pass = stages.get("album features", 0.0)
        start = time.perf_counter()
        personalize(album, prefs, Path(tmp) / "warm.safetensors", device="cpu", cache=cache)
        warm = time.perf_counter() - start
    return {"photos": len(files), "answers": 100, "cold_s": cold, "warm_s": warm,
            "cold_backbone_pass_s": backbone_pass, "cold_photos_per_s": len(files) / max(backbone_pass, 1e-9),
            "backbone_share_of_cold": backbone_pass / cold, "peak_rss_mib": _peak_mib()}


def part_retouch(args: argparse.Namespace) -> dict:
    from PIL import Image

    from persaes.core.aesthetic_loss import AestheticLoss
    from persaes.core.scorer import load_scorer
    from persaes.io.images import load_image
    from retouch import OPS, Retoucher
    from retouch.optimize import optimize_edit

    source = next(iter(sorted(Path(args.folder).glob("*.jpg"))))
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.jpg"
        Image.open(source).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC).save(big, quality=92)
        start = time.perf_counter()
        image = load_image(big)[None]
        buffer = io.BytesIO()
        Image.open(big).save(buffer, "JPEG", quality=95)
        io_s = time.perf_counter() - start
        loss = AestheticLoss(load_scorer("generic", device="cpu"))
        out: dict[str, dict[str, float]] = {}
        for op in OPS:
            retoucher = Retoucher((op,))
            start = time.perf_counter()
            retoucher.retouch_full(image)
            apply_s = time.perf_counter() - start
            start = time.perf_counter()
            fitted = optimize_edit(image, loss, (op,), EditSettings(steps=args.steps))
            fitted.retouch_full(image)
            out[op] = {"apply_s": apply_s, "optimize_and_apply_s": time.perf_counter() - start}
    return {"megapixels": 12.0, "steps": args.steps, "decode_encode_s": io_s, "ops": out, "peak_rss_mib": _peak_mib()}


def part_album(args: argparse.Namespace) -> dict:
    from persaes.app.retouch_folder import retouch_folder
    from persaes.core.features import FeatureCache
    from persaes.core.personalize import personalize
    from persaes.core.scorer import load_scorer
    from persaes.io.images import iter_images

    examples = Path(__file__).resolve().parent.parent / "examples"
    files = sorted(iter_images([args.folder]))[: args.photos]
    settings = EditSettings(steps=args.steps)  # `persaes retouch`'s defaults but --steps
    with tempfile.TemporaryDirectory() as tmp:
        album = copy_album(files, Path(tmp) / "album")
        profile = Path(tmp) / "profile.safetensors"
        cache = FeatureCache(Path(tmp) / "cache", "efficientnet_lite2", "pretrained")
        start = time.perf_counter()
        personalize(examples / "album", examples / "answers.jsonl", profile, device="cpu", cache=cache)
        profile_s = time.perf_counter() - start
        # as cli/retouch.py loads them: the profile (or generic) scorer, and for a profile the generic base
        generic = load_scorer("generic", device="cpu")
        personal = load_scorer(str(profile), device="cpu")
        base = load_scorer("generic", device="cpu")
        copied = [album / f.name for f in files]
        for f in copied:  # every timed pass finds the files in the OS cache alike
            f.read_bytes()
        # warm-up, untimed: one scoring batch and one photo retouched each way
        generic.score(copied, batch_size=32)
        warm = Path(tmp) / "warm"
        warm.mkdir()
        shutil.copy(copied[0], warm / copied[0].name)
        retouch_folder(warm, Path(tmp) / "warm_generic", generic, settings=settings, model_name="generic")
        retouch_folder(warm, Path(tmp) / "warm_profile", personal, settings=settings, model_name=str(profile),
                       base=base, base_name="generic")
        start = time.perf_counter()
        generic.score(copied, batch_size=32)
        score_s = (time.perf_counter() - start) / len(copied)
        start = time.perf_counter()
        done_generic = retouch_folder(album, Path(tmp) / "generic", generic, settings=settings, model_name="generic")
        generic_s = (time.perf_counter() - start) / len(copied)
        generic_rss = _peak_mib()
        start = time.perf_counter()
        done_profile = retouch_folder(album, Path(tmp) / "profile", personal, settings=settings,
                                      model_name=str(profile), base=base, base_name="generic")
        profile_retouch_s = (time.perf_counter() - start) / len(copied)
    if done_generic.done != len(copied) or done_profile.done != len(copied):
        raise RuntimeError(f"retouch failures: {done_generic.failed + done_profile.failed}")
    return {"photos": len(copied), "first": files[0].name if files else None, "steps": args.steps,
            "profile_from": "examples/album + examples/answers.jsonl", "personalize_s": profile_s,
            "score_s_per_photo": score_s, "generic_s_per_photo": generic_s, "profile_s_per_photo": profile_retouch_s,
            "generic_vs_score": generic_s / score_s, "profile_vs_score": profile_retouch_s / score_s,
            "profile_vs_generic": profile_retouch_s / generic_s, "threads": torch.get_num_threads(),
            "generic_peak_rss_mib": generic_rss, "peak_rss_mib": _peak_mib()}


def part_retouch50(args: argparse.Namespace) -> dict:
    from persaes.app.retouch_folder import retouch_folder
    from persaes.core.scorer import load_scorer

    source = next(iter(sorted(Path(args.folder).glob("*.jpg"))))
    width, height = 8160, 6120  # 49.9 megapixels
    with tempfile.TemporaryDirectory() as tmp:
        album = Path(tmp) / "album"
        album.mkdir()
        # made in a child process, so this one's peak memory is the retouch's alone
        make = ("import sys; from PIL import Image; Image.open(sys.argv[1]).convert('RGB').resize((int(sys.argv[3]), "
                "int(sys.argv[4])), Image.Resampling.BICUBIC).save(sys.argv[2], quality=92)")
        subprocess.run([sys.executable, "-c", make, str(source), str(album / "big.jpg"), str(width), str(height)],
                       check=True)
        scorer = load_scorer("generic", device="cpu")
        models_rss = _peak_mib()
        start = time.perf_counter()
        done = retouch_folder(album, Path(tmp) / "out", scorer, settings=EditSettings(steps=args.steps),
                              model_name="generic")
        seconds = time.perf_counter() - start
    if done.done != 1:
        raise RuntimeError(f"retouch failures: {done.failed}")
    return {"megapixels": width * height / 1e6, "steps": args.steps, "retouch_s": seconds,
            "models_peak_rss_mib": models_rss, "peak_rss_mib": _peak_mib()}


PARTS = {"scoring": part_scoring, "personalize": part_personalize, "retouch": part_retouch, "album": part_album,
         "retouch50": part_retouch50}
DEFAULT_PARTS = ("scoring", "personalize", "retouch")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folder", type=Path, required=True, help="a folder of photos")
    ap.add_argument("--images", type=int, default=128, help="photos scored")
    ap.add_argument("--album", type=int, default=100, help="photos in the personalization album")
    ap.add_argument("--steps", type=int, default=EditSettings.steps,
                    help="optimisation steps per photo (retouch, album)")
    ap.add_argument("--photos", type=int, default=24, help="photos retouched in the album part")
    ap.add_argument("--parts", default=",".join(DEFAULT_PARTS),
                    help=f"comma-separated, of {', '.join(PARTS)} [default: %(default)s]; album retouches a folder "
                         "twice (generic, with a profile) and takes minutes on a CPU, so it runs only when named, "
                         "as does retouch50 (one 50 MP photo)")
    ap.add_argument("--part", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device of the scoring part")
    ap.add_argument("--passes", type=int, default=1, help="timed passes over the preloaded batches (scoring)")
    args = ap.parse_args(argv)
    unknown = set((args.part or args.parts).split(",")) - set(PARTS)
    if unknown:
        ap.error(f"unknown parts: {', '.join(sorted(unknown))} (choose from {', '.join(PARTS)})")
    if args.device != "cpu" and set((args.part or args.parts).split(",")) - {"scoring"}:
        ap.error(f"--device {args.device} applies to the scoring part only: add --parts scoring")
    if args.part:
        print(json.dumps(PARTS[args.part](args)))
        return 0
    if args.json is None:
        ap.error("--json is required")
    started = time.time()
    results = {}
    for name in args.parts.split(","):
        command = [sys.executable, __file__, "--part", name, "--folder", str(args.folder), "--images", str(args.images),
                   "--album", str(args.album), "--steps", str(args.steps), "--photos", str(args.photos),
                   "--device", args.device, "--passes", str(args.passes)]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name}: {json.dumps(results[name])}", file=sys.stderr)
    results["seconds"] = round(time.time() - started, 1)
    results["command"] = " ".join(["python", "benchmarks/speed.py", *(argv if argv is not None else sys.argv[1:])])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
