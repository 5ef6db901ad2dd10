"""Console output: results on stdout, progress and messages on stderr (pipes stay clean)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

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


_ENTERED = time.perf_counter()  # this module is imported as the command starts


def process_seconds() -> float:
    """Seconds since this process started, Python's start-up and imports included (Linux's
    /proc, to 10 ms); elsewhere, since the command line was imported."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start, after boot
        return float(Path("/proc/uptime").read_text().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _ENTERED


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
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn(unit), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=err_console, transient=True, disable=not err_console.is_terminal)
