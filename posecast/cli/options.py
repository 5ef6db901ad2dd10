"""Options shared by several subcommands, defined once."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, get_args

import typer

from posecast.errors import UsageError
from posecast.paths import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an output that exists.")]
AllowMissing = Annotated[bool, typer.Option(
    "--allow-missing",
    help="Write zeros for a face or body that is not found instead of stopping.")]
JsonSummary = Annotated[bool, typer.Option(
    "--json", help="Print a JSON summary on stdout (messages go to stderr).")]
Device = Annotated[str, typer.Option(help="auto (CUDA when available), cpu, or cuda[:N].",
                                     envvar="POSECAST_DEVICE")]
MAX_SEED = 2**63 - 1  # what torch.Generator.manual_seed takes


def check_seed(value: int | None) -> int | None:
    """A seed from 0 to 2⁶³ − 1, or one line saying so (a typer callback)."""
    if value is not None and not 0 <= value <= MAX_SEED:
        raise UsageError(f"--seed {value}: give a whole number from 0 to {MAX_SEED}")
    return value


Seed = Annotated[int, typer.Option(help="Random seed (0 to 2^63 − 1); the same seed gives the "
                                   "same output.", callback=check_seed)]


def revision_option(of: str, name: str = "--revision"):
    """`--revision` (or `name`) for the repo id given with the option `of` (e.g. "--model")."""
    return Annotated[str | None, typer.Option(
        name, help=f"The Hub revision (branch, tag or commit) of the repo id given "
        f"with {of} (a local folder has none) \\[default: main].", show_default=False)]


def check_revision(revision: str | None, source: str | None, option: str) -> None:
    """--revision only beside a Hub repo id given with `option`: without one, or beside a
    local folder (which has no revisions), it would be silently ignored."""
    if revision is None:
        return
    if source is None:
        raise UsageError(f"--revision needs {option} OWNER/NAME (the Hub repo it picks from)")
    if Path(source).expanduser().exists():
        raise UsageError(f"--revision {revision}: {source} is a local folder, which has no "
                         "revisions; drop --revision, or give the Hub repo id")


Steps = Annotated[int | None, typer.Option(help="Denoising steps \\[default: the model's].",
                                            min=1, max=1000)]
Cfg = Annotated[float | None, typer.Option(
    help="Classifier-free guidance scale over pose + reference; 1 = off \\[default: the "
    "model's].", min=0.0, max=100.0)]
Size = Annotated[str | None, typer.Option(
    help="Output WxH in pixels \\[default: the model's native size].")]


def parse_region_alphas(values: list[str]) -> dict[str, float]:
    """`--region-alpha REGION=ALPHA` values → {region: α} (face, lips, hands, arms)."""
    alphas = {}
    for value in values:
        name, _, number = value.partition("=")
        if name not in ("face", "lips", "hands", "arms"):
            raise UsageError(f"--region-alpha {value}: the region must be face, lips, hands or "
                             "arms")
        try:
            alphas[name] = float(number)
        except ValueError:
            raise UsageError(f"--region-alpha {value}: write REGION=NUMBER") from None
        if not 0 <= alphas[name] < float("inf"):
            raise UsageError(f"--region-alpha {value}: the weight must be a number ≥ 0")
    return alphas


def panel_option(panel: str, help: str, *names: str, **settings):
    """A typer.Option listed in --help under `panel` (the long commands group their options)."""
    return typer.Option(*names, rich_help_panel=panel, help=help, **settings)


def in_panel(option, panel: str):
    """A shared option of this module (an Annotated type) listed in --help under `panel`:
    the long commands group their options (`device: in_panel(Device, "Run") = "auto"`)."""
    kind, info = get_args(option)
    info = copy.copy(info)  # the shared one stays without a panel for the other commands
    info.rich_help_panel = panel
    return Annotated[kind, info]


def check_speech_then_portrait(audio, portrait, command: str) -> None:
    """One line that says so when AUDIO and PORTRAIT were given the wrong way round (an image
    first, then a sound), instead of "unsupported audio type '.png'"."""
    if audio is None or portrait is None:
        return
    first, second = Path(audio).suffix.lower(), Path(portrait).suffix.lower()
    if first in IMAGE_EXTENSIONS and second in AUDIO_EXTENSIONS + VIDEO_EXTENSIONS:
        raise UsageError(f"{audio} is a picture and {portrait} a recording: the speech comes "
                         f"first, e.g. `posecast {command} {portrait} {audio}`")
