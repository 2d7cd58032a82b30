"""Retouching folders of photos against an aesthetic model, safely and resumably.

* Each photo is written to ``OUT`` under its relative path, atomically (no partial files),
  upright (EXIF orientation applied), in its own format and kind: greyscale stays greyscale,
  the alpha channel is carried over untouched (the edit applies to the colour), 16-bit
  greyscale and 16-bit colour PNG are edited in float and written at 16 bits; EXIF, colour profile, DPI and PNG text
  are kept (:func:`~persaes.io.images.read_photo`, :func:`save_photo`). ``IN`` is never written to.
* ``OUT/scores.csv`` lists each photo's score before and after under the model used, and the
  settings that made it (:func:`run_settings`), rewritten atomically after every photo. A rerun
  skips the photos made with the same settings, so an interrupted run resumes; photos made
  with other settings stop it before anything is written, unless it is asked to re-do them.
* The photos are retouched by :func:`persaes.core.retouching.retouch_images`: fitted edits
  (photos of one size fitted together, each its own edit) or a trained
  :class:`retouch.RetouchNet` (one pass); a profile's fitted edit is made on top of the
  generic model's (``base``), whose retouches a second folder can get from the same fits
  (``base_out``: the side-by-side report's generic column).

Example:
    >>> import tempfile
    >>> import torch
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
    'path,score_before,score_after,model,settings'
    >>> retouch_folder(tmp / "album", tmp / "out", scorer, settings=fast).skipped   # a rerun resumes
    1
    >>> try:                                                     # other settings: nothing is written
    ...     retouch_folder(tmp / "album", tmp / "out", scorer, settings=EditSettings(steps=0, work_size=32))
    ... except RetouchError as err:
    ...     print(str(err).split("(", 1)[1].split(")")[0])
    steps 2 -> 0
    >>> retouch_folder(tmp / "album", tmp / "out", scorer, settings=EditSettings(steps=0, work_size=32),
    ...                redo=True).done
    1
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import PngImagePlugin
from torch import Tensor

from persaes.app.progress import ProgressCallback
from persaes.app.variants import is_variant
from persaes.core.aesthetic_loss import AestheticLoss
from persaes.core.retouching import retouch_images, retouch_on_base
from persaes.core.scorer import Scorer, format_score
from persaes.io.atomic import atomic_path, atomic_write_bytes, remove_stale_temp_files
from persaes.io.checkpoint import tensors_digest
from persaes.io.images import ImageError, Photo, iter_images, read_photo, to_pil
from persaes.io.png16 import encode_png16
from retouch import OPS, RetouchNet
from retouch.optimize import FIT_BATCH, EditSettings

SCORES_FILE = "scores.csv"
_SAVE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF",
                 ".bmp": "BMP", ".gif": "PNG"}
_WRITABLE_MODES = {"JPEG": {"L", "RGB"}, "WEBP": {"RGB", "RGBA"}, "BMP": {"L", "RGB"},
                   "PNG": {"L", "LA", "RGB", "RGBA", "I;16"}, "TIFF": {"L", "LA", "RGB", "RGBA", "I;16"}}
_METADATA_FORMATS = {"exif": {"JPEG", "WEBP", "PNG", "TIFF"}, "icc_profile": {"JPEG", "WEBP", "PNG", "TIFF"},
                     "dpi": {"JPEG", "PNG", "TIFF", "BMP"}, "comment": {"JPEG"}, "xmp": {"JPEG", "WEBP"}}
"""Which formats each :attr:`~persaes.io.images.Photo.metadata` entry is written to (PNG text chunks: PNG)."""
SCORE_COLUMNS = ["path", "score_before", "score_after", "model", "settings"]
"""The columns of ``scores.csv``; ``settings`` is :func:`run_settings`' record (JSON) of the run that made the photo."""


BATCH_PIXELS = 25_000_000
"""Most pixels of the full-size photos retouched together (two 12-MP photos; many small ones)."""


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


def save_photo(image: Tensor, path: Path, source: Photo | None = None) -> None:
    """Write a 3×H×W ``[0, 1]`` tensor to ``path`` atomically, format by suffix (see :func:`encode_photo`).

    Raises:
        ImageError: the format cannot hold the photo or its metadata; nothing is written.
    """
    _write_photo(path, encode_photo(image, path, source))


