"""How every command is built: its `--help` text and layout, and the `--quiet` / `--verbose`
options every command takes.

Typer's rich markup mode keeps a docstring's single line breaks (in the command list and in
every paragraph after the first), so a hard-wrapped docstring printed ragged lines. Each prose
paragraph becomes one line here and the terminal wraps it to its own width.
"""

from __future__ import annotations

import copy
import functools
import inspect
from typing import Annotated

import typer
from typer.core import TyperArgument, TyperCommand, TyperOption

from posecast.cli import ui


def unwrapped(docstring: str) -> str:
    """`docstring` with each prose paragraph on one line. Indented paragraphs (the examples)
    keep their lines: each is a command to copy."""
    paragraphs = inspect.cleandoc(docstring).split("\n\n")
    return "\n\n".join(paragraph if paragraph.startswith(" ") else " ".join(paragraph.split("\n"))
                       for paragraph in paragraphs)


def finish_commands(app: typer.Typer) -> None:
    """Every command in `app` and its sub-apps (`bench …`, `import …`) built as a Command, with
    its docstring unwrapped as its help (a help= given when registering stays as written)."""
    for command in app.registered_commands:
        if command.cls in (None, TyperCommand):
            command.cls = Command
        if command.help is None and command.callback is not None and command.callback.__doc__:
            command.help = unwrapped(command.callback.__doc__)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            finish_commands(group.typer_instance)


def _verbosity_template(
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="Print only warnings, errors and the result.")] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Also print what each step did and how long it took.")] = False,
) -> None:
    """Never run: typer builds the two options from this signature, once."""


def _set_verbosity(ctx, param, value: bool) -> None:
    if value:
        level = ui.QUIET if param.name == "quiet" else ui.VERBOSE
        if ctx.meta.setdefault("posecast_verbosity", level) != level:
            raise typer.BadParameter("--quiet and --verbose exclude each other", param=param)
        ui.set_verbosity(level)


@functools.cache
def _verbosity_options() -> list[TyperOption]:
    template = typer.Typer()
    template.command()(_verbosity_template)
    return [param for param in typer.main.get_command(template).params  # not typer's own
            if param.name in ("quiet", "verbose")]                          # --*-completion


class Command(TyperCommand):
    """A posecast command: it takes `--quiet` and `--verbose` (handled here, not passed to the
    command's function), and its `--help` reads at 80 columns: on/off flags show no `<bool>`
    placeholder (they take no value), arguments are upper case in the usage line as in the
    text (AUDIO), and on a command that groups its options `--help`, `--quiet` and `--verbose`
    join the last group instead of sitting in an "Options" box above them."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for template in _verbosity_options():
            option = copy.copy(template)
            option.expose_value, option.is_eager, option.callback = False, True, _set_verbosity
            self.params.append(option)
        panels = list(dict.fromkeys(panel for param in self.params
                                    if (panel := getattr(param, "rich_help_panel", None))))
        self.last_panel = panels[-1] if panels else None
        for param in self.params:
            if isinstance(param, TyperArgument) and param.metavar is None:
                param.metavar = param.name.upper()
            elif isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
                param.metavar = ""
                if param.callback is _set_verbosity:
                    param.rich_help_panel = self.last_panel

    def invoke(self, ctx):
        words, context = [], ctx
        while context.parent is not None:  # the root's name is the program's, not a word
            words.insert(0, context.info_name)
            context = context.parent
        ui.set_command(" ".join(words))
        return super().invoke(ctx)

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar, option.rich_help_panel = "", self.last_panel
        return option
