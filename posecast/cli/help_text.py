"""`--help` text from the commands' docstrings, which are wrapped at 100 columns in the source.

Typer's rich markup mode keeps a docstring's single line breaks (in the command list and in
every paragraph after the first), so a hard-wrapped docstring printed ragged lines. Each prose
paragraph becomes one line here and the terminal wraps it to its own width.
"""

from __future__ import annotations

import inspect

import typer


def unwrapped(docstring: str) -> str:
    """`docstring` with each prose paragraph on one line. Indented paragraphs (the examples)
    keep their lines: each is a command to copy."""
    paragraphs = inspect.cleandoc(docstring).split("\n\n")
    return "\n\n".join(paragraph if paragraph.startswith(" ") else " ".join(paragraph.split("\n"))
                       for paragraph in paragraphs)


def unwrap_command_help(app: typer.Typer) -> None:
    """Every command's help in `app` and its sub-apps (`bench …`, `import …`): its docstring,
    unwrapped (a help= given when registering stays as written)."""
    for command in app.registered_commands:
        if command.help is None and command.callback is not None and command.callback.__doc__:
            command.help = unwrapped(command.callback.__doc__)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            unwrap_command_help(group.typer_instance)
