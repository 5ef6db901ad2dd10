"""Options shared by several subcommands, defined once."""

from __future__ import annotations

from typing import Annotated

import typer

Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an output that exists.")]
AllowMissing = Annotated[
    bool,
    typer.Option(
        "--allow-missing",
        help="Write zeros for a face or body that is not found instead of stopping.",
    ),
]
