"""`posecast eval`: quality of rendered clips (against references where given), as a table
and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from posecast.cli.options import Overwrite
from posecast.cli.ui import console, err_console, print_json, progress_bar
from posecast.paths import atomic_output, require_output

COLUMNS = (("psnr", "PSNR", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"),
           ("face_psnr", "face PSNR", "{:.2f}"), ("face_ssim", "face SSIM", "{:.3f}"),
           ("hand_psnr", "hand PSNR", "{:.2f}"), ("hand_ssim", "hand SSIM", "{:.3f}"),
           ("lip_sync_r", "lip-sync r", "{:.3f}"), ("lip_sync_lag", "lag", "{:+d}"),
           ("mouth_r", "mouth r", "{:.3f}"), ("mouth_amplitude", "mouth amp.", "{:.2f}"),
           ("face_found", "face found", "{:.0%}"), ("seam_ratio", "seam ratio", "{:.2f}"),
           ("hkc", "HKC", "{:.3f}"), ("fps", "FPS", "{:.1f}"))


def evaluate_command(
    outputs: Annotated[Path, typer.Argument(help="Folder of rendered .mp4 clips, or one .mp4.",
                                            show_default=False)],
    references: Annotated[Path | None, typer.Option(
        help="Folder of the real clips, same file names (e.g. a make-dataset heldout/). "
             "Without it: lip sync, face found, seam ratio and FPS only.",
        show_default=False)] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Also write the scores (per clip and mean) to this JSON file.",
        show_default=False)] = None,
    json_summary: Annotated[bool, typer.Option(
        "--json", help="Print the scores as JSON on stdout (the table goes to stderr).")]
    = False,
    overwrite: Overwrite = False,
) -> None:
    """Score rendered clips: lip sync, face found, patch grid and FPS; with --references also
    image quality, mouth and hands.

    PSNR and SSIM (frame, face, hands), lip sync (mouth opening vs loudness: best r and its
    lag in frames; the mean row: the peak of the clips' mean lag curve), the mouth's darkness
    against the reference's (r, and amplitude: below 1 it opens less), face found (the share
    of frames where mediapipe finds the face; lip sync needs over 80 %), seam ratio (the step
    between neighbouring pixels on a 2- or 4-pixel grid against elsewhere: higher where the
    patch grid shows; compare it with the real clips', as MP4's blocks and still edges lift it
    too), hand keypoint confidence (HKC), and FPS when OUTPUTS/timings.json gives it. See
    posecast/evaluate.py for the exact definitions.

    [bold]Example[/bold]

      posecast eval renders/ --references clips/heldout -o scores.json

      posecast eval out.mp4
    """
    from posecast.evaluate import evaluate_folder

    if output is not None:
        require_output(output, overwrite, (".json",))
    with progress_bar("clips") as bar:
        total = len(list(outputs.glob("*.mp4"))) if outputs.is_dir() else 1
        task = bar.add_task("scoring", total=total or None)
        report = evaluate_folder(outputs, references, on_clip=lambda _: bar.advance(task))
    table = Table(title=str(outputs) if references is None else f"{outputs} against {references}")
    table.add_column("clip")
    for _, title, _ in COLUMNS:
        table.add_column(title, justify="right")
    rows = [*report["clips"], {"name": "mean", **report["mean"]}]
    for row in rows:
        table.add_row(row["name"], *("-" if row[key] is None else style.format(row[key])
                                     for key, _, style in COLUMNS))
    say = err_console if json_summary else console  # stdout holds only the JSON
    say.print(table)
    if output is not None:
        with atomic_output(output) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
        say.print(f"wrote {output}", highlight=False)
    if json_summary:
        print_json(report, outputs=[output])
