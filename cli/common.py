"""Shared pieces of the commands: options, one-line errors and warnings, progress.

Every message of a command on stderr has one style, click's: ``Error: <file>: <problem>`` ends the
command (click's usage errors look the same), ``Warning: <file>: <problem>`` is skipped and the work
carries on. Progress goes through :class:`Progress`.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import IO, Any, Callable

import click

from persaes.core.device import DEVICE_CHOICES
from retouch import OPS
from retouch.optimize import EditSettings

QUIET = "persaes.quiet"
"""Key of :attr:`click.Context.meta` that ``persaes --quiet`` sets to True: no progress is shown."""

STAGE_UNITS = {"checking album": "photos", "album features": "photos", "reference features": "references"}
"""What the stages of :func:`persaes.core.personalize.personalize` count (the others: steps, no unit)."""

BAR_WIDTH = 24
"""Characters of a live bar's track."""

REDRAW_S = 0.1
"""Least seconds between two redraws of a live bar (its first and last state are always drawn)."""

device_option = click.option(
    "--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True,
    help="Where to compute: auto uses CUDA when present.",
)


def parse_ops(ctx: click.Context, param: click.Parameter, text: str) -> tuple[str, ...]:
    """The ``--ops`` callback: comma-separated names of :data:`retouch.OPS` as a tuple, in the order given.

    Raises:
        click.BadParameter: no op, or a name that is not an op.
    """
    ops = tuple(o.strip() for o in text.split(",") if o.strip())
    unknown = [o for o in ops if o not in OPS]
    if not ops or unknown:
        raise click.BadParameter(f"choose from {','.join(OPS)}; got {text!r}", param_hint="--ops")
    return ops


ops_option = click.option("--ops", default=",".join(OPS), show_default=True, callback=parse_ops,
                          help="Retouching ops to use, comma-separated.")
steps_option = click.option("--steps", default=EditSettings.steps, show_default=True, type=click.IntRange(0),
                            help="Optimisation steps per photo.")
fidelity_option = click.option("--fidelity", default=EditSettings.fidelity, show_default=True,
                               type=click.FloatRange(0), help="How strongly fitted edits are held to the original "
                               "(mean absolute change); higher gives gentler edits, 0 lets the loss decide alone.")


def fail(message: str) -> None:
    """Exit with a one-line error on stderr, ``Error: <message>``, and status 1 (a user mistake, no traceback)."""
    raise click.ClickException(message)


def echo(text: str, err: bool = False) -> None:
    """Print a line; a live progress bar is taken off its line for it and drawn again below it."""
    live = Progress.live
    if live is not None:
        live.clear()
    click.echo(text, err=err)
    if live is not None:
        live.redraw()


def warn(message: str) -> None:
    """A one-line problem on stderr, ``Warning: <message>``; the work carries on (see :func:`echo`)."""
    echo(f"Warning: {message}", err=True)


def printable(text: str) -> str:
    """``text`` with what stdout cannot encode (e.g. a file name that is not UTF-8) written as a backslash escape."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    return text.encode(encoding, "backslashreplace").decode(encoding)


def is_quiet() -> bool:
    """Whether ``persaes --quiet`` was given to the command being run."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(QUIET))


