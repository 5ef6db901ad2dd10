"""`posecast teacher`: the many-step teacher renders a portrait driven by a pose sequence."""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path
from typing import Annotated

import typer

from posecast.cli.options import (
    AllowMissing,
    Cfg,
    Device,
    JsonSummary,
    Overwrite,
    Seed,
    Steps,
    check_revision,
    in_panel,
    panel_option,
    revision_option,
)
from posecast.cli.ui import print_result, progress_bar, warn
from posecast.config import parse_size
from posecast.devices import pick_device
from posecast.errors import PosecastError, UsageError
from posecast.paths import require_output


def teacher_command(
    portrait: Annotated[Path, typer.Argument(help="The person to animate (PNG, JPEG, WebP, "
                                             "TIFF, or a video: its first frame).",
                                             show_default=False)],
    output: Annotated[Path, panel_option("Output", "The MP4 to write.", "--output", "-o",
                                         show_default=False)],
    model: Annotated[str | None, panel_option(
        "Model", "A teacher model folder or Hugging Face repo id (owner/name): posecast's own, "
        "or a MimicMotion folder from `posecast import mimicmotion` \\[default: the bundled "
        "starter teacher (64×64, the one the starter student was distilled from)].")] = None,
    revision: in_panel(revision_option("--model"), "Model") = None,
    poses: Annotated[Path | None, panel_option("Motion", "A keypoint file (.npz) to follow.")]
    = None,
    driving_video: Annotated[Path | None, panel_option(
        "Motion", "A video whose person's motion to follow.")] = None,
    audio: Annotated[Path | None, panel_option(
        "Output", "Audio to mux; the video then lasts exactly as long as it.")] = None,
    steps: in_panel(Steps, "Model") = None,
    cfg: in_panel(Cfg, "Model") = None,
    fps: Annotated[float | None, panel_option(
        "Output", "Output frame rate \\[default: the poses', sampled as the model was trained: "
        "about 15 fps for MimicMotion].", min=1.0, max=120.0)] = None,
    size: Annotated[str | None, panel_option(
        "Output", "Output WxH in pixels \\[default: the model's; MimicMotion's upright for a "
        "portrait taller than wide, else lying, as Tencent's inference].")] = None,
    attention: Annotated[str | None, panel_option(
        "Model", "dense, or input_aware: the paper's pose-restricted joint attention "
        "\\[default: the model's own].", show_default=False)] = None,
    k_frames: Annotated[int | None, panel_option(
        "Model", "With --attention input_aware: the pose-similar past frames each frame sees.",
        min=0, max=64, show_default=False)] = None,
    recipe: Annotated[list[str] | None, panel_option(
        "Model", "MimicMotion: a sampling setting as KEY=VALUE (window, overlap, min_guidance, "
        "max_guidance, fps, motion_bucket_id, noise_aug_strength, decode_chunk); repeatable.",
        show_default=False)] = None,
    seed: in_panel(Seed, "Model") = 0,
    device: in_panel(Device, "Device") = "auto",
    align: Annotated[str | None, panel_option(
        "Motion", "How the driving poses meet the portrait's person: upper-body (scale and "
        "offset from the shoulders, elbows and wrists of the first frame) or whole-video "
        "(MimicMotion's least-squares fit of the head, torso and legs over every frame) "
        "\\[default: the model's: whole-video for MimicMotion].", show_default=False)] = None,
    allow_missing: in_panel(AllowMissing, "Motion") = False,
    json_summary: in_panel(JsonSummary, "Output") = False,
    overwrite: in_panel(Overwrite, "Output") = False,
) -> None:
    """Render PORTRAIT moving like a pose sequence, with the slow, high-quality teacher.

    The driving poses are moved and scaled onto the portrait's person (from the upper-body
    joints both show), then the portrait and poses are fitted to the model's frame (the largest
    centred crop of its aspect ratio).

    [bold]Examples[/bold]

      posecast teacher me.png --poses talk.npz -o me_talking.mp4 --model teacher/

      posecast teacher me.png --driving-video talk.mp4 --audio talk.mp4 -o out.mp4 --model teacher/
    """
    import torch

    from posecast.media import load_audio, load_portrait, write_mp4
    from posecast.pose.dwpose import whole_video_alignment
    from posecast.pose.extract import extract_image, extract_video
    from posecast.pose.framing import retarget
    from posecast.pose.keypoints import Keypoints, resample

    if align not in (None, "upper-body", "whole-video"):
        raise UsageError(f"--align {align}: choose upper-body or whole-video")
    if (poses is None) == (driving_video is None):
        raise UsageError("give exactly one of --poses POSES.npz or --driving-video VIDEO")
    check_revision(revision, model, "--model")
    require_output(output, overwrite, (".mp4",), inputs=(audio, driving_video))
    torch_device = pick_device(device)
    clip = None if audio is None else load_audio(audio, on_warning=warn)
    if poses is not None:  # with audio, only the frames it lasts (+ 1 s for any --fps)
        driving = Keypoints.load(poses, seconds=None if clip is None else clip.duration + 1.0)
    else:
        driving = extract_video(driving_video, smooth=True, allow_missing=allow_missing)
    image = load_portrait(portrait)
    portrait_keypoints = extract_image(image, allow_missing=allow_missing, source=str(portrait),
                                       on_note=warn)

    from posecast.families import load_teacher

    if model is None:
        from posecast.assets import starter_teacher

        model = str(starter_teacher())
    if attention not in (None, "dense", "input_aware"):
        raise UsageError(f"--attention {attention}: choose dense or input_aware")
    sampler = load_teacher(model, torch_device, revision)
    if attention is not None:
        sampler.set_attention(attention, k_frames)
    changes = {}
    for item in recipe or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--recipe {item}: give KEY=VALUE, e.g. window=16")
        changes[key.strip()] = value.strip()
    sampler.configure(changes)
    if size is not None:
        sampler.resize(*parse_size(size, sampler.size_multiple))
    else:  # the frame turned to the portrait (MimicMotion's is upright or lying)
        sampler.orient(*image.shape[:2])
    fps = fps or sampler.frame_rate(driving.fps)
    frames = math.ceil(round(clip.duration * fps, 6)) if clip is not None else \
        max(1, round(len(driving) * fps / driving.fps))
    aligned = whole_video_alignment(driving, portrait_keypoints) \
        if (align or sampler.alignment) == "whole-video" else None
    if aligned is None:  # upper-body, or too few joints for the whole-video fit
        aligned = retarget(driving, portrait_keypoints)
    driving = resample(aligned, fps, frames)
    steps = steps or sampler.default_steps
    cfg = sampler.default_cfg if cfg is None else cfg
    started = time.perf_counter()
    with progress_bar("model calls") as bar:
        task = bar.add_task("denoising", total=sampler.model_calls(frames, steps, cfg))
        video = sampler.frames(image, driving, portrait_keypoints, steps, cfg, seed,
                               on_evaluation=lambda: bar.advance(task))
        try:
            first = next(video)  # all frames are denoised together; decoding then streams
        except torch.cuda.OutOfMemoryError:
            raise PosecastError(f"out of GPU memory while sampling; {sampler.memory_hint()}"
                                ) from None
    with write_mp4(output, fps=fps, audio=clip) as mp4:
        for frame in itertools.chain([first], video):
            mp4.write(frame)
    elapsed = time.perf_counter() - started
    print_result(f"wrote {output}: {frames} frames ({frames / fps:.2f} s) at "
                 f"{sampler.width}x{sampler.height}, {steps} steps, CFG {cfg:g}, in "
                 f"{elapsed:.1f} s ({frames / elapsed:.2f} frames/s)",
                 {"model": model, "revision": revision, "seed": seed,
                  "size": f"{sampler.width}x{sampler.height}", "steps": steps, "cfg": cfg,
                  "fps": fps, "frames": frames, "seconds": round(frames / fps, 3),
                  "elapsed": round(elapsed, 3)}, json_summary, outputs=[output])
