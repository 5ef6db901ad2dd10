"""`posecast keypoints`: face, body and hand landmarks of an image, a video or a clip folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from posecast.cli.options import AllowMissing, JsonSummary, Overwrite
from posecast.cli.ui import print_result, progress_bar, warn
from posecast.errors import InputError, UsageError
from posecast.paths import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, atomic_output, require_output


def keypoints_command(
    input: Annotated[Path, typer.Argument(help="An image (PNG, JPEG, WebP, TIFF), a video, or a "
                                          "folder of video clips.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", show_default=False,
                                         help="The .npz to write; for a folder, the cache folder "
                                         "(one .npz per clip, created if needed).")],
    preview: Annotated[Path | None, typer.Option(
        help="Also draw the landmarks over the input: .png for an image, .mp4 for a video.")]
    = None,
    smooth: Annotated[bool, typer.Option("--smooth",
                                         help="One-Euro filter the tracks of a video.")] = False,
    allow_missing: AllowMissing = False,
    json_summary: JsonSummary = False,
    overwrite: Overwrite = False,
) -> None:
    """Find face (478), body (33) and hand (2 × 21) landmarks with mediapipe.

    Points are saved as x, y in pixels plus a confidence (0 where nothing was found).

    [bold]Examples[/bold]

      posecast keypoints examples/astronaut.png -o kp.npz --preview kp.png

      posecast keypoints talk.mp4 -o talk.npz --smooth --preview talk_landmarks.mp4

      posecast keypoints clips/ -o clips_keypoints/   (already-cached clips are skipped)
    """
    suffix = input.suffix.lower()
    if input.is_dir() and suffix in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS:
        raise UsageError(f"{input}: is a folder, but an image or video file is expected")
    if input.is_dir():
        if preview is not None:
            raise UsageError("--preview works for one image or video, not for a folder")
        _extract_folder(input, output, smooth, allow_missing, json_summary)
        return
    if suffix in VIDEO_EXTENSIONS:
        kind, preview_types = "video", (".mp4",)
    elif suffix in IMAGE_EXTENSIONS:
        kind, preview_types = "image", (".png", ".jpg", ".jpeg")
    else:
        raise UsageError(f"{input}: unsupported input type '{input.suffix or '(none)'}'; use an "
                         f"image ({', '.join(IMAGE_EXTENSIONS)}), a video "
                         f"({', '.join(VIDEO_EXTENSIONS)}) or a folder of videos")
    require_output(output, overwrite, (".npz",))
    if preview is not None:
        require_output(preview, overwrite, preview_types, inputs=(input,))
        if preview.resolve() == output.resolve():
            raise UsageError("--preview and --output must be different files")

    from posecast.pose.extract import extract_image, extract_video

    started = time.perf_counter()
    if kind == "image":
        keypoints = extract_image(input, allow_missing=allow_missing, on_note=warn)
    else:
        with progress_bar("frames") as bar:
            task = bar.add_task("keypoints", total=None)

            def advance(done: int, expected: int) -> None:
                bar.update(task, completed=done, total=max(done, expected) or None)

            keypoints = extract_video(input, smooth=smooth, allow_missing=allow_missing,
                                      on_frame=advance)
    elapsed = time.perf_counter() - started

    with atomic_output(output) as tmp:
        keypoints.save(tmp)
        if preview is not None:
            _write_preview(input, kind, keypoints, preview)
    _report(keypoints, output, preview, elapsed, json_summary)


def _write_preview(input: Path, kind: str, keypoints, preview: Path) -> None:
    from posecast.media import (
        iter_video_frames,
        load_audio,
        load_image,
        probe_video,
        save_image,
        write_mp4,
    )
    from posecast.pose.draw import draw_pose

    if kind == "image":
        with atomic_output(preview) as tmp:
            save_image(tmp, draw_pose(load_image(input), keypoints, 0))
        return
    info = probe_video(input)
    audio = load_audio(input) if info.has_audio else None
    with write_mp4(preview, fps=keypoints.fps, audio=audio) as mp4:
        for t, frame in enumerate(iter_video_frames(input, info)):
            if t < len(keypoints):
                mp4.write(draw_pose(frame, keypoints, t))


def _report(keypoints, output: Path, preview: Path | None, elapsed: float,
            as_json: bool) -> None:
    from posecast.pose.keypoints import PART_SIZES

    rates = keypoints.detection_rates()
    found = ", ".join(f"{part.replace('_', ' ')} ({PART_SIZES[part]} points) in {rate:.0%}"
                      for part, rate in rates.items())
    print_result(f"{len(keypoints)} frame(s) of {keypoints.width}x{keypoints.height} in "
                 f"{elapsed:.2f} s; found {found} of frames\nwrote {output}"
                 + (f" and {preview}" if preview else ""),
                 {"frames": len(keypoints), "width": keypoints.width,
                  "height": keypoints.height, "seconds": round(elapsed, 3),
                  "detection_rates": {part: round(float(rate), 4)
                                      for part, rate in rates.items()}}, as_json,
                 outputs=[output, preview])


def _extract_folder(folder: Path, cache: Path, smooth: bool, allow_missing: bool,
                    as_json: bool) -> None:
    from posecast.pose.extract import extract_folder, find_clips

    if cache.exists() and not cache.is_dir():
        raise UsageError(f"{cache}: exists and is not a folder; give a folder for the cache")
    if not cache.parent.is_dir():
        raise UsageError(f"{cache}: its parent folder {cache.parent} does not exist")
    clips = find_clips(folder)
    if not clips:
        raise UsageError(f"{folder}: no video clips found ({', '.join(VIDEO_EXTENSIONS)})")
    created = not cache.exists()
    cache.mkdir(exist_ok=True)
    counts = {"done": 0, "skipped": 0, "failed": 0}
    started = time.perf_counter()
    with progress_bar("clips") as bar:
        task = bar.add_task("keypoints", total=len(clips))
        for result in extract_folder(folder, cache, smooth=smooth, allow_missing=allow_missing):
            counts[result.status] += 1
            if result.status == "failed":
                warn(f"skipped {result.clip}: {result.message}")
            bar.advance(task)
    elapsed = time.perf_counter() - started
    if counts["failed"] == len(clips):  # nothing usable: an error, and no empty cache left
        if created and not any(cache.iterdir()):
            cache.rmdir()
        raise InputError(f"{folder}: none of its {len(clips)} clips could be read (each is "
                         "named above); give clips ffmpeg can decode with one person in view")
    print_result(f"{counts['done']} extracted, {counts['skipped']} already cached, "
                 f"{counts['failed']} failed in {elapsed:.1f} s → {cache}",
                 {"extracted": counts["done"], "cached": counts["skipped"],
                  "failed": counts["failed"], "seconds": round(elapsed, 3)}, as_json,
                 outputs=[cache], ok=not counts["failed"])
    if counts["failed"]:
        raise typer.Exit(1)
