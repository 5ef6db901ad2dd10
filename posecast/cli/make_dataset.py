"""`posecast make-dataset`: synthetic co-speech clips to train and evaluate on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from posecast.cli.options import JsonSummary, Overwrite, Seed, in_panel, panel_option
from posecast.cli.ui import print_result, progress_bar, warn
from posecast.errors import UsageError
from posecast.ownership import require_replaceable
from posecast.paths import atomic_folder


def make_dataset_command(
    out: Annotated[Path, typer.Argument(help="Folder to create (train/, heldout/, "
                                        "manifest.json).", show_default=False)],
    clips: Annotated[int, panel_option("Clips", "Number of clips (people take turns).", min=1)]
    = 48,
    size: Annotated[int, panel_option("Clips", "Frame side in pixels.", min=64, max=1024)] = 256,
    fps: Annotated[float, panel_option("Clips", "Frames per second.", min=1.0, max=120.0)] = 25.0,
    drawn_people: Annotated[int, panel_option(
        "People", "Drawn people besides the two photos.", min=0)] = 8,
    held_out_people: Annotated[int, panel_option(
        "People", "Drawn people kept for evaluation only (the last ones).", min=0)] = 2,
    seed: in_panel(Seed, "Clips") = 0,
    json_summary: in_panel(JsonSummary, "Output") = False,
    overwrite: in_panel(Overwrite, "Output") = False,
) -> None:
    """Make talking clips with exact keypoints, a training set that needs no download.

    The bundled public-domain portraits are warped along speech-driven motion, and drawn
    people move their hands; speech from espeak-ng (a build-time tool; without it, a
    speech-like buzz). Deterministic for a seed.

    [bold]Example[/bold]

      posecast make-dataset clips/ --clips 48 --seed 0
      posecast train clips/train --preset small --output teacher/
    """
    from posecast.data.cospeech import espeak_program, make_cospeech_dataset

    if held_out_people > drawn_people:
        raise UsageError("--held-out-people cannot exceed --drawn-people")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UsageError(f"{out}: already exists; pass --overwrite to replace it")
    if overwrite:
        require_replaceable(out, "dataset folder", legacy_names=("manifest.json",))
    if not out.parent.is_dir():
        raise UsageError(f"{out}: the parent folder {out.parent} does not exist")
    with atomic_folder(out, "dataset") as building:  # refuses the current folder first
        if espeak_program() is None:
            warn("warning: no espeak-ng (not installed, or POSECAST_ESPEAK=none), so the speech "
                 "is a speech-like buzz (apt install espeak-ng for real sentences)")
        with progress_bar("clips") as bar:
            task = bar.add_task("making clips", total=clips)
            records = make_cospeech_dataset(building, clips, seed, size, fps, drawn_people,
                                            held_out_people, on_clip=lambda _: bar.advance(task))
    held = sum(record.split == "heldout" for record in records)
    seconds = sum(record.seconds for record in records)
    print_result(f"wrote {len(records)} clips ({seconds:.0f} s of speech) to {out}: "
                 f"{len(records) - held} in {out}/train, {held} in {out}/heldout",
                 {"clips": len(records), "train": len(records) - held, "heldout": held,
                  "seconds_of_speech": round(seconds, 3)}, json_summary, outputs=[out])
