"""`posecast motion`: the pose sequence a speech recording gives a portrait (no video model)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from posecast.cli.options import (
    JsonSummary,
    Overwrite,
    Seed,
    check_revision,
    check_speech_then_portrait,
    revision_option,
)
from posecast.cli.ui import print_result, warn
from posecast.errors import UsageError
from posecast.paths import atomic_output, require_output

PREVIEW_SIDE = 512  # the preview's longer side, in pixels


def motion_command(
    audio: Annotated[Path, typer.Argument(help="Speech (WAV, FLAC, MP3, …).",
                                          show_default=False)],
    portrait: Annotated[Path, typer.Argument(help="The person (PNG, JPEG, WebP, TIFF, or a "
                                             "video: its first frame).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Keypoints to write (.npz).",
                                         show_default=False)],
    preview: Annotated[Path | None, typer.Option(
        help="Also write the skeleton over the dimmed portrait as an MP4 with the audio, to "
        "judge lip sync by eye.")] = None,
    motion: Annotated[str, typer.Option(
        help="'procedural' (built in) or a model folder / repo id from `posecast "
        "train-motion`.")] = "procedural",
    motion_revision: revision_option("--motion", "--motion-revision") = None,
    fps: Annotated[float, typer.Option(help="Frames per second.", min=1.0, max=120.0)] = 25.0,
    seed: Seed = 0,
    json_summary: JsonSummary = False,
    overwrite: Overwrite = False,
) -> None:
    """Make the portrait's keypoints move with the speech: mouth, head, blinks, hand beats.

    The result feeds `posecast render --poses` or `posecast teacher --poses`.

    [bold]Example[/bold]

      posecast motion speech.wav portrait.png -o poses.npz --preview skeleton.mp4
    """
    from posecast.media import load_audio, load_portrait
    from posecast.motion import load_motion, motion_from_speech
    from posecast.render import portrait_keypoints

    check_speech_then_portrait(audio, portrait, "motion")
    check_revision(motion_revision, None if motion == "procedural" else motion, "--motion")
    require_output(output, overwrite, (".npz",))
    if preview is not None:
        require_output(preview, overwrite, (".mp4",), inputs=(audio, portrait))
        if preview.resolve() == output.resolve():
            raise UsageError("--preview and --output must be different files")
    clip = load_audio(audio, on_warning=warn)
    image = load_portrait(portrait)
    keypoints = portrait_keypoints(image, portrait)
    started = time.perf_counter()
    model = load_motion(motion, revision=motion_revision)
    poses = motion_from_speech(clip, keypoints, fps, seed, model)
    elapsed = time.perf_counter() - started
    with atomic_output(output) as tmp:
        poses.save(tmp)
        if preview is not None:
            write_preview(preview, image, poses, clip)
    print_result(f"wrote {output}" + (f" and {preview}" if preview else "") +
                 f": {len(poses)} frames at {fps:g} fps ({clip.duration:.2f} s) in "
                 f"{elapsed:.2f} s",
                 {"frames": len(poses), "fps": fps, "seconds": round(clip.duration, 3),
                  "elapsed": round(elapsed, 3)}, json_summary, outputs=[output, preview])


def write_preview(path: Path, image, poses, clip) -> None:
    import cv2

    from posecast.media import write_mp4
    from posecast.pose.draw import draw_pose

    scale = min(1.0, PREVIEW_SIDE / max(image.shape[:2]))
    size = (round(image.shape[1] * scale) // 2 * 2, round(image.shape[0] * scale) // 2 * 2)
    dimmed = (cv2.resize(image, size, interpolation=cv2.INTER_AREA) * 0.35).astype("uint8")
    with write_mp4(path, fps=poses.fps, audio=clip) as mp4:
        for t in range(len(poses)):
            mp4.write(draw_pose(dimmed, poses, t))