def stderr_is_terminal() -> bool:
    """Whether stderr is an interactive terminal (progress is then a live bar)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def elapsed(seconds: float) -> str:
    """``seconds`` as progress shows them.

    Example:
        >>> elapsed(12.4), elapsed(125)
        ('12 s', '2 min 05 s')
    """
    seconds = int(seconds)
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


class Progress:
    """The progress of every long command, on stderr: one mechanism for counted runs and named stages.

    It is told ``progress(done, total)`` (:data:`persaes.app.progress.ProgressCallback`) for runs named
    ``label``, or ``progress.stage(name, done, total)`` (:data:`persaes.core.personalize.StageCallback`);
    a call with 0 done, or a new stage, starts a new run. On a terminal each run is a live bar, whatever
    its count; elsewhere (a pipe, a log) each step is one plain line with the counts and the run's elapsed
    time, ``retouching: 3/45 photos (12 s)``, never a carriage return (a run of more than 100 items
    writes one line per percent). With ``persaes --quiet`` nothing is shown. Use it as a context manager:
    leaving it ends a bar's line.

    Args:
        label: names the runs of ``progress(done, total)``.
        unit: what those runs count (``photos``, ``steps``; empty: no unit).
        terminal: draw live bars; default: whether stderr is a terminal.
        quiet: show nothing; default: whether ``persaes --quiet`` was given.
        file: where to write; default: stderr.

    Example:
        >>> with Progress("retouching", terminal=False, file=sys.stdout) as progress:
        ...     for done in range(3):
        ...         progress(done, 2)
        ...     progress.stage("personal stage", 0, 1)
        retouching: 0/2 photos (0 s)
        retouching: 1/2 photos (0 s)
        retouching: 2/2 photos (0 s)
        personal stage: 0/1 (0 s)
    """

    live: Progress | None = None
    """The progress whose bar is on the terminal's last line, if any (:func:`warn` writes around it)."""

    def __init__(self, label: str = "", unit: str = "photos", *, terminal: bool | None = None,
                 quiet: bool | None = None, file: IO[str] | None = None) -> None:
        self.label = label
        self.unit = unit
        self.terminal = stderr_is_terminal() if terminal is None else terminal
        self.quiet = is_quiet() if quiet is None else quiet
        self._file = file
        self._run = ""
        self._run_unit = unit
        self._open = False  # a run is going on (not ended by close)
        self._started = time.monotonic()
        self._done = self._total = 0
        self._shown = -1  # the percent of the last plain line
        self._width = 0  # characters of the bar on the terminal's last line; 0: none there
        self._drawn_at = 0.0

    def __call__(self, done: int, total: int) -> None:
        """Start a run of ``label`` (``done`` 0) or show ``done`` of its ``total``.

        Raises:
            ValueError: ``done`` is not within ``[0, total]``.
        """
        self._step(self.label, self.unit, done, total)

    def stage(self, stage: str, done: int, total: int) -> None:
        """Start the named stage (``done`` 0 or a new name) or show ``done`` of its ``total``.

        Raises:
            ValueError: ``done`` is not within ``[0, total]``.
        """
        self._step(stage, STAGE_UNITS.get(stage, ""), done, total)

    def _step(self, label: str, unit: str, done: int, total: int) -> None:
        if not 0 <= done <= total:
            raise ValueError(f"progress must be 0 <= done <= total, got {done} of {total}")
        if done == 0 or label != self._run:
            self.close()
            self._run, self._run_unit, self._started, self._shown = label, unit, time.monotonic(), -1
            self._open = True
        elif (done, total) == (self._done, self._total):
            return  # told again: nothing to show (and a finished bar's line stays ended)
        self._done, self._total = done, total
        if self.quiet:
            return
        if not self.terminal:
            percent = 100 if total == 0 else done * 100 // total
            if percent != self._shown:
                self._shown = percent
                self._write(f"{self._text()}\n")
            return
        if done in (0, total) or not self._width or time.monotonic() - self._drawn_at >= REDRAW_S:
            self.redraw()
        if done == total:
            self.close()

    def _text(self, bar: bool = False) -> str:
        counts = f"{self._done}/{self._total}" + (f" {self._run_unit}" if self._run_unit else "")
        took = elapsed(time.monotonic() - self._started)
        if not bar:
            return f"{self._run}: {counts} ({took})"
        filled = BAR_WIDTH if self._total == 0 else BAR_WIDTH * self._done // self._total
        return f"{self._run} [{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {counts} ({took})"

    def _write(self, text: str) -> None:
        click.echo(text, file=self._file, err=self._file is None, nl=False)

    def redraw(self) -> None:
        """Draw the current run's bar over the terminal's last line (on a terminal, not quiet, in a run)."""
        if self.quiet or not self.terminal or not self._open:
            return
        text = self._text(bar=True)
        self._write("\r" + text + " " * max(0, self._width - len(text)))
        self._width = len(text)
        self._drawn_at = time.monotonic()
        Progress.live = self

    def clear(self) -> None:
        """Take the bar off the terminal's last line, for other output; the next step draws it again."""
        if self._width:
            self._write("\r" + " " * self._width + "\r")
            self._width = 0

    def close(self) -> None:
        """End the current run, and its bar's line if a bar is drawn."""
        if self._width:
            self._write("\n")
            self._width = 0
        self._open = False
        if Progress.live is self:
            Progress.live = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def user_errors(*kinds: type[BaseException]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Turn the given exception kinds into one-line click errors."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        import functools

        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except kinds as exc:
                fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

        return inner

    return wrap
