"""Side-by-side comparison of generic and personalized retouching: an offline HTML page and
a contact sheet.

``REPORT/`` holds ``generic/`` and ``personal/`` (the full-size outputs, as
``persaes retouch`` writes them; the personal ones are the generic ones retouched further),
``thumbs/`` (web-sized JPEGs), ``index.html`` (one row per photo: original | generic |
personalized, each with its generic and personal score; no external assets) and
``contact_sheet.png``.

Example::

    >>> rows = compare_folder("album", "report", generic_scorer, personal_scorer)   # doctest: +SKIP
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from persaes.app.retouch_folder import RetouchSummary, plan, retouch_folder, taste_settings
from persaes.core.scorer import Scorer
from persaes.io.atomic import atomic_path, atomic_write_text
from persaes.io.images import ImageError, open_rgb, to_tensor
from retouch.optimize import EditSettings

THUMB_SIDE = 480
VERSIONS = ("original", "generic", "personal")


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
    ops: Sequence[str] = ("exposure", "color", "dehaze"),
    settings: EditSettings | None = None,
    limit: int | None = None,
    progress: Callable[[Iterator[tuple[Path, Path]], int], Iterator[tuple[Path, Path]]] | None = None,
    on_error: Callable[[str], None] | None = None,
) -> tuple[list[Row], list[str]]:
    """Retouch ``in_dir`` with the generic scorer, and with the personal one on top of the
    generic retouch (as ``persaes retouch --profile`` does); write the report. Returns (rows, failures).

    The personal column is fitted on the generic column's files (``personal/scores.csv``'s
    score before is that of the generic retouch), so each photo's generic edit is fitted once.
    """
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
    # the personal column is the generic column's photos retouched further against the profile:
    # retouch_image(..., base=generic) without fitting the generic edit a second time
    summaries: list[RetouchSummary] = [
        retouch_folder(in_dir, report_dir / "generic", generic, ops, settings, progress=progress, on_error=on_error,
                       model_name="generic"),
        retouch_folder(report_dir / "generic", report_dir / "personal", personal, ops, taste_settings(settings),
                       progress=progress, on_error=on_error, model_name="personal"),
    ]
    failed = sorted({f for s in summaries for f in s.failed})
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
        except ImageError as exc:
            failed.append(str(exc))
            continue
        batch = [to_tensor(img) for img in images]
        with torch.no_grad():
            g = generic.score(batch).tolist()
            p = personal.score(batch).tolist()
        scores = {v: (g[i], p[i]) for i, v in enumerate(VERSIONS)}
        rows.append(Row(relative.as_posix(), thumbs, scores))
        sheet.append(images)
    atomic_write_text(report_dir / "index.html", render_html(rows))
    if sheet:
        with atomic_path(report_dir / "contact_sheet.png") as tmp:
            contact_sheet(sheet, rows).save(tmp, "PNG")
    return rows, failed


def render_html(rows: Sequence[Row]) -> str:
    """The report page: self-contained HTML (inline CSS), relative image links only."""
    cells = []
    for row in rows:
        tds = []
        for version in VERSIONS:
            g, p = row.scores[version]
            tds.append(f'<td><img src="{html.escape(row.thumbs[version])}" alt="{version}" loading="lazy">'
                       f'<div class="s">generic {g:.2f} · personal <b>{p:.2f}</b></div></td>')
        cells.append(f"<tr><th>{html.escape(row.name)}</th>{''.join(tds)}</tr>")
    mean = {v: sum(r.scores[v][1] for r in rows) / max(1, len(rows)) for v in VERSIONS}
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>persaes: generic vs personalized</title>
<style>
body{{font-family:system-ui,sans-serif;background:#1d1f21;color:#ddd;margin:1.5em}}
table{{border-collapse:collapse}} th,td{{padding:6px;vertical-align:top}}
thead th{{text-align:left;color:#aaa;font-weight:600}} tbody th{{text-align:left;font-weight:400;color:#999;max-width:10em;word-break:break-all}}
img{{max-width:min({THUMB_SIDE}px,28vw);max-height:{THUMB_SIDE}px;display:block}} .s{{font-size:.85em;color:#aaa;margin-top:3px}} b{{color:#fff}}
</style></head><body>
<h1>Generic vs personalized retouching</h1>
<p>{len(rows)} photos. Mean personal score: original {mean['original']:.2f}, generic {mean['generic']:.2f},
personalized {mean['personal']:.2f}. Scores are on a 1–10 scale under the generic model and under the profile.</p>
<table><thead><tr><th>photo</th><th>original</th><th>generic</th><th>personalized</th></tr></thead>
<tbody>
{chr(10).join(cells)}
</tbody></table></body></html>
"""


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
            draw.text((10 + c * (cell + 10), top + cell + 2), f"generic {g:.2f}  personal {p:.2f}", fill=(170, 170, 170))
    return sheet
