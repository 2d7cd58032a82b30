"""``persaes prefs``: collect pairwise preference answers on a local web page."""

from __future__ import annotations

import webbrowser

import click
from persaes.cli.common import device_option, user_errors, warn

from persaes.app.collect import CollectSession, serve


@click.group("prefs")
def prefs() -> None:
    """Collect "which do you prefer?" answers about an album's photos."""


@prefs.command("collect")
@click.argument("album", type=click.Path(path_type=str))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="Preference file (JSON Lines); answers are appended, a rerun continues it.")
@click.option("--pairs", default=100, show_default=True, type=click.IntRange(1),
              help="Answered pairs to reach, counting those already in --out.")
@click.option("--variants", is_flag=True,
              help="Ask about two random edits (exposure, colour, haze) of the same photo; "
                   "the edits are saved as ALBUM/_variants/<stem>__v<k>.jpg, described in _variants/edits.jsonl.")
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="Port on 127.0.0.1; 0 picks a free one.")
@click.option("--no-browser", is_flag=True, help="Only print the page's address, don't open a browser.")
@click.option("--select", default="random", show_default=True, type=click.Choice(("random", "active")),
              help="How the next pair of photos is chosen: at random, or from the answers so far "
                   "(active questions; the album's features are computed first).")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed of the pairs and edits.")
@device_option
@user_errors(ValueError, OSError)
def collect(album: str, out: str, pairs: int, variants: bool, select: str, port: int, no_browser: bool, seed: int,
            device: str) -> None:
    """Ask which of two photos you prefer, on a page served on 127.0.0.1, until Ctrl-C.

    Click the photo you prefer (or press the left/right arrow key), the down arrow for
    "about the same", U or Backspace to undo. Every answer is saved at once. Photos that
    cannot be read (empty, truncated, not an image) are listed on stderr and never shown.

    \b
    Example:
      persaes prefs collect ~/Pictures/album --out answers.jsonl --pairs 150
    """
    chooser = None
    if select == "active":
        if variants:
            raise click.UsageError("--select active compares different photos; it does not apply with --variants")
        from persaes.app.collect import album_photos
        from persaes.core.active import ActivePairs

        keys, files = album_photos(album)
        click.echo(f"features of {len(files)} photos for active questions (cached after the first run)", err=True)
        chooser = ActivePairs.for_photos(keys, files, seed=seed, device=device).next_pair
    session = CollectSession(album, out, pairs=pairs, variants=variants, seed=seed, chooser=chooser, on_skip=warn)
    for problem in session.problems:
        warn(problem)
    server = serve(session, port=port)
    click.echo(server.url)
    click.echo(f"{session.done} / {session.total} pairs answered; Ctrl-C to stop", err=True)
    if not no_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    if session.appended:
        click.echo(f"answers saved to {out}")
    elif session.out_file.exists():
        click.echo(f"no answer was given; {out} was left as it was")
    else:
        click.echo("no answer was given; nothing was written")
