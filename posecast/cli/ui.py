"""Console output: results on stdout, progress and messages on stderr (pipes stay clean).

How much is said is set once per command by `--quiet` / `--verbose` (cli/command.py):
quiet keeps warnings, errors and the result; normal adds progress and notes; verbose adds what
the library logs on the "posecast" logger (what each step did and how long it took).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
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

from posecast.version import __version__

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


_running = {"command": "posecast"}  # the command's words, e.g. "bench render" (cli/command.py)


def set_command(words: str) -> None:
    _running["command"] = words


def json_summary(figures: dict, outputs=(), ok: bool = True) -> dict:
    """The one --json shape of every command: {"command", "ok" (bool), "outputs" (the paths
    written, as given), …the command's figures, "posecast_version"}."""
    return {"command": _running["command"], "ok": ok,
            "outputs": [str(path) for path in outputs if path is not None], **figures,
            "posecast_version": __version__}


def print_json(figures: dict, outputs=(), ok: bool = True) -> None:
    """json_summary(…) as the one object on stdout."""
    sys.stdout.write(json.dumps(json_summary(figures, outputs, ok), indent=2) + "\n")
    sys.stdout.flush()


def print_result(text: str, figures: dict, as_json: bool, outputs=(), ok: bool = True) -> None:
    """A command's last word: `text` on stdout, or with --json the summary (json_summary) as
    one JSON object on stdout and `text` on stderr (so a pipe into a JSON reader gets JSON
    alone)."""
    if as_json:
        err_console.print(text, markup=False, highlight=False, soft_wrap=True)
        print_json(figures, outputs, ok)
    else:
        console.print(text, markup=False, highlight=False, soft_wrap=True)


QUIET, NORMAL, VERBOSE = 0, 1, 2
_verbosity = {"level": NORMAL}


def set_verbosity(level: int) -> None:
    """QUIET, NORMAL or VERBOSE for the rest of the command; VERBOSE prints the "posecast"
    logger's INFO records on stderr."""
    _verbosity["level"] = level
    logger = logging.getLogger("posecast")
    for handler in [h for h in logger.handlers if getattr(h, "posecast_cli", False)]:
        logger.removeHandler(handler)
    if level >= VERBOSE:
        handler = logging.StreamHandler(_ErrConsoleStream())
        handler.posecast_cli = True
        handler.setFormatter(logging.Formatter("posecast: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    else:
        logger.setLevel(logging.WARNING)


class _ErrConsoleStream:
    """sys.stderr as it is now (tests and quiet_stderr swap it), for the logging handler."""

    def write(self, text: str) -> None:
        sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def warn(text: str) -> None:
    """A warning or error line on stderr, printed as written (no markup), even with --quiet."""
    err_console.print(text, markup=False, highlight=False, soft_wrap=True)


def note(text: str) -> None:
    """An informational line on stderr (what posecast chose or kept); not with --quiet."""
    if _verbosity["level"] >= NORMAL:
        warn(text)


def progress_bar(unit: str = ""):
    """Progress on stderr: rich's bar on a terminal (it disappears when finished); elsewhere
    (a log file, CI, SLURM) plain lines from LogProgress; nothing with --quiet."""
    if _verbosity["level"] >= NORMAL and not err_console.is_terminal:
        return LogProgress(unit)
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn(unit), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=err_console, transient=True,
                    disable=_verbosity["level"] < NORMAL or not err_console.is_terminal)


GRACE_SECONDS = 3.0  # work done sooner than this prints no progress lines


class LogProgress:
    """Rich Progress's calls (add_task, update, advance) as plain lines for logs: once a task
    has run `grace` seconds, a line when it moves, then at each 10 % of its total and at least
    every `every` seconds (a background thread speaks up when nothing moves), e.g.
    `rendering a.mp4: 40 % (3.2/8 s of video), 1.9 s of video/s, about 3 s left, 2 s so far`;
    one more when it ends. Unknown totals print the count and rate."""

    def __init__(self, unit: str = "", every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic,
                 write: Callable[[str], None] = warn, heartbeat: bool = True,
                 grace: float | None = None) -> None:
        self.unit, self.every, self.clock, self.write = unit, every, clock, write
        self.grace = GRACE_SECONDS if grace is None else grace
        self.tasks: list[dict] = []
        self.lock, self.stopped = threading.Lock(), threading.Event()
        self.heartbeat = threading.Thread(target=self._beat, daemon=True) if heartbeat else None

    def __enter__(self) -> LogProgress:
        if self.heartbeat is not None:
            self.heartbeat.start()
        return self

    def _beat(self) -> None:
        while not self.stopped.wait(self.every / 4):
            with self.lock:
                for task in self.tasks:
                    last = task["started"] if task["printed"] is None else task["printed"][2]
                    if task["visible"] and self.clock() - last >= self.every:
                        self._print(task)

    def __exit__(self, kind, error, traceback) -> None:
        self.stopped.set()
        if self.heartbeat is not None:
            self.heartbeat.join()
        if kind is None:
            for task in self.tasks:
                if task["visible"] and task["printed"] is not None and \
                        task["printed"][0] != task["completed"]:
                    self._print(task)

    def add_task(self, description: str, total: float | None = None,
                 visible: bool = True) -> int:
        self.tasks.append({"description": description, "total": total, "completed": 0,
                           "visible": visible, "started": self.clock(), "printed": None})
        return len(self.tasks) - 1

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, completed=self.tasks[task_id]["completed"] + advance)

    def update(self, task_id: int, *, completed: float | None = None,
               total: float | None = None, description: str | None = None,
               visible: bool | None = None) -> None:
        task = self.tasks[task_id]
        for key, value in (("completed", completed), ("total", total),
                           ("description", description), ("visible", visible)):
            if value is not None:
                task[key] = value
        if "moved" not in task and task["completed"]:  # the rate counts from the first step,
            task["moved"] = (self.clock(), task["completed"])  # not the set-up before it
        with self.lock:
            if task["visible"] and self._due(task):
                self._print(task)

    def _tenths(self, task: dict) -> int:
        total = task["total"]
        return math.floor(10 * task["completed"] / total + 1e-9) if total else -1

    def _due(self, task: dict) -> bool:
        if task["printed"] is None:
            return self.clock() - task["started"] >= self.grace
        completed, tenths, at = task["printed"]
        return task["completed"] != completed and (
            self._tenths(task) > tenths or self.clock() - at >= self.every)

    def _print(self, task: dict) -> None:
        now, done, total = self.clock(), task["completed"], task["total"]
        unit = f" {self.unit}" if self.unit else ""
        elapsed = now - task["started"]
        since, first = task.get("moved", (now, done))
        rate = (done - first) / (now - since) if now > since else None
        if total:
            line = f"{task['description']}: {100 * done / total:.0f} % ({done:g}/{total:g}{unit})"
        else:
            line = f"{task['description']}: {done:g}{unit}"
        if rate:
            line += f", {rate:.3g}{unit}/s"
            if total and done < total:
                line += f", about {_duration((total - done) / rate)} left"
        line += f", {_duration(elapsed)} so far"
        self.write(line)
        task["printed"] = (done, self._tenths(task), now)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 120 else \
        f"{minutes // 60} h {minutes % 60:02d} min"
