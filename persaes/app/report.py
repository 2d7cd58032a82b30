"""Side-by-side comparison of generic and personalized retouching: an offline HTML page and a contact sheet.

``REPORT/`` holds ``generic/`` and ``personal/`` (the full-size outputs, as
``persaes retouch`` writes them; the personal ones are the generic ones retouched further),
``thumbs/`` (web-sized JPEGs), ``index.html`` (one row per photo: original | generic |
personalized, each with its generic and personal score; no external assets) and
``contact_sheet.png``. A version's score is that of its file (the original, or the output in
``generic/`` or ``personal/``) as ``persaes score FILE`` prints it: the same input pipeline
(:meth:`~persaes.core.scorer.Scorer.score` of the file), the same decimals
(:func:`~persaes.core.scorer.format_score`); never the thumbnail's.

Example:
    >>> import tempfile
    >>> import torch
    >>> from persaes.core.scorer import load_scorer
    >>> from persaes.io.images import to_pil
    >>> tmp = Path(tempfile.mkdtemp())
    >>> (tmp / "album").mkdir()
    >>> to_pil(torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(0))).save(tmp / "album" / "a.jpg")
    >>> generic = load_scorer("generic", device="cpu")
    >>> personal = generic                           # in real use a profile: load_scorer("me.safetensors")
    >>> rows, failed = compare_folder(tmp / "album", tmp / "report", generic, personal, ops=["exposure"],
    ...                               settings=EditSettings(steps=1, work_size=32))
    >>> [row.name for row in rows], failed, sorted(rows[0].scores)
    (['a.jpg'], [], ['generic', 'original', 'personal'])
    >>> sorted(p.name for p in (tmp / "report").iterdir())
    ['contact_sheet.png', 'generic', 'index.html', 'personal', 'thumbs']
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from PIL import Image, ImageDraw

from persaes.app.progress import ProgressCallback
from persaes.app.retouch_folder import plan, retouch_folder
from persaes.core.scorer import Scorer, format_score
from persaes.io.atomic import atomic_path, atomic_write_text
from persaes.io.images import ImageError, open_rgb
from retouch import OPS
from retouch.optimize import EditSettings

THUMB_SIDE = 480
VERSIONS = ("original", "generic", "personal")
_PAGE = Template(resources.files(__package__).joinpath("report.html").read_text(encoding="utf-8"))


@dataclass
class Row:
    """One photo of the report: its thumbnails and scores (generic, personal) per version."""

    name: str
    thumbs: dict[str, str]
    scores: dict[str, tuple[float, float]]


def _thumb(src: Path, dst: Path) -> Image.Image:
    img = open_rgb(src, max_side=THUMB_SIDE)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        img.save(tmp, "JPEG", quality=85)
    return img


def compare_folder(
    in_dir: str | os.PathLike[str],
    report_dir: str | os.PathLike[str],
    generic: Scorer,
    personal: Scorer,
    ops: Sequence[str] = OPS,
    settings: EditSettings | None = None,
    limit: int | None = None,
    progress: ProgressCallback | None = None,
    on_error: Callable[[str], None] | None = None,
) -> tuple[list[Row], list[str]]:
    """Retouch ``in_dir`` generically and personally, side by side; write the report.

    The personal column is the personal scorer's retouch on top of the generic one, as
    ``persaes retouch --profile`` makes it, held to the untouched photo (clipping and casting nothing
    it did not); the generic column is that generic retouch, as ``persaes retouch`` makes it. Each
    photo's generic edit is fitted once for both columns (:func:`retouch_folder`'s ``base_out``).

    Args:
        in_dir: the photos (searched recursively; ``_variants/`` left out); never written to.
        report_dir: the report folder (see the module docstring); not ``in_dir`` nor inside it.
        generic: the generic model: the generic column's edits and the generic scores.
        personal: the profile: the personal column's edits and the personal scores.
        ops: the ops to fit (see :data:`retouch.OPS`).
        settings: how the generic edits are fitted; the personal ones with
            :func:`~persaes.core.retouching.taste_settings` of them, on top.
        limit: retouch only the first ``limit`` photos.
        progress: told the photos retouched, both columns of a photo at once (see
            :data:`~persaes.app.progress.ProgressCallback`).
        on_error: told each failed photo's one-line reason; the run carries on.

    Returns:
        The report's rows, one per photo whose three versions exist, and the failures, one line each.

    Raises:
        RetouchError: ``in_dir`` is missing, or ``report_dir`` is ``in_dir`` or inside it.
        ValueError: ``limit`` is below 1.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    in_dir, report_dir = Path(in_dir), Path(report_dir)
    sources = [src for src, _ in plan(in_dir, report_dir / "generic")]
    if limit is not None:
        # Retouch only the first ``limit`` photos: link them into a private input folder.
        subset = report_dir / ".inputs"
        for src in sources[:limit]:
            link = subset / src.relative_to(in_dir)
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                os.symlink(src.resolve(), link)
        in_dir = subset
    settings = settings or EditSettings()
    # the report folder is the comparison's own: photos made with other settings are made again
    summary = retouch_folder(in_dir, report_dir / "personal", personal, ops, settings, progress=progress,
                             on_error=on_error, model_name="personal", base=generic, base_name="generic", redo=True,
                             base_out=report_dir / "generic")
    failed = sorted(summary.failed)
    rows: list[Row] = []
    sheet: list[list[Image.Image]] = []
    for src, generic_out in plan(in_dir, report_dir / "generic"):
        relative = generic_out.relative_to(report_dir / "generic")
        outputs = {"original": src, "generic": generic_out, "personal": report_dir / "personal" / relative}
        if not all(p.exists() for p in outputs.values()):
            continue
        thumbs, images = {}, []
        try:
            for version, path in outputs.items():
                thumb_rel = Path("thumbs") / version / relative.with_suffix(".jpg")
                images.append(_thumb(path, report_dir / thumb_rel))
                thumbs[version] = thumb_rel.as_posix()
            # the files' own scores, as ``persaes score FILE`` gives them: never the thumbnails'
            files = list(outputs.values())
            g, p = generic.score(files).tolist(), personal.score(files).tolist()
        except ImageError as exc:
            failed.append(str(exc))
            continue
        scores = {v: (g[i], p[i]) for i, v in enumerate(VERSIONS)}
        rows.append(Row(relative.as_posix(), thumbs, scores))
        sheet.append(images)
    atomic_write_text(report_dir / "index.html", render_html(rows))
    if sheet:
        with atomic_path(report_dir / "contact_sheet.png") as tmp:
            contact_sheet(sheet, rows).save(tmp, "PNG")
    return rows, failed


