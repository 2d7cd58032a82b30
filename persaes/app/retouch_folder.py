"""Retouching folders of photos against an aesthetic model, safely and resumably.

* Each photo is written to ``OUT`` under its relative path, atomically (no partial files),
  upright (EXIF orientation applied), in its own format; photos already in ``OUT`` are
  skipped, so an interrupted run resumes. ``IN`` is never written to.
* ``OUT/scores.csv`` lists each photo's score before and after under the model used,
  rewritten atomically after every photo.
* Each photo is retouched by :func:`persaes.core.retouching.retouch_image`: per-photo
  optimisation or a trained :class:`retouch.RetouchNet` (one pass); a profile's fitted edit
  is made on top of the generic model's (``base``).

Example:
    >>> import tempfile
    >>> from persaes.core.scorer import load_scorer
    >>> tmp = Path(tempfile.mkdtemp())
    >>> (tmp / "album").mkdir()
    >>> to_pil(torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(0))).save(tmp / "album" / "a.jpg")
    >>> _ = (tmp / "album" / "broken.jpg").write_bytes(b"")
    >>> scorer = load_scorer("generic", device="cpu")            # or a profile: load_scorer("me.safetensors")
    >>> fast = EditSettings(steps=2, work_size=32)
    >>> summary = retouch_folder(tmp / "album", tmp / "out", scorer, settings=fast)
    >>> summary.done, summary.skipped, [line.rsplit(": ", 1)[1] for line in summary.failed]
    (1, 0, ['empty file'])
    >>> sorted(p.name for p in (tmp / "out").iterdir())
    ['a.jpg', 'scores.csv']
    >>> (tmp / "out" / SCORES_FILE).read_text().splitlines()[0]
    'path,score_before,score_after,model'
    >>> retouch_folder(tmp / "album", tmp / "out", scorer, settings=fast).skipped   # a rerun resumes
    1
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from persaes.app.progress import ProgressCallback
from persaes.app.variants import is_variant
from persaes.core.aesthetic_loss import AestheticLoss
from persaes.core.retouching import retouch_image
from persaes.core.scorer import Scorer
from persaes.io.atomic import atomic_path, atomic_write_bytes, remove_stale_temp_files
from persaes.io.images import ImageError, iter_images, open_rgb, to_pil, to_tensor
from retouch import OPS, RetouchNet
from retouch.dehaze import resize_to_fit
from retouch.optimize import EditSettings

SCORES_FILE = "scores.csv"
_SAVE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF",
                 ".bmp": "BMP", ".gif": "PNG"}


class RetouchError(ValueError):
    """A retouch run that cannot start (e.g. OUT == IN); one line."""


@dataclass
class RetouchSummary:
    """What a folder run did: counts and one line per failed photo."""

    done: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)


def plan(in_dir: Path, out_dir: Path) -> list[tuple[Path, Path]]:
    """The (source, destination) pairs of a folder run.

    Args:
        in_dir: the photos (searched recursively; ``_variants/`` left out).
        out_dir: where they go, under the same relative paths (a GIF as PNG).

    Returns:
        One pair per photo, in :func:`~persaes.io.images.iter_images` order.

    Raises:
        RetouchError: ``in_dir`` is missing, or ``out_dir`` is ``in_dir`` or inside it.
    """
    src, dst = in_dir.resolve(), out_dir.resolve()
    if not src.is_dir():
        raise RetouchError(f"{in_dir}: input folder not found")
    if dst == src:
        raise RetouchError(f"{out_dir}: OUT is the input folder; originals are never overwritten, choose another OUT")
    if src in dst.parents:
        raise RetouchError(f"{out_dir}: OUT lies inside the input folder {in_dir}; choose a folder outside it")
    pairs = []
    for path in iter_images([in_dir]):
        relative = path.relative_to(in_dir)
        if is_variant(relative.as_posix()):
            continue  # question material made by persaes, not the user's photos
        target = out_dir / relative
        if target.suffix.lower() == ".gif":
            target = target.with_suffix(".png")
        pairs.append((path, target))
    return pairs


def source_metadata(path: Path) -> tuple[Image.Exif | None, bytes | None]:
    """The EXIF and the RGB colour profile of a photo :func:`open_rgb` has read, to carry over to its output.

    A palette image's, and a colour profile for another colour space (CMYK, grey), are left out: the output is RGB.
    """
    with Image.open(path) as original:
        if original.mode == "P":
            return None, None
        icc = original.info.get("icc_profile")
        return original.getexif(), icc if icc and icc[16:20] == b"RGB " else None


def save_photo(image: Tensor, path: Path, exif: Image.Exif | None = None, icc_profile: bytes | None = None) -> None:
    """Write a 3×H×W ``[0, 1]`` tensor to ``path`` atomically, format by suffix (JPEG quality 95).

    ``exif`` (its orientation reset to upright) and the RGB ``icc_profile`` are kept where the format allows.
    """
    img = to_pil(image.cpu())
    fmt = _SAVE_FORMATS.get(path.suffix.lower(), "PNG")
    options: dict[str, object] = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    if fmt in ("JPEG", "WEBP", "PNG", "TIFF"):
        if exif:
            exif[0x0112] = 1  # pixels are upright now
            options["exif"] = exif.tobytes()
        if icc_profile:
            options["icc_profile"] = icc_profile
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def _read_scores(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        return {row["path"]: row for row in csv.DictReader(handle) if row.get("path")}


def _write_scores(path: Path, rows: dict[str, dict[str, str]]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["path", "score_before", "score_after", "model"])
    writer.writeheader()
    for key in sorted(rows):
        writer.writerow({k: rows[key].get(k, "") for k in writer.fieldnames})
    atomic_write_bytes(path, out.getvalue().encode("utf-8", "surrogateescape"))  # names as the file system has them


def retouch_folder(
    in_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    scorer: Scorer,
    ops: Sequence[str] = OPS,
    settings: EditSettings | None = None,
    net: RetouchNet | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    on_error: Callable[[str], None] | None = None,
    model_name: str = "",
    base: Scorer | None = None,
) -> RetouchSummary:
    """Retouch every photo under ``in_dir`` into ``out_dir`` (see the module docstring).

    Args:
        in_dir: the photos (searched recursively; ``_variants/`` left out); never written to.
        out_dir: where the retouched photos and ``scores.csv`` go; neither ``in_dir`` nor inside it.
        scorer: the model the edits are fitted against and the scores are given by.
        ops: the ops to fit (see :data:`retouch.OPS`).
        settings: how edits are fitted (default :class:`~retouch.optimize.EditSettings`).
        net: a trained retouching network: one pass per photo instead of fitting.
        seed: fixes each photo's fit.
        progress: told the photos retouched (failed ones included) of those not yet in ``out_dir``.
        on_error: told each failed photo's one-line reason; the run carries on.
        model_name: the ``model`` column of ``scores.csv``.
        base: a scorer whose fitted edit is made first, ``scorer``'s on top of it (see
            :func:`~persaes.core.retouching.retouch_image`); scores before and after are ``scorer``'s.

    Returns:
        The photos retouched, skipped (already in ``out_dir``) and failed.

    Raises:
        RetouchError: ``in_dir`` is missing, or ``out_dir`` is ``in_dir`` or inside it.
    """
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    pairs = plan(in_dir, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out_dir)  # left by a killed run; its finished photos are whole
    settings = settings or EditSettings()
    loss = AestheticLoss(scorer)
    base_loss = AestheticLoss(base) if base is not None else None
    device = scorer.device
    scores_path = out_dir / SCORES_FILE
    scores = _read_scores(scores_path)
    summary = RetouchSummary()
    todo = [(s, d) for s, d in pairs if not d.exists()]
    summary.skipped = len(pairs) - len(todo)
    if progress:
        progress(0, len(todo))
    for done, (src, dst) in enumerate(todo, 1):
        try:
            full = to_tensor(open_rgb(src))[None].to(device)  # refuses bad files and bombs before anything else
            exif, icc_profile = source_metadata(src)
            result = retouch_image(full, loss, ops, settings, net, seed, base_loss)
            with torch.no_grad():
                before, after = scorer.score([resize_to_fit(full, 512), resize_to_fit(result, 512)]).tolist()
        except (ImageError, OSError, RuntimeError) as exc:  # RuntimeError: e.g. out of memory on a huge photo
            message = str(exc) if isinstance(exc, ImageError) else f"{src}: cannot retouch ({str(exc).splitlines()[0]})"
            summary.failed.append(message)
            if on_error:
                on_error(message)
        else:
            # the row first: a run killed in between leaves a row whose photo a rerun makes (and re-scores)
            scores[dst.relative_to(out_dir).as_posix()] = {
                "score_before": f"{before:.4f}", "score_after": f"{after:.4f}", "model": model_name}
            _write_scores(scores_path, {k: {"path": k, **v} for k, v in scores.items()})
            save_photo(result[0], dst, exif, icc_profile)
            summary.done += 1
        if progress:
            progress(done, len(todo))
    return summary

