"""``persaes score``: aesthetic scores of image files and folders."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from persaes.cli.common import Progress, device_option, echo, fail, is_quiet, printable, user_errors, warn

from persaes.core import distributed
from persaes.core.backbones import BackboneError
from persaes.core.device import resolve_device
from persaes.core.scorer import Scorer, format_score, load_scorer
from persaes.io.checkpoint import CheckpointError
from persaes.io.images import iter_images
from persaes.io.scores import (
    append_partial,
    check_score_file,
    done_scores,
    remove_partials,
    score_records,
    write_scores,
)


@click.command("score")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--profile", default="generic", show_default=True, help="Profile or weights file, or a shipped name.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {path, score} objects.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the scores to FILE.json (as --json prints them) or FILE.csv, in the order of the files, "
                   "instead of printing them; a rerun with the same --out skips the files already in it.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 1024))
@device_option
@user_errors(CheckpointError, ValueError, OSError, BackboneError, RuntimeError)
def score(paths: tuple[str, ...], profile: str, as_json: bool, out: Path | None, batch_size: int,
          device: str) -> None:
    """Score image files and folders (recursively), one line per image.

    Under torchrun each process scores its share of the files (every N-th file) and the first one
    writes all the scores, in the order of the files; give --out to keep each process's scores as
    it goes (FILE.part<rank>.jsonl beside FILE), so a killed run resumes where it stopped.

    \b
    Example:
      persaes score ~/Pictures/album --profile me.safetensors --json > scores.json
      torchrun --nproc-per-node 4 --no-python persaes score /photos --out scores.csv
    """
    if out is not None:
        if as_json:
            fail("--json prints the scores and --out writes them to a file: give one of them")
        check_score_file(out)
    compute_on = distributed.rank_device(resolve_device(device))
    me = distributed.init(compute_on)
    try:
        scorer = load_scorer(profile, device=compute_on)
        files = [str(path) for path in iter_images(paths)]
        previous = _previous_scores(out)
        todo = [name for name in files if name not in previous]
        if previous and me.is_main and not is_quiet():
            echo(printable(f"{len(files) - len(todo)} of {len(files)} files already scored in {out}: skipped"),
                 err=True)
        stream = out is None and not as_json and me.size == 1  # one process prints each line as it comes
        scored, failed = _score_share(scorer, distributed.shard(todo), batch_size, out, stream)
        failed = _merge(files, previous, scored, failed, out, as_json, stream)
    finally:
        distributed.shutdown()
    if failed:
        sys.exit(1)


def _previous_scores(out: Path | None) -> dict[str, float]:
    """The scores ``out`` and its partial files already hold, as the first process read them, on every process."""
    found: dict[str, float] | str = {}
    if out is not None and distributed.world().is_main:
        try:
            found = done_scores(out)
        except ValueError as exc:
            found = str(exc)
    found = distributed.all_gather(found)[0]
    if isinstance(found, str):
        if distributed.world().size == 1:
            fail(found)
        if distributed.world().is_main:
            echo(f"Error: {found}", err=True)
        distributed.barrier()  # the others leave once the first has said why
        sys.exit(1)
    return found


def _score_share(scorer: Scorer, files: list[str], batch_size: int, out: Path | None,
                 stream: bool) -> tuple[list[tuple[str, float]], int]:
    """Score this process's ``files``: (path, score) of each readable one in order, and how many were not.

    Each unreadable file is a warning naming it. With ``out``, every ``batch_size`` scores are appended to this
    process's partial file; with ``stream``, each score is printed as it comes. Only the first process shows
    its progress.
    """
    rank = distributed.world().rank
    scored: list[tuple[str, float]] = []
    failed, unsaved = 0, 0
    if not files:  # nothing left to score: no progress line of 0/0
        return scored, failed
    with Progress("scoring", quiet=None if rank == 0 else True) as progress:
        progress(0, len(files))
        for done, (path, value, error) in enumerate(scorer.iter_scores(files, batch_size), 1):
            progress(done, len(files))
            if error is not None:
                failed += 1
                warn(error)
                continue
            scored.append((str(path), value))
            unsaved += 1
            if out is not None and unsaved >= batch_size:
                append_partial(out, rank, scored[-unsaved:])
                unsaved = 0
            if stream:
                echo(printable(f"{format_score(value)}\t{path}"))
        if out is not None and unsaved:
            append_partial(out, rank, scored[-unsaved:])
    return scored, failed


def _merge(files: list[str], previous: dict[str, float], scored: list[tuple[str, float]], failed: int,
           out: Path | None, as_json: bool, stream: bool) -> int:
    """Gather every process's scores on the first, which writes or prints them in the order of ``files``.

    Returns:
        How many files could not be scored, over all processes.
    """
    gathered = distributed.all_gather((scored, failed))
    me = distributed.world()
    failed = sum(count for _, count in gathered)
    try:
        if me.is_main:
            scores = dict(previous)
            for share, _ in gathered:
                scores.update(share)
            rows = [(name, scores[name]) for name in files if name in scores]
            _emit(rows, out, as_json, stream)
            if failed:
                warn(f"{failed} of {len(files)} files could not be scored")
    finally:
        distributed.barrier()  # the output is written before any process leaves
    if out is not None:
        remove_partials(out, me.rank)  # on a node whose disk the first process does not see
    return failed if me.is_main else 0


def _emit(rows: list[tuple[str, float]], out: Path | None, as_json: bool, stream: bool) -> None:
    """Write ``rows`` to ``out`` (then remove the partial files), or print them (unless already ``stream``-ed)."""
    if out is not None:
        write_scores(out, rows)
        remove_partials(out)
    elif as_json:
        results = score_records(rows)
        text = json.dumps(results, indent=1, ensure_ascii=False)
        click.echo(text if printable(text) == text else json.dumps(results, indent=1))  # JSON's own escapes
    elif not stream:
        for name, value in rows:
            echo(printable(f"{format_score(value)}\t{name}"))
