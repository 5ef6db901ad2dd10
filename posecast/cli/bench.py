"""`posecast bench …`: speed benchmarks that print a table."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from posecast.cli.options import (
    Device,
    JsonSummary,
    check_revision,
    in_panel,
    panel_option,
    revision_option,
)
from posecast.cli.ui import console, err_console, print_json, progress_bar
from posecast.config import parse_size
from posecast.devices import pick_device
from posecast.errors import UsageError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"  # the checkout's bundled inputs

bench_app = typer.Typer(help="Speed benchmarks (random weights; I/O excluded).",
                        no_args_is_help=True)


def whole_numbers(text: str, flag: str, low: int) -> list[int]:
    """"1,2,4" → [1, 2, 4], each at least `low`, or one line naming the flag."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < low:
        raise UsageError(f"{flag} {text}: give whole numbers of at least {low}, comma-separated")
    return values


@bench_app.command("teacher")
def bench_teacher(
    preset: Annotated[str, typer.Option(
        help="tiny, mini, small, base, or mimicmotion (the paper's teacher at real size).")]
    = "small",
    size: Annotated[str | None, typer.Option(help="WxH in pixels \\[default: the preset's].")]
    = None,
    frames: Annotated[str, typer.Option(
        help="mimicmotion: frames per window, comma-separated.")] = "16,72",
    attention: Annotated[str, typer.Option(
        help="mimicmotion: dense and/or input_aware (masks from the bundled example's "
        "poses), comma-separated.")] = "dense,input_aware",
    steps: Annotated[int, typer.Option(help="Denoising steps per video.", min=1, max=1000)] = 25,
    cfg: Annotated[float, typer.Option(help="Guidance scale (1 = one model call per step).",
                                       min=0.0, max=100.0)] = 2.0,
    fast_decode: Annotated[bool, typer.Option(
        "--fast-decode", help="Decode with the tiny fast decoder instead of the full VAE.")]
    = False,
    repeats: Annotated[int, typer.Option(help="Timed repetitions after one warm-up.", min=1)] = 3,
    json_summary: JsonSummary = False,
    device: Device = "auto",
) -> None:
    """Time the teacher: ms per denoising step, decode ms per frame, FPS.

    --preset mimicmotion: the paper's teacher (SVD's UNet + MimicMotion's pose network) at
    real size, random weights built on the meta device, for windows of --frames (default 16
    and 72) at 576×1024 (--size), denoising only, CFG's branches as one batch.

    [bold]Examples[/bold]

      posecast bench teacher --preset base --size 512x512 --steps 25 --cfg 2

      posecast bench teacher --preset mimicmotion --frames 16,72      (on a GPU)
    """
    from posecast.families import family_with_preset

    family = family_with_preset(preset)
    result = family.bench_teacher(preset, size, steps, cfg, whole_numbers(frames, "--frames", 1),
                                  attention.split(","), repeats, fast_decode,
                                  pick_device(device))
    table = Table(title=result.title)
    for column in result.rows[0]:
        table.add_column(column, justify="right")
    for row in result.rows:
        table.add_row(*row.values())
    _print_table(table, result.summary, json_summary)


def _print_table(table: Table, summary: dict, as_json: bool, ok: bool = True) -> None:
    """The table on stdout, or with --json `summary` (ui.json_summary) on stdout and the table
    on stderr."""
    if as_json:
        err_console.print(table)
        print_json(summary, ok=ok)
    else:
        console.print(table)


