"""Shared pieces of the commands: options, one-line errors, progress bars."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from types import TracebackType
from typing import Any, Callable

import click

from persaes.core.device import DEVICE_CHOICES
from retouch import OPS
from retouch.optimize import EditSettings

SHORT_RUN = 8
"""Runs of at most this many items show no progress bar."""

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
    """Exit with a one-line error on stderr and status 2 (a user mistake, no traceback)."""
    raise click.ClickException(message)


def warn(message: str) -> None:
    """A one-line problem on stderr; the work carries on."""
    click.echo(f"persaes: {message}", err=True)


def printable(text: str) -> str:
    """``text`` with what stdout cannot encode (e.g. a file name that is not UTF-8) written as a backslash escape."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    return text.encode(encoding, "backslashreplace").decode(encoding)


class ProgressBar:
    """Draws ``progress(done, total)`` calls (:data:`persaes.app.progress.ProgressCallback`) as click progress bars.

    Each run, a call with 0 done, gets its own bar on stderr; runs of at most :data:`SHORT_RUN`
    items get none. Use it as a context manager: leaving it finishes the last bar.

    Args:
        label: shown before each bar.

    Example:
        >>> with ProgressBar("retouching") as progress:
        ...     for done in range(3):
        ...         progress(done, 2)
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self._bars = ExitStack()
        self._advance: Callable[[int], None] | None = None
        self._done = 0

    def __call__(self, done: int, total: int) -> None:
        """Start a bar (``done`` 0) or move the current one to ``done`` of ``total``.

        Raises:
            ValueError: ``done`` is not within ``[0, total]``.
        """
        if not 0 <= done <= total:
            raise ValueError(f"progress must be 0 <= done <= total, got {done} of {total}")
        if done == 0:
            self.close()
            if total > SHORT_RUN:
                bar = self._bars.enter_context(click.progressbar(length=total, label=self.label, file=sys.stderr))
                self._advance = bar.update
        elif self._advance is not None:
            self._advance(done - self._done)
        self._done = done

    def close(self) -> None:
        """Finish the bar being drawn, if any."""
        self._bars.close()
        self._advance = None

    def __enter__(self) -> ProgressBar:
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


class StageProgress:
    """Draws ``progress(stage, done, total)`` calls (:data:`persaes.core.personalize.StageCallback`) on stderr.

    One updating line per stage; :meth:`close` ends the last one.
    """

    def __init__(self) -> None:
        self.stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Show ``done`` of ``total`` for ``stage``, on a new line when the stage is new."""
        if stage != self.stage:
            if self.stage:
                click.echo("", err=True)
            self.stage = stage
        click.echo(f"\r{stage}: {done}/{total}", err=True, nl=False)

    def close(self) -> None:
        """End the current stage's line."""
        if self.stage:
            click.echo("", err=True)
