"""Progress that works everywhere (issue 35, point 2): rich's bar on a terminal, plain lines in
a log (at each 10 % of the work and at least every 10 s), nothing with --quiet, the library's
own account of each step with --verbose; both options on every command."""

from __future__ import annotations

import re
import threading

import pytest
import typer.main

from posecast.cli import app
from posecast.cli.ui import LogProgress


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_log_lines_come_at_each_tenth_of_the_work():
    clock, lines = _Clock(), []
    with LogProgress("steps", every=10.0, clock=clock, write=lines.append,
                     heartbeat=False, grace=0) as progress:
        task = progress.add_task("training", total=40)
        for step in range(1, 41):  # one step a second: the 10 s rule never fires first
            clock.now += 1.0
            progress.update(task, completed=step)
    done = [int(re.search(r"\((\d+)/40 steps\)", line).group(1)) for line in lines]
    # the first update, then each step where a new tenth of 40 is reached: 4, 8, …, 40
    assert done == [1, *range(4, 41, 4)], lines
    assert lines[-1].startswith("training: 100 % (40/40 steps)")
    assert "1 steps/s" in lines[-1] and "40 s so far" in lines[-1]
    assert "about 36 s left" in lines[1]  # 36 steps at one a second


def test_a_slow_task_gets_a_line_every_10_seconds_and_one_at_its_end():
    clock, lines = _Clock(), []
    with LogProgress("clips", every=10.0, clock=clock, write=lines.append,
                     heartbeat=False, grace=0) as progress:
        task = progress.add_task("scoring", total=1000)
        for clip in range(1, 31):  # 30 clips, 4 s each: 3 % of the work, no new tenth
            clock.now += 4.0
            progress.update(task, completed=clip)
    # the first update at 4 s, then the first update at least 10 s after the last line:
    # 16 s (clip 4), 28 s (7), …; and one more at the end (clip 30, 120 s)
    printed = [int(re.search(r"\((\d+)/1000", line).group(1)) for line in lines]
    assert printed == [1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 30], lines


def test_work_shorter_than_the_grace_prints_nothing():
    clock, lines = _Clock(), []
    with LogProgress("steps", clock=clock, write=lines.append, heartbeat=False,
                     grace=3.0) as progress:
        task = progress.add_task("quick", total=10)
        for step in range(1, 11):  # 0.25 s a step: done in 2.5 s
            clock.now += 0.25
            progress.update(task, completed=step)
    assert lines == []
    with LogProgress("steps", clock=clock, write=lines.append, heartbeat=False,
                     grace=3.0) as progress:
        task = progress.add_task("slower", total=10)
        for step in range(1, 11):  # 0.5 s a step: the first line at 3 s (step 6)
            clock.now += 0.5
            progress.update(task, completed=step)
    assert [re.search(r"\((\d+)/10", line).group(1) for line in lines] == \
        ["6", "7", "8", "9", "10"], lines


def test_a_stalled_task_still_gets_a_line_from_the_heartbeat():
    lines, spoke = [], threading.Event()

    def write(line: str) -> None:
        lines.append(line)
        if len(lines) >= 3:
            spoke.set()

    with LogProgress("steps", every=0.05, write=write, grace=0) as progress:
        task = progress.add_task("loading", total=10)
        progress.update(task, completed=1)  # then nothing moves
        assert spoke.wait(5.0), lines
    assert all(line.startswith("loading: 10 % (1/10 steps)") for line in lines)


def _commands(command=None, path=()):
    command = command or typer.main.get_command(app)
    if not hasattr(command, "list_commands"):
        return [(path, command)]
    return [leaf for name in command.list_commands(None)
            for leaf in _commands(command.get_command(None, name), (*path, name))]


@pytest.mark.parametrize("path, command", _commands(), ids=lambda value: " ".join(value)
                         if isinstance(value, tuple) else "")
def test_every_command_takes_quiet_and_verbose(path, command):
    names = {name for param in command.params for name in getattr(param, "opts", [])}
    assert {"--quiet", "-q", "--verbose", "-v"} <= names, path


def test_training_in_a_log_prints_progress_lines_quiet_prints_none_verbose_says_more(
        run_cli, synthetic_dataset, tmp_path, monkeypatch):
    from posecast.cli import ui

    monkeypatch.setattr(ui, "GRACE_SECONDS", 0.0)  # this short run prints as a long one would
    args = ("train", synthetic_dataset, "--preset", "tiny", "--max-steps", "10",
            "--batch-size", "2", "--device", "cpu")
    quiet = run_cli(*args, "--output", tmp_path / "b", "--quiet")
    assert quiet.code == 0 and quiet.stderr == "", quiet.stderr
    assert "model written to" in quiet.stdout

    result = run_cli(*args, "--output", tmp_path / "a")  # the next command speaks again
    assert result.code == 0, result.stderr
    steps = re.findall(r": (\d+) % \((\d+)/10 steps\)", result.stderr)
    assert [int(done) for _, done in steps] == list(range(1, 11)), result.stderr
    assert "posecast:" not in result.stderr

    verbose = run_cli(*args, "--output", tmp_path / "c", "-v")
    assert verbose.code == 0 and "posecast: device cpu: cpu (torch" in verbose.stderr, \
        verbose.stderr

    both = run_cli(*args, "--output", tmp_path / "d", "-q", "-v")
    assert both.code == 2 and "--quiet and --verbose exclude each other" in both.stderr