def render_html(rows: Sequence[Row]) -> str:
    """The report page (``report.html``, package data): self-contained HTML, relative image links only.

    Args:
        rows: the photos, in page order.

    Returns:
        The page, one table row per photo.
    """
    cells = []
    for row in rows:
        tds = []
        for version in VERSIONS:
            g, p = row.scores[version]
            tds.append(f'<td><img src="{html.escape(row.thumbs[version])}" alt="{version}" loading="lazy">'
                       f'<div class="s">generic {format_score(g)} · personal <b>{format_score(p)}</b></div></td>')
        cells.append(f"<tr><th>{html.escape(row.name)}</th>{''.join(tds)}</tr>")
    mean = {v: sum(r.scores[v][1] for r in rows) / max(1, len(rows)) for v in VERSIONS}
    return _PAGE.substitute(thumb_side=THUMB_SIDE, photos=len(rows), rows="\n".join(cells),
                            **{version: format_score(mean[version]) for version in VERSIONS})


def contact_sheet(images: Sequence[Sequence[Image.Image]], rows: Sequence[Row], cell: int = 240) -> Image.Image:
    """A PNG grid: one row per photo, columns original | generic | personalized, scores under each."""
    label = 18
    sheet = Image.new("RGB", (3 * cell + 40, 24 + len(images) * (cell + label + 8)), (29, 31, 33))
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(("original", "generic", "personalized")):
        draw.text((10 + c * (cell + 10), 6), title, fill=(200, 200, 200))
    for r, (versions, row) in enumerate(zip(images, rows)):
        top = 24 + r * (cell + label + 8)
        for c, (img, version) in enumerate(zip(versions, VERSIONS)):
            thumb = img.copy()
            thumb.thumbnail((cell, cell))
            sheet.paste(thumb, (10 + c * (cell + 10), top))
            g, p = row.scores[version]
            draw.text((10 + c * (cell + 10), top + cell + 2), f"generic {format_score(g)}  personal {format_score(p)}",
                      fill=(170, 170, 170))
    return sheet
