"""The progress bar for a batch: rich's, on standard error, only when that is a terminal.

Standard output carries the results (often redirected to a file), so the bar never goes
there; on anything but a terminal (a pipe, a CI log) there is no bar at all, not even
its final line, so a log holds only what the run produced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

Advance = Callable[[int], None]


def wanted(stream: TextIO, batch: bool) -> bool:
    """A bar for a batch lookup whose standard error is a terminal."""
    try:
        return batch and stream.isatty()
    except ValueError:  # a closed stream
        return False


@contextmanager
def progress_bar(total: int, stream: TextIO, enabled: bool) -> Iterator[Advance]:
    """Yield `advance(n)`, which moves the bar by `n` customers (a no-op when disabled)."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(file=stream, force_terminal=True)
    with Progress(
        TextColumn("looking up"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
        TimeElapsedColumn(), console=console, transient=False,
    ) as bar:
        task = bar.add_task("customers", total=total)
        yield lambda n: bar.advance(task, n)
