"""`--help` reads well at any terminal width: one-line command summaries, paragraphs wrapped by
the terminal (not at the source's line breaks), options grouped on the long commands, each
default stated once."""

from __future__ import annotations

import re

import pytest
import typer.main

from posecast.cli import app


def _command_paths(command=None, path=()) -> list[tuple[str, ...]]:
    """Every leaf command as its words, e.g. ("bench", "render")."""
    command = command or typer.main.get_command(app)
    if not hasattr(command, "list_commands"):
        return [path]
    return [leaf for name in command.list_commands(None)
            for leaf in _command_paths(command.get_command(None, name), (*path, name))]


COMMANDS = _command_paths()
GROUPS = [()] + sorted({path[:-1] for path in COMMANDS if len(path) > 1})
# the long commands and their option headings (every option sits under one of them)
PANELS = {
    ("distill",): ["Teacher and output", "Student", "ODE initialisation", "DMD", "Region loss",
                   "Optimisation", "MimicMotion", "Run"],
    ("train",): ["Output", "Model", "Training", "MimicMotion"],
    ("render",): ["Output", "Model", "Motion", "Batch", "Device"],
    ("teacher",): ["Output", "Model", "Motion", "Device"],
    ("make-dataset",): ["Clips", "People", "Output"],
    ("bench", "render"): ["Models", "Workload", "Run"],
    ("live",): ["Speech", "Output", "Model", "Device"],
}


def _help(run_cli, monkeypatch, words, columns: int) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    result = run_cli(*words, "--help")
    assert result.code == 0, result.stderr
    return result.stdout


def _panel_rows(text: str, title: str) -> list[str]:
    """The rows inside the box headed `title`, without the box's borders."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"╭─ {re.escape(title)} ─", line))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("╰"))
    return [line[1:-1].rstrip() for line in lines[start + 1:end]]


def test_the_command_paths_are_found():
    assert ("render",) in COMMANDS and ("bench", "render") in COMMANDS and len(COMMANDS) > 10


@pytest.mark.parametrize("words", COMMANDS, ids=" ".join)
def test_every_command_answers_help(run_cli, monkeypatch, words):
    text = _help(run_cli, monkeypatch, words, 80)
    assert "Usage:" in text and f"{words[-1]} [OPTIONS]" in text


@pytest.mark.parametrize("group", GROUPS, ids=lambda words: " ".join(("posecast", *words)))
@pytest.mark.parametrize("columns", [80, 160])
def test_command_lists_show_one_line_summaries_wrapped_by_the_terminal(run_cli, monkeypatch,
                                                                     group, columns):
    """Each listed command's summary is its docstring's first paragraph, and its lines break
    only where the next word would not fit (a source line break printed ragged entries)."""
    rows = _panel_rows(_help(run_cli, monkeypatch, group, columns), "Commands")
    text_start = len(rows[0]) - len(rows[0].split(maxsplit=1)[1])  # where the summaries begin
    width = columns - 2 - text_start - 1  # the box's borders, then the column's right padding
    entries: list[list[str]] = []
    for row in rows:
        name, summary = row[:text_start].strip(), row[text_start:]
        if name:
            entries.append([summary])
        else:
            entries[-1].append(summary)
    assert len(entries) == sum(1 for path in COMMANDS if path[:len(group)] == group
                               and len(path) == len(group) + 1) + \
        sum(1 for g in GROUPS if len(g) == len(group) + 1 and g[:len(group)] == group)
    for lines in entries:
        for line, following in zip(lines, lines[1:], strict=False):
            assert len(line) + 1 + len(following.split()[0]) > width, (
                f"ragged break at {columns} columns: {line!r} / {following!r}")


@pytest.mark.parametrize("words", COMMANDS, ids=" ".join)
def test_help_paragraphs_are_one_line_on_a_wide_terminal(run_cli, monkeypatch, words):
    """Between the usage line and the first box: prose paragraphs (one space in) are single
    lines on a 1000-column terminal; only the examples (indented further) keep their lines."""
    lines = _help(run_cli, monkeypatch, words, 1000).splitlines()
    first_box = next(i for i, line in enumerate(lines) if line.startswith("╭"))
    description = [line.rstrip() for line in lines[:first_box]]
    prose = [bool(re.match(r" \S", line)) for line in description]
    for i in range(len(description) - 1):
        assert not (prose[i] and prose[i + 1]), f"a paragraph broken in two: {description[i]!r}"


@pytest.mark.parametrize("words", list(PANELS), ids=" ".join)
def test_long_commands_group_every_option_under_a_heading(run_cli, monkeypatch, words):
    text = _help(run_cli, monkeypatch, words, 160)
    for title in PANELS[words]:
        assert _panel_rows(text, title), title
    # every option has a heading, --help too (in the last box, not alone in an "Options" box)
    titles = re.findall(r"^╭─ (.+?) ─", text, re.MULTILINE)
    assert "Options" not in titles
    assert "--help" in " ".join(_panel_rows(text, titles[-1]))


@pytest.mark.parametrize("words", COMMANDS, ids=" ".join)
def test_each_default_is_stated_once(run_cli, monkeypatch, words):
    """On a 1000-column terminal each option is one row: its text and typer's own
    "[default: …]" must not both give the default."""
    text = _help(run_cli, monkeypatch, words, 1000)
    for row in text.splitlines():
        if re.match(r"│ .*--", row):
            assert len(re.findall(r"default:", row, re.IGNORECASE)) <= 1, " ".join(row.split())


@pytest.mark.parametrize("words", [path for path in COMMANDS if path not in PANELS], ids=" ".join)
def test_short_commands_keep_one_options_box(run_cli, monkeypatch, words):
    """A heading given to a shared option (--device, --json, …) on a long command stays there:
    the other commands list it with their own options."""
    text = _help(run_cli, monkeypatch, words, 160)
    titles = re.findall(r"^╭─ (.+?) ─", text, re.MULTILINE)
    assert set(titles) <= {"Arguments", "Options"}, titles


def _declared(words):
    """The click command behind `posecast WORDS…` and its shown parameters."""
    command = typer.main.get_command(app)
    for word in words:
        command = command.get_command(None, word)
    return command, [param for param in command.params if not getattr(param, "hidden", False)]


@pytest.mark.parametrize("words", COMMANDS, ids=" ".join)
def test_help_reads_at_80_columns(run_cli, monkeypatch, words):
    """At 80 columns every option name is printed whole, no cell is cut short with "…" (an
    ellipsis the help itself writes aside), on/off flags show no `<bool>` value, and the usage
    line names the arguments in upper case, as the text does."""
    text = _help(run_cli, monkeypatch, words, 80)
    command, params = _declared(words)
    written = " ".join([command.help or "", *(param.help or "" for param in params)])
    for param in params:
        for name in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]:
            if name.startswith("--"):
                assert re.search(rf"(^|[\s│]){re.escape(name)}([\s│]|$)", text, re.MULTILINE), \
                    f"{name} is cut short"
    cut = [word for word in re.findall(r"\S*…", text) if word not in written]
    assert not cut, cut
    assert "<bool>" not in text
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    for param in params:
        if param.param_type_name == "argument":
            assert param.name.upper() in usage and param.name.lower() not in usage, usage
