"""`--help` text from the commands' docstrings, which are wrapped at 100 columns in the source.

Typer's rich markup mode keeps a docstring's single line breaks (in the command list and in
every paragraph after the first), so a hard-wrapped docstring printed ragged lines. Each prose
paragraph becomes one line here and the terminal wraps it to its own width.
"""

from __future__ import annotations

import inspect

import typer
from typer.core import TyperArgument, TyperCommand, TyperOption


def unwrapped(docstring: str) -> str:
    """`docstring` with each prose paragraph on one line. Indented paragraphs (the examples)
    keep their lines: each is a command to copy."""
    paragraphs = inspect.cleandoc(docstring).split("\n\n")
    return "\n\n".join(paragraph if paragraph.startswith(" ") else " ".join(paragraph.split("\n"))
                       for paragraph in paragraphs)


def unwrap_command_help(app: typer.Typer) -> None:
    """Every command's help in `app` and its sub-apps (`bench …`, `import …`): its docstring,
    unwrapped (a help= given when registering stays as written), laid out by HelpReadsWell."""
    for command in app.registered_commands:
        if command.cls in (None, TyperCommand):
            command.cls = HelpReadsWell
        if command.help is None and command.callback is not None and command.callback.__doc__:
            command.help = unwrapped(command.callback.__doc__)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            unwrap_command_help(group.typer_instance)


class HelpReadsWell(TyperCommand):
    """A command whose `--help` reads at 80 columns: on/off flags show no `<bool>` placeholder
    (they take no value), arguments are upper case in the usage line as in the text (AUDIO),
    and on a command that groups its options `--help` joins the last group instead of sitting
    alone in an "Options" box above them."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument) and param.metavar is None:
                param.metavar = param.name.upper()
            elif isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
                param.metavar = ""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        panels = [panel for param in self.params
                  if (panel := getattr(param, "rich_help_panel", None))]
        if option is not None:
            option.metavar = ""
            if panels:
                option.rich_help_panel = list(dict.fromkeys(panels))[-1]  # shown last
        return option