@bench_app.command("attention")
def bench_attention(
    poses: Annotated[str | None, typer.Option(
        help="Keypoints (.npz) the masks come from \\[default: the bundled example's].")] = None,
    frames: Annotated[int, typer.Option(help="Frames per window.", min=2)] = 16,
    grids: Annotated[str, typer.Option(
        help="Token grid sides, comma-separated (32 → 1,024 tokens per frame).")] = "32,48,96",
    k_frames: Annotated[str, typer.Option(help="K values, comma-separated.")] = "1,2,4,8",
    heads: Annotated[int, typer.Option(help="Attention heads.")] = 12,
    head_dim: Annotated[int, typer.Option(help="Channels per head.")] = 128,
    block_size: Annotated[int, typer.Option(
        help="Block size of the flex tables: a multiple of 16 (128 on CUDA, its kernel "
        "tiles).")] = 128,
    repeats: Annotated[int, typer.Option(help="Timed repetitions after one warm-up.", min=1)]
    = 10,
    forward_only: Annotated[bool, typer.Option(
        "--forward-only", help="Time the forward pass only, not forward + backward.")] = False,
    attention_backend: Annotated[str, typer.Option(
        help="The sparse backend to time: auto (flex on CUDA, gather on the CPU), gather, "
        "flex, xformers or dense.")] = "auto",
    check: Annotated[bool, typer.Option(
        "--check", help="Instead of timing: run every backend available here (dense, gather, "
        "flex compiled and eager, xformers when installed) on random and pose-derived masks, whole "
        "windows and cached chunks, forward and backward, against an exact float64 oracle; "
        "exit 1 if any differs beyond tolerance.")] = False,
    json_output: JsonSummary = False,
    device: Device = "auto",
) -> None:
    """Dense SDPA against input-aware sparse attention, or (--check) each backend's accuracy.

    With --check, every backend is compared against an exact oracle.

    [bold]Examples[/bold]

      posecast bench attention --grids 32,48,96 --k-frames 1,2,4,8     (on a GPU)

      posecast bench attention --check --json
    """
    from posecast.bench.attention import check_backends, time_attention
    from posecast.pose.keypoints import Keypoints

    for flag, value in (("--frames", frames), ("--heads", heads), ("--head-dim", head_dim)):
        if value < 1:  # a traceback from torch otherwise, after the first timings
            raise UsageError(f"{flag} {value}: give a whole number of at least 1")
    if block_size < 16 or block_size % 16:  # FlexAttention's tiles
        raise UsageError(f"--block-size {block_size}: give a multiple of 16 (128 on CUDA)")
    grid_sides, k_values = whole_numbers(grids, "--grids", 1), whole_numbers(k_frames,
                                                                           "--k-frames", 0)
    source = Path(poses) if poses else EXAMPLES / "astronaut_poses.npz"
    keypoints = Keypoints.load(source)
    torch_device = pick_device(device)
    if check:
        with progress_bar("checks") as bar:
            task = bar.add_task("checking", total=None)
            cases = check_backends(keypoints, torch_device, on_variant=lambda done, total:
                                   bar.update(task, completed=done, total=total))
        ok = all(case.ok for case in cases)
        table = Table(title=f"attention backends against the oracle · {torch_device}")
        for column in ("backend", "mode", "queries", "direction", "mask", "max err", "ok"):
            table.add_column(column, justify="right")
        for case in cases:
            table.add_row(case.backend, case.mode, case.queries, case.direction, case.mask,
                          f"{case.max_err:.1e}", "yes" if case.ok else "[red]NO[/red]")
        _print_table(table, {"device": str(torch_device),
                             "cases": [case.as_json() for case in cases]}, json_output, ok)
        if not ok:
            raise typer.Exit(1)
        return
    table = Table(title=f"attention · {frames} frames · {heads}×{head_dim} · blocks of "
                  f"{block_size} · {torch_device}")
    for column in ("tokens", "K", "density", "blocks kept", "dense fwd ms", "sparse fwd ms",
                   "fwd ×", "dense f+b ms", "sparse f+b ms", "f+b ×", "max err"):
        table.add_column(column, justify="right")
    timings = []
    for grid in grid_sides:
        for k in k_values:
            t = time_attention(keypoints, frames, grid, k, heads, head_dim, torch_device,
                               block_size, repeats, not forward_only,
                               attention_backend)
            table.add_row(
                str(t.tokens), str(k), f"{t.density:.3f}", f"{t.block_density:.3f}",
                f"{t.dense_forward_ms:.2f}", f"{t.sparse_forward_ms:.2f}",
                f"{t.dense_forward_ms / t.sparse_forward_ms:.2f}",
                "-" if t.dense_backward_ms is None else f"{t.dense_backward_ms:.2f}",
                "-" if t.sparse_backward_ms is None else f"{t.sparse_backward_ms:.2f}",
                "-" if t.sparse_backward_ms is None else
                f"{t.dense_backward_ms / t.sparse_backward_ms:.2f}", f"{t.max_error:.1e}")
            timings.append(dataclasses.asdict(t))
    _print_table(table, {"device": str(torch_device), "frames": frames, "heads": heads,
                         "head_dim": head_dim, "block_size": block_size, "timings": timings},
                 json_output)


