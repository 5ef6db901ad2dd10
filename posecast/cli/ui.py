"""Console output: results on stdout, progress and messages on stderr (pipes stay clean)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# Piped or redirected output (logs, batch jobs) gets wide lines instead of rich's 80 columns.
# emoji=False: ":smile:" in a file name must print as typed.
console = Console(emoji=False) if sys.stdout.isatty() else Console(width=240, emoji=False)
err_console = Console(stderr=True, emoji=False)


def progress_bar(unit: str = "") -> Progress:
    """A progress bar on stderr; it disappears when finished. Off when stderr is not a
    terminal (rich would still print an empty line there, before any error message)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )
