"""Retouching folders of photos against an aesthetic model, safely and resumably.

* Each photo is written to ``OUT`` under its relative path, atomically (no partial files),
  upright (EXIF orientation applied), in its own format; photos already in ``OUT`` are
  skipped, so an interrupted run resumes. ``IN`` is never written to.
* ``OUT/scores.csv`` lists each photo's score before and after under the model used,
  rewritten atomically after every photo.
* Edits come from per-photo optimisation (:func:`retouch.optimize.optimize_edit`) or
  from a trained :class:`retouch.RetouchNet` (one pass). A profile's fitted edit is made
  on top of the generic model's (``base``), so personal retouching is the generic
  retouch plus the user's taste.

Example::

    >>> summary = retouch_folder("album", "out", load_scorer("me.safetensors"))   # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from kornia.color import rgb_to_grayscale
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import Tensor

from persaes.app.variants import is_variant
from persaes.core.aesthetic_loss import AestheticLoss
from persaes.core.scorer import Scorer
from persaes.io.atomic import atomic_path, atomic_write_bytes, remove_stale_temp_files
from persaes.io.checkpoint import is_pickle, load_error
from persaes.io.images import ImageError, iter_images, open_rgb, to_bytes, to_tensor
from retouch import RetouchNet
from retouch.dehaze import resize_to_fit
from retouch.optimize import EditSettings, optimize_edit

SCORES_FILE = "scores.csv"
NET_FORMAT = "persaes-retouchnet/1"
TASTE_FIDELITY_SHARE = 0.3
"""Share of the fidelity weight that holds a profile's edit to the base retouch it is fitted on:
that edit refines an already retouched photo, and at the full weight the L1 fidelity term kept
it at exactly zero on some photos. 0.3 rather than 0.5 since the exposure curves' channel
spread is charged: it won back dark-and-moody's photos without bolder casts
(benchmarks/README.md, §3)."""
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
    """(source, destination) pairs of the photos under ``in_dir`` (``_variants/`` left out);
    refuses OUT == IN or OUT inside IN.
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
    array = to_bytes(image).permute(1, 2, 0).cpu().numpy()
    img = Image.fromarray(array, "RGB")
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


def taste_settings(settings: EditSettings) -> EditSettings:
    """The settings a profile's edit is fitted with on top of a base retouch: ``settings`` with
    :data:`TASTE_FIDELITY_SHARE` of the fidelity weight.
    """
    return replace(settings, fidelity=settings.fidelity * TASTE_FIDELITY_SHARE)


def is_greyscale(image: Tensor) -> bool:
    """Whether every pixel of a 1×3×H×W ``[0, 1]`` image has equal channels, up to the 2/255 that
    8-bit JPEG rounding leaves in a grey photo.
    """
    return bool((image.amax(dim=1) - image.amin(dim=1)).max() <= 2 / 255)


def retouch_image(image: Tensor, loss: AestheticLoss, ops: Sequence[str], settings: EditSettings,
                  net: RetouchNet | None = None, seed: int = 0, base: AestheticLoss | None = None) -> Tensor:
    """Retouched full-size 1×3×H×W: a fitted edit (``net`` None) or the network's one pass.

    With ``base`` (the generic model's loss), the photo is retouched against ``base`` first,
    then that result against ``loss`` with :func:`taste_settings` (fidelity measured to the
    base retouch): a profile's taste is a change on top of the generic retouch, so it keeps
    the generic model's corrections (haze, casts, exposure) unless the profile argues
    against them. Given the base retouch already, ``retouch_image(base_retouch, loss, ops,
    taste_settings(settings))`` is the same result.

    A greyscale photo (:func:`is_greyscale`) stays greyscale: its result is turned back into
    grey (the luma of the retouched image), so tonal edits apply and no colour cast appears.
    """
    if net is not None:
        if base is not None:
            raise ValueError("a retouching model applies in one pass; base is for fitted edits only")
        with torch.no_grad():
            result = net(image)
    elif base is not None:
        start = retouch_image(image, base, ops, settings, seed=seed)
        return retouch_image(start, loss, ops, taste_settings(settings), seed=seed)
    else:
        result = optimize_edit(image, loss, ops, settings, seed).retouch_full(image)
    if is_greyscale(image):
        result = rgb_to_grayscale(result).expand_as(result).contiguous()
    return result


def retouch_folder(
    in_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    scorer: Scorer,
    ops: Sequence[str] = ("exposure", "color", "dehaze"),
    settings: EditSettings | None = None,
    net: RetouchNet | None = None,
    seed: int = 0,
    progress: Callable[[Iterator[tuple[Path, Path]], int], Iterator[tuple[Path, Path]]] | None = None,
    on_error: Callable[[str], None] | None = None,
    model_name: str = "",
    base: Scorer | None = None,
) -> RetouchSummary:
    """Retouch every photo under ``in_dir`` into ``out_dir`` (see the module docstring).

    ``base``: a scorer whose fitted edit is made first, ``scorer``'s on top of it (see
    :func:`retouch_image`); scores before and after are ``scorer``'s.
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
    items = progress(iter(todo), len(todo)) if progress else iter(todo)
    for src, dst in items:
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
            continue
        # the row first: a run killed in between leaves a row whose photo a rerun makes (and re-scores)
        scores[dst.relative_to(out_dir).as_posix()] = {
            "score_before": f"{before:.4f}", "score_after": f"{after:.4f}", "model": model_name}
        _write_scores(scores_path, {k: {"path": k, **v} for k, v in scores.items()})
        save_photo(result[0], dst, exif, icc_profile)
        summary.done += 1
    return summary


def save_retouch_net(path: str | os.PathLike[str], net: RetouchNet, metadata: dict[str, object]) -> Path:
    """Write a :class:`RetouchNet` as safetensors + JSON metadata, atomically."""
    meta = {"format": NET_FORMAT, "ops": list(net.retoucher.ops), "input_size": net.input_size,
            "width": net.encoder[0].out_channels, **metadata}
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"persaes": json.dumps(meta, sort_keys=True)})
    return path


def load_retouch_net(path: str | os.PathLike[str]) -> tuple[RetouchNet, dict[str, object]]:
    """Read a :class:`RetouchNet` written by :func:`save_retouch_net`; clear errors for other files."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise RetouchError(f"{path}: no such retouching model file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("persaes", "{}"))
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure here is the file's
        if is_pickle(path):
            raise RetouchError(f"{path}: a pickle or torch.save file; persaes loads only safetensors (pickles can "
                               "run code)") from None
        raise RetouchError(f"{path}: not a valid retouching model ({str(exc).splitlines()[0]})") from None
    if meta.get("format") != NET_FORMAT:
        raise RetouchError(f"{path}: not a persaes retouching model (format {meta.get('format')!r})")
    try:
        net = RetouchNet(meta["ops"], input_size=int(meta["input_size"]), width=int(meta["width"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise RetouchError(f"{path}: metadata does not describe a retouching model ({type(exc).__name__}: {exc})") from None
    try:
        net.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise RetouchError(f"{path}: tensors do not fit the model it describes ({load_error(exc)})") from None
    return net.eval(), meta
