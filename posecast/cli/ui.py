"""Console output: results on stdout, progress and messages on stderr (pipes stay clean)."""

from __future__ import annotations

import json
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
err_console = Console(stderr=True, emoji=False) if sys.stderr.isatty() else \
    Console(stderr=True, width=240, emoji=False)  # tables moved there by --json stay whole


def print_result(text: str, summary: dict, as_json: bool) -> None:
    """A command's last word: `text` on stdout, or with --json `summary` as one JSON object on
    stdout and `text` on stderr (so a pipe into a JSON reader gets JSON alone)."""
    if as_json:
        err_console.print(text, markup=False, highlight=False, soft_wrap=True)
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        sys.stdout.flush()
    else:
        console.print(text, markup=False, highlight=False, soft_wrap=True)


def warn(text: str) -> None:
    """A warning or notice line on stderr, printed as written (no markup)."""
    err_console.print(text, markup=False, highlight=False, soft_wrap=True)


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