def _write_photo(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def encode_photo(image: Tensor, path: Path, source: Photo | None = None) -> bytes:
    """The file of a 3×H×W ``[0, 1]`` tensor, format by ``path``'s suffix (JPEG and WebP quality 95).

    With ``source`` (the photo ``image`` was made from, :func:`~persaes.io.images.read_photo`), the
    output is of its kind (:meth:`~persaes.io.images.Photo.to_image`: greyscale, alpha, 16 bits)
    and keeps its metadata where the format holds them; a kind the format cannot hold becomes the
    nearest it can (alpha over white, 8 bits). A 16-bit colour photo is written at 16 bits as PNG
    (:func:`~persaes.io.png16.encode_png16`: Pillow cannot write it), at 8 bits in other formats.
    Without ``source``, the output is 8-bit RGB.

    Raises:
        ImageError: the format cannot hold the photo or its metadata; one line naming ``path``.
    """
    fmt = _SAVE_FORMATS.get(path.suffix.lower(), "PNG")
    if source is not None and fmt == "PNG" and source.bits == 16 and not source.grey:
        return _encode_png16(image, path, source)
    img = source.to_image(image) if source is not None else to_pil(image.detach().cpu())
    if source is not None and img.mode not in _WRITABLE_MODES[fmt]:
        flat = to_pil(source.over_white(image.detach().cpu().float()))
        img = flat.convert("L") if source.grey and "L" in _WRITABLE_MODES[fmt] else flat
    options: dict[str, Any] = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    metadata = source.metadata if source is not None else {}
    for key, value in metadata.items():
        if fmt in _METADATA_FORMATS.get(key, ()):
            options[key] = value
    if fmt == "PNG" and metadata.get("text"):
        chunks = PngImagePlugin.PngInfo()
        for key, value in metadata["text"].items():
            chunks.add_text(key, value)
        options["pnginfo"] = chunks
    if "icc_profile" in options and options["icc_profile"][16:20] != (b"RGB " if img.mode.startswith("RGB")
                                                                     else b"GRAY"):
        del options["icc_profile"]  # the output's colour space changed (a greyscale photo written as RGB)
    buffer = io.BytesIO()
    try:
        img.save(buffer, fmt, **options)
    except (ValueError, TypeError, OSError) as exc:  # e.g. EXIF too long for a JPEG segment
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"{path}: cannot be written as {fmt} ({reason})") from None
    return buffer.getvalue()


def _encode_png16(image: Tensor, path: Path, source: Photo) -> bytes:
    """A 16-bit colour photo as a 16-bit PNG, with its colour profile (if RGB), DPI, EXIF and text."""
    metadata = source.metadata
    icc = metadata.get("icc_profile")
    try:
        return encode_png16(source.to_levels(image), icc_profile=icc if icc and icc[16:20] == b"RGB " else None,
                            dpi=metadata.get("dpi"), exif=metadata.get("exif"), text=metadata.get("text"))
    except ValueError as exc:  # e.g. a text key PNG cannot hold
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"{path}: cannot be written as PNG ({reason})") from None


def _read_scores(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        return {row["path"]: row for row in csv.DictReader(handle) if row.get("path")}


def _write_scores(path: Path, rows: dict[str, dict[str, str]]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=SCORE_COLUMNS)
    writer.writeheader()
    for key in sorted(rows):
        writer.writerow({k: rows[key].get(k, "") for k in writer.fieldnames})
    atomic_write_bytes(path, out.getvalue().encode("utf-8", "surrogateescape"))  # names as the file system has them


def _weights_sha256(scorer: Scorer) -> str:
    """The identity of a scorer's weights: the checksum its file's metadata records, else one of its head."""
    recorded = scorer.metadata.get("tensors_sha256")
    if isinstance(recorded, str) and recorded:
        return recorded
    return tensors_digest({f"head.{k}": v for k, v in scorer.model.head.state_dict().items()})


def run_settings(scorer: Scorer, ops: Sequence[str] = OPS, settings: EditSettings | None = None,
                 net: RetouchNet | None = None, seed: int = 0, base: Scorer | None = None, model_name: str = "",
                 base_name: str = "") -> dict[str, Any]:
    """What makes a folder run's outputs and scores, as ``scores.csv``'s ``settings`` column records it per photo.

    Models are identified by their weights' SHA-256 (``*_sha256``); their names are shown, not compared
    (see :func:`settings_differences`). A network's one pass depends on neither the ops, the seed nor the
    fitting settings, only on the limits its edit is held to, so the rest is left out with ``net``.

    Args:
        scorer: the model the edits are fitted against and the scores are given by.
        ops: the ops fitted.
        settings: how edits are fitted (default :class:`~retouch.optimize.EditSettings`).
        net: a trained retouching network making the edits instead.
        seed: the fits' seed.
        base: the scorer whose fitted edit is made first.
        model_name: the name of ``net``, else of ``scorer``, as the user gave it.
        base_name: ``base``'s name, as the user gave it.

    Returns:
        A JSON-able dict: ``model`` and ``model_sha256`` (the network, or the scorer the edit is fitted
        against), ``scorer_sha256`` (with a network: the scores' model), ``base`` and ``base_sha256``,
        ``ops``, ``seed`` and the :class:`~retouch.optimize.EditSettings` fields.

    Example:
        >>> from persaes.core.scorer import load_scorer
        >>> record = run_settings(load_scorer("generic", device="cpu"), ("exposure",), EditSettings(steps=3),
        ...                       model_name="generic")
        >>> record["model"], len(record["model_sha256"]), record["base"], record["ops"], record["steps"]
        ('generic', 64, 'none', ['exposure'], 3)
    """
    if net is not None:
        limits = settings or EditSettings()
        return {"model": model_name, "model_sha256": tensors_digest(net.state_dict()),
                "scorer_sha256": _weights_sha256(scorer), "neutral_limit": limits.neutral_limit,
                "clip_limit": limits.clip_limit}
    base_sha256 = _weights_sha256(base) if base is not None else None
    return {"model": model_name, "model_sha256": _weights_sha256(scorer),
            "base": (base_name or base_sha256[:12]) if base_sha256 else "none", "base_sha256": base_sha256,
            "ops": list(ops), "seed": seed, **(settings or EditSettings()).as_dict()}


_SHOWN_NOT_COMPARED = ("model", "base")


def settings_differences(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """What differs between two :func:`run_settings` records, one short phrase each (names shown, weights compared).

    Args:
        old: the record of an earlier run; None where it was not recorded.
        new: this run's.

    Returns:
        No phrase where the records make the same outputs.

    Example:
        >>> old = {"model": "me.safetensors", "model_sha256": "aa", "steps": 100, "ops": ["exposure"]}
        >>> settings_differences(old, {**old, "model": "generic", "model_sha256": "bb", "steps": 0})
        ['model me.safetensors -> generic', 'steps 100 -> 0']
        >>> settings_differences({**old, "model": "./me.safetensors"}, old), settings_differences(None, old)
        ([], ['settings not recorded'])
    """
    if old is None:
        return ["settings not recorded"]
    if ("scorer_sha256" in old) != ("scorer_sha256" in new):  # a network's pass on one side, a fitted edit on the other
        kinds = ("fitted edits", "a retouching model") if "scorer_sha256" in new else ("a retouching model",
                                                                                       "fitted edits")
        return [f"model {old.get('model', '?')} -> {new.get('model', '?')}", f"{kinds[0]} -> {kinds[1]}"]
    phrases = []
    for key in [*new, *(k for k in old if k not in new)]:
        was, now = old.get(key), new.get(key)
        if key in _SHOWN_NOT_COMPARED or was == now:
            continue
        if key in ("model_sha256", "base_sha256"):
            name = key.removesuffix("_sha256")
            was_name, now_name = old.get(name, "?"), new.get(name, "?")
            phrases.append(f"{name} {was_name} -> {now_name}" if was_name != now_name else
                           f"{name} {now_name} (other weights)")
        elif key == "scorer_sha256":
            phrases.append("scoring model (other weights)")
        else:
            phrases.append(f"{key} {_shown(was)} -> {_shown(now)}")
    return phrases


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _recorded(row: dict[str, str] | None) -> dict[str, Any] | None:
    """The :func:`run_settings` record of a ``scores.csv`` row; None if it has none (an older persaes, or edited)."""
    try:
        record = json.loads((row or {}).get("settings") or "null")
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


@dataclass
class _Target:
    """One output folder of a run: its scorer, its ``scores.csv`` rows and the photos it holds already."""

    out_dir: Path
    scorer: Scorer
    scores: dict[str, dict[str, str]]
    finished: set[Path]
    columns: dict[str, str]


def _target(in_dir: Path, out_dir: Path, scorer: Scorer, current: dict[str, Any], redo: bool) -> _Target:
    """Read ``out_dir``'s state for a run whose :func:`run_settings` are ``current``.

    Raises:
        RetouchError: ``out_dir`` holds photos made with other settings and ``redo`` is False.
    """
    scores = _read_scores(out_dir / SCORES_FILE)
    finished: set[Path] = set()  # made with these settings: skipped
    other: list[Path] = []  # made with other settings: re-done with ``redo``, else the run stops here
    for _, dst in plan(in_dir, out_dir):
        if dst.exists():
            recorded = _recorded(scores.get(dst.relative_to(out_dir).as_posix()))
            if settings_differences(recorded, current):
                other.append(dst)
            else:
                finished.add(dst)
    if other and not redo:
        first = _recorded(scores.get(other[0].relative_to(out_dir).as_posix()))
        many = len(other) != 1
        raise RetouchError(f"{out_dir}: {len(other)} photo{'s' * many} there {'were' if many else 'was'} made with "
                           f"other settings ({', '.join(settings_differences(first, current))}); pass --redo to "
                           "re-do them, replacing them in OUT (the originals are never touched), or choose another "
                           "OUT")
    record = json.dumps(current, sort_keys=True, separators=(",", ":"))
    return _Target(out_dir, scorer, scores, finished, {"model": current["model"], "settings": record})


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
    base_name: str = "",
    redo: bool = False,
    batch_size: int = FIT_BATCH,
    base_out: str | os.PathLike[str] | None = None,
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
        progress: told the photos retouched (failed ones included) of those not yet in ``out_dir``
            (and ``base_out``).
        on_error: told each failed photo's one-line reason; the run carries on.
        model_name: the ``model`` column of ``scores.csv``.
        base: a scorer whose fitted edit is made first, ``scorer``'s on top of it (see
            :func:`~persaes.core.retouching.retouch_image`); scores before and after are ``scorer``'s.
        base_name: ``base``'s name for ``scores.csv``'s ``settings`` column (see :func:`run_settings`).
        redo: re-do the photos ``out_dir`` (and ``base_out``) holds from a run with other settings, replacing them.
        batch_size: most photos fitted together (:func:`~persaes.core.retouching.retouch_images`; photos
            are also batched only up to :data:`BATCH_PIXELS` in all).
        base_out: with ``base``, a second folder that gets the base retouches, scored by ``base``: what
            ``retouch_folder(in_dir, base_out, base, ops, settings, seed=seed, model_name=base_name)`` writes,
            each photo's base edit fitted once for both folders. Neither ``in_dir``, inside it, nor ``out_dir``.

    Returns:
        The photos retouched (written to ``out_dir`` or ``base_out``), skipped (already in both, made with the
        same settings) and failed.

    Raises:
        RetouchError: ``in_dir`` is missing, ``out_dir`` is ``in_dir`` or inside it, or ``out_dir``
            holds photos made with other settings and ``redo`` is False (nothing is written then); the same for
            ``base_out``.
        ValueError: ``base_out`` without ``base``, with ``net``, or ``base_out`` is ``out_dir``.
    """
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if base_out is not None and (base is None or net is not None or Path(base_out).resolve() == out_dir.resolve()):
        raise ValueError("base_out needs fitted edits on top of a base scorer, and a folder of its own, not out_dir")
    pairs = plan(in_dir, out_dir)
    settings = settings or EditSettings()
    targets = [_target(in_dir, out_dir, scorer, run_settings(scorer, ops, settings, net, seed, base, model_name,
                                                             base_name), redo)]
    if base_out is not None and base is not None:
        targets.append(_target(in_dir, Path(base_out), base, run_settings(base, ops, settings, None, seed, None,
                                                                          base_name), redo))
    for target in targets:
        target.out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(target.out_dir)  # left by a killed run; its finished photos are whole
    loss = AestheticLoss(scorer, reduction="none")
    base_loss = AestheticLoss(base, reduction="none") if base is not None else None
    summary = RetouchSummary()
    todo = [(s, d) for s, d in pairs
            if any(t.out_dir / d.relative_to(out_dir) not in t.finished for t in targets)]
    summary.skipped = len(pairs) - len(todo)
    done = 0
    if progress:
        progress(0, len(todo))

    def counted() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, len(todo))

    def failed(message: str) -> None:
        summary.failed.append(message)
        if on_error:
            on_error(message)
        counted()

    for batch in _photo_batches(todo, failed, batch_size):
        results = _retouch_batch(batch, scorer.device, loss, ops, settings, net, seed, base_loss, len(targets) > 1)
        befores = [{path: (value, error) for path, value, error in t.scorer.iter_scores([src for src, _, _ in batch])}
                   for t in targets]
        for (src, dst, photo), result in zip(batch, results):
            try:
                written = _encoded(result, targets, befores, src, dst.relative_to(out_dir), photo)
            except (ImageError, OSError, RuntimeError) as exc:  # RuntimeError: e.g. out of memory on a huge photo
                failed(_failure(src, exc))
                continue
            for target, goal, data, before in written:
                _write_result(goal, data, target.scorer, target.scores, target.out_dir, target.columns, before)
            summary.done += 1
            counted()
    return summary


def _encoded(result: list[Tensor] | Exception, targets: list[_Target],
             befores: list[dict[Path, tuple[float | None, str]]], src: Path, relative: Path,
             photo: Photo) -> list[tuple[_Target, Path, bytes, float]]:
    """Each target's file of one photo's retouch (those it holds already left out), with the photo's score before.

    Raises:
        Exception: the photo's retouch failed (``result``), its file has no score, or a retouch cannot be written.
    """
    if isinstance(result, Exception):
        raise result
    written = []
    for target, image, scored in zip(targets, result, befores):
        before, error = scored[src]  # the file's score, as `persaes score` gives it
        if before is None:
            raise ImageError(error)
        goal = target.out_dir / relative
        if goal not in target.finished:  # a photo that cannot be written fails here, old output kept
            written.append((target, goal, encode_photo(image[0], goal, photo), before))
    return written


def _photo_batches(todo: list[tuple[Path, Path]], failed: Callable[[str], None],
                   batch_size: int) -> Iterator[list[tuple[Path, Path, Photo]]]:
    """Read ``todo``'s photos in batches of at most ``batch_size`` photos and :data:`BATCH_PIXELS` pixels.

    A photo that cannot be read is told to ``failed`` (its one-line reason) and left out.
    """
    batch: list[tuple[Path, Path, Photo]] = []
    pixels = 0
    for src, dst in todo:
        try:
            photo = read_photo(src)  # refuses bad files and bombs before anything else
        except (ImageError, OSError) as exc:
            failed(_failure(src, exc))
            continue
        size = photo.color.shape[-2] * photo.color.shape[-1]
        if batch and (len(batch) == batch_size or pixels + size > BATCH_PIXELS):
            yield batch
            batch, pixels = [], 0
        batch.append((src, dst, photo))
        pixels += size
    if batch:
        yield batch


def _failure(src: Path, exc: Exception) -> str:
    """The one-line reason a photo failed (an :class:`ImageError` names its file already)."""
    return str(exc) if isinstance(exc, ImageError) else f"{src}: cannot retouch ({str(exc).splitlines()[0]})"


def _retouch_batch(batch: list[tuple[Path, Path, Photo]], device: Any, loss: AestheticLoss, ops: Sequence[str],
                   settings: EditSettings, net: RetouchNet | None, seed: int, base_loss: AestheticLoss | None,
                   keep_base: bool = False) -> list[list[Tensor] | Exception]:
    """Each photo's retouch (with ``keep_base``, then its base retouch), fitted together.

    When the batch fails (e.g. out of memory), photo by photo.
    """
    images = [photo.color[None].to(device) for _, _, photo in batch]
    try:
        if not keep_base or base_loss is None:
            return [[result] for result in retouch_images(images, loss, ops, settings, net, seed, base_loss)]
        return [list(pair) for pair in zip(*retouch_on_base(images, loss, base_loss, ops, settings, seed))]
    except RuntimeError as exc:
        if len(batch) == 1:
            return [exc]
    return [result for item in batch
            for result in _retouch_batch([item], device, loss, ops, settings, net, seed, base_loss, keep_base)]


def _write_result(dst: Path, data: bytes, scorer: Scorer, scores: dict[str, dict[str, str]], out_dir: Path,
                  columns: dict[str, str], before: float) -> None:
    """Write one retouched photo and its ``scores.csv`` row.

    A photo made with other settings goes first, then the row, then the photo: a run killed in
    between leaves a row whose photo a rerun makes (and re-scores), never a new row for an old photo.
    """
    dst.unlink(missing_ok=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:  # renamed over dst once its row is written
        tmp.write_bytes(data)
        after = float(scorer.score([tmp])[0])
        scores[dst.relative_to(out_dir).as_posix()] = {
            "score_before": format_score(before), "score_after": format_score(after), **columns}
        _write_scores(out_dir / SCORES_FILE, {k: {"path": k, **v} for k, v in scores.items()})
