"""Shared pieces of the commands: options, one-line errors, progress bars."""

from __future__ import annotations

import sys
from typing import Any, Callable, Iterable, Iterator, TypeVar

import click

from persaes.core.device import DEVICE_CHOICES

T = TypeVar("T")

device_option = click.option(
    "--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True,
    help="Where to compute: auto uses CUDA when present.",
)


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


def progress(items: Iterable[T], length: int | None, label: str) -> Iterator[T]:
    """A progress bar on stderr for long runs (hidden when stderr is not a terminal and short)."""
    show = length is None or length > 8
    if not show:
        yield from items
        return
    with click.progressbar(items, length=length, label=label, file=sys.stderr) as bar:
        yield from bar


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
    """One updating line per stage on stderr."""

    def __init__(self) -> None:
        self.stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            if self.stage:
                click.echo("", err=True)
            self.stage = stage
        click.echo(f"\r{stage}: {done}/{total}", err=True, nl=False)

    def close(self) -> None:
        if self.stage:
            click.echo("", err=True)