@bench_app.command("render")
def bench_render(
    model: Annotated[str | None, panel_option(
        "Models", "A student model folder or repo id \\[default: random weights of --preset].")]
    = None,
    teacher: Annotated[str | None, panel_option(
        "Models", "The teacher to compare \\[default: random weights of the student's "
        "architecture as a teacher].")] = None,
    revision: in_panel(revision_option("--model"), "Models") = None,
    teacher_revision: in_panel(revision_option("--teacher", "--teacher-revision"), "Models")
    = None,
    preset: Annotated[str, panel_option(
        "Models", "With random weights: tiny, mini, small or base.")] = "small",
    seconds: Annotated[float, panel_option("Workload", "Seconds of video.", min=0.1,
                                           max=600.0)] = 8.0,
    fps: Annotated[float, panel_option("Workload", "Frames per second.", min=1.0,
                                       max=120.0)] = 25.0,
    steps: Annotated[int | None, panel_option(
        "Workload", "Student steps \\[default: the model's].", min=1, max=8)] = None,
    teacher_steps: Annotated[int, panel_option("Workload", "Teacher steps.", min=1,
                                               max=1000)] = 25,
    cfg: Annotated[float, panel_option("Workload", "Teacher guidance scale.", min=0.0,
                                       max=100.0)] = 2.0,
    skip_teacher: Annotated[bool, panel_option("Run", "Time the student only.",
                                               "--skip-teacher")] = False,
    student_attention: Annotated[str, panel_option(
        "Models", "With random weights: the student's attention, input_aware or dense.")]
    = "input_aware",
    attention_backend: Annotated[str | None, panel_option(
        "Models", "The student's input-aware backend: flex, gather, dense or xformers "
        "\\[default: the model's, auto = flex on CUDA, gather on the CPU].")] = None,
    compile: Annotated[bool | None, panel_option(
        "Run", "Compile the student's chunk step (CUDA graphs on CUDA) \\[default: on CUDA, "
        "with dense attention or flex].", "--compile/--no-compile")] = None,
    json_output: Annotated[bool, panel_option(
        "Run", "Print one JSON object on stdout instead of the table.", "--json")] = False,
    io: Annotated[bool | None, panel_option(
        "Run", "Also time one student run writing an MP4 with the audio \\[default: when an "
        "ffmpeg is found].", "--io/--no-io")] = None,
    portrait_keypoints_file: Annotated[Path | None, panel_option(
        "Workload", "The portrait's keypoints (.npz, one frame), extracted once with `posecast "
        "keypoints`, so the bench needs no face detector \\[default: the "
        "bundled example's].", "--portrait-keypoints")] = None,
    profile: Annotated[Path | None, panel_option(
        "Run", "Also profile one student run and write the operator table (where the time "
        "goes) to this text file.")] = None,
    size: Annotated[str | None, panel_option(
        "Models", "MimicMotion students: WIDTHxHEIGHT \\[default: the model's; random weights "
        "576x1024].", show_default=False)] = None,
    device: in_panel(Device, "Run") = "auto",
) -> None:
    """The teacher against the student: FPS, their ratio, the student's first-frame latency.

    Both run on the same portrait, poses and audio: FPS of denoising, decoding and in total
    (I/O excluded and included), their ratio, the student's time to first frame. The student
    decodes with the fast decoder when its codec has one.

    [bold]Examples[/bold]

      posecast bench render --preset base --seconds 8           (random weights, a GPU)

      posecast bench render --model student/ --teacher teacher/ --seconds 8

      posecast bench render --preset mimicmotion --size 576x1024   (the paper's student)
    """
    import torch

    from posecast.bench.counters import fps_at_half_peak, peak_tflops
    from posecast.bench.render import time_student_render
    from posecast.families import family_for, family_with_preset
    from posecast.hub import resolve_folder
    from posecast.media.ffmpeg import ffmpeg_available
    from posecast.pose.framing import crop_resize, fit_keypoints
    from posecast.streaming.compiling import compiles_by_default

    torch_device = pick_device(device)
    check_revision(revision, model, "--model")
    check_revision(teacher_revision, teacher, "--teacher")
    folder = None if model is None else resolve_folder(model, revision)
    family = family_for(folder) if folder is not None else family_with_preset(preset)
    shape = None
    if size is not None:
        multiple = family.size_multiple(folder) if folder is not None else 64
        shape = parse_size(size, multiple)
    teacher_folder = None if teacher is None else resolve_folder(teacher, teacher_revision)
    parts = family.bench_parts(folder, teacher_folder, preset, shape, steps, student_attention,
                               attention_backend, torch_device)
    student = parts.student
    clip, image, keypoints, poses = _bench_inputs(seconds, fps, portrait_keypoints_file)
    box = student.frame(image, keypoints)
    fitted = fit_keypoints(poses, box)
    reference = crop_resize(image, box)
    attention = "input_aware" if student.grids() else "dense"
    if compile is None:
        compile = compiles_by_default(attention, student.attention_backend, torch_device)
    timing, counts = time_student_render(student, parts.conditions(reference), fitted, clip, fps,
                                         compile=compile, profile=profile,
                                         with_io=ffmpeg_available() if io is None else io)
    rows = [timing]
    if not skip_teacher:
        rows.insert(0, parts.time_teacher(fitted, poses, reference, teacher_steps, cfg))
    device_name = torch.cuda.get_device_name(torch_device) if torch_device.type == "cuda" \
        else "cpu"
    size_text = f"{student.width}x{student.height}"
    summary = {"fps": timing.fps(timing.total_s), "denoise_fps": timing.fps(timing.denoise_s),
               "decode_fps": timing.fps(timing.decode_s),
               "fps_with_io": None if timing.with_io_s is None else timing.fps(timing.with_io_s),
               "first_frame_s": timing.first_frame_s, "frames": timing.frames,
               "steps": len(student.levels()), "attention": attention,
               "attention_backend": parts.backend, "size": size_text, "device": device_name,
               "family": family.name, "compiled": compile, **parts.details,
               **dataclasses.asdict(counts), "flops_per_frame": timing.flops_per_frame,
               "peak_tflops": peak_tflops(device_name),  # None: the CPU, or an unknown card
               "fps_at_half_peak": fps_at_half_peak(timing.flops_per_frame, device_name)}
    if len(rows) == 2:
        teacher_row = rows[0]
        teacher_fps = teacher_row.fps(teacher_row.total_s)
        summary = {"student": summary, "teacher": {
            "fps": teacher_fps, "denoise_fps": teacher_row.fps(teacher_row.denoise_s),
            "decode_fps": None if teacher_row.decode_s is None
            else teacher_row.fps(teacher_row.decode_s), "steps": teacher_steps, "cfg": cfg,
            "flops_per_frame": teacher_row.flops_per_frame,
            "fps_at_half_peak": fps_at_half_peak(teacher_row.flops_per_frame, device_name)},
            "teacher_fps": teacher_fps, "ratio": summary["fps"] / teacher_fps,
            "flops_ratio": teacher_row.flops_per_frame / timing.flops_per_frame}
    if json_output:
        print_json(summary, outputs=[profile])
        return
    backend = f" ({parts.backend})" if attention == "input_aware" else ""
    table = Table(title=f"render · {family.name} · {size_text} · {len(fitted)} frames "
                  f"({clip.duration:.1f} s) · student attention {attention}{backend} · "
                  f"{device_name}")
    for column in ("pipeline", "steps", "denoise FPS", "decode FPS", "FPS (no I/O)",
                   "FPS (with I/O)", "first frame s"):
        table.add_column(column, justify="right")
    for row in rows:
        row_steps = f"{teacher_steps}, CFG {cfg:g}" if row.name == "teacher" else \
            str(len(student.levels()))
        table.add_row(row.name, row_steps, f"{row.fps(row.denoise_s):.2f}",
                      "-" if row.decode_s is None else f"{row.fps(row.decode_s):.1f}",
                      f"{row.fps(row.total_s):.2f}",
                      "-" if row.with_io_s is None else f"{row.fps(row.with_io_s):.2f}",
                      "-" if row.first_frame_s is None else f"{row.first_frame_s:.3f}")
    console.print(table)
    console.print(f"student: {counts.chunks} chunks of {counts.passes_per_chunk} passes × "
                  f"{counts.layers} layers, {counts.attention_calls_per_chunk:.0f} attention "
                  f"calls per chunk, {'compiled, ' if compile else ''}{counts.recompiles} "
                  f"recompiles after warm-up; per chunk {counts.syncs_per_chunk:g} reads back "
                  f"and {counts.h2d_copies_per_chunk:g} host→device copies", highlight=False)
    if len(rows) == 2:
        console.print(f"student / teacher (no I/O): {summary['ratio']:.1f}x ({parts.teacher_note})",
                      highlight=False)


def _bench_inputs(seconds: float, fps: float, portrait_keypoints_file: Path | None):
    """The bundled speech repeated to `seconds`, the bundled portrait, its keypoints and the
    built-in motion for the clip (what both families' render benches time)."""
    import numpy as np

    from posecast.media import AudioClip, load_audio, load_image
    from posecast.motion import frame_count, motion_from_speech
    from posecast.pose.keypoints import Keypoints

    speech = load_audio(EXAMPLES / "speech.wav")
    repeats = int(np.ceil(seconds / speech.duration))
    clip = AudioClip(np.tile(speech.samples, repeats)[:int(seconds * speech.sample_rate)],
                     speech.sample_rate)
    keypoints = Keypoints.load(portrait_keypoints_file or EXAMPLES / "astronaut_keypoints.npz")
    poses = motion_from_speech(clip, keypoints, fps)[:frame_count(clip.duration, fps)]
    return clip, load_image(EXAMPLES / "astronaut.png"), keypoints, poses
