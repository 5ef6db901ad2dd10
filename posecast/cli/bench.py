"""`posecast bench …`: speed benchmarks that print a table."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from posecast.cli.devices import parse_size, pick_device
from posecast.cli.options import Device
from posecast.cli.ui import console

bench_app = typer.Typer(help="Speed benchmarks (random weights; I/O excluded).",
                        no_args_is_help=True)


@bench_app.command("teacher")
def bench_teacher(
    preset: Annotated[str, typer.Option(help="tiny, small or base.")] = "base",
    size: Annotated[str | None, typer.Option(help="WxH in pixels (default: the preset's).")]
    = None,
    steps: Annotated[int, typer.Option(help="Denoising steps per video.")] = 25,
    cfg: Annotated[float, typer.Option(help="Guidance scale (1 = one model call per step).")]
    = 2.0,
    fast_decode: Annotated[bool, typer.Option(
        help="Decode with the tiny fast decoder instead of the full VAE.")] = False,
    repeats: Annotated[int, typer.Option(help="Timed repetitions after one warm-up.", min=1)] = 3,
    device: Device = "auto",
) -> None:
    """Time the teacher: ms per denoising step, decode ms per frame, FPS.

    [bold]Example[/bold]

      posecast bench teacher --preset base --size 512x512 --steps 25 --cfg 2
    """
    from posecast.bench.teacher import time_teacher
    from posecast.config import preset as make_preset

    config = make_preset(preset)
    if size is not None:
        height, width = parse_size(size, config.codec.downsample * config.patch_size)
        config = config.replace(height=height, width=width)
    timing = time_teacher(config, steps, cfg, pick_device(device), repeats, fast_decode)
    table = Table(title=f"teacher · {preset} · {config.width}x{config.height} · {steps} steps · "
                  f"CFG {cfg:g} · {timing.device}")
    for column in ("params", "frames", "tokens", "ms / step", "decode ms / frame", "FPS",
                   "peak GB"):
        table.add_column(column, justify="right")
    table.add_row(f"{timing.parameters / 1e6:.1f} M", str(timing.frames), str(timing.tokens),
                  f"{timing.step_ms:.1f}", f"{timing.decode_ms_per_frame:.2f}",
                  f"{timing.fps:.3f}",
                  "-" if timing.peak_memory_gb is None else f"{timing.peak_memory_gb:.1f}")
    console.print(table)


@bench_app.command("attention")
def bench_attention(
    poses: Annotated[str | None, typer.Option(
        help="Keypoints (.npz) the masks come from (default: the bundled example's).")] = None,
    frames: Annotated[int, typer.Option(help="Frames per window.")] = 16,
    grids: Annotated[str, typer.Option(
        help="Token grid sides, comma-separated (32 → 1,024 tokens per frame).")] = "32,48,96",
    k_frames: Annotated[str, typer.Option(help="K values, comma-separated.")] = "1,2,4,8",
    heads: Annotated[int, typer.Option(help="Attention heads.")] = 12,
    head_dim: Annotated[int, typer.Option(help="Channels per head.")] = 128,
    block_size: Annotated[int, typer.Option(help="Layout block size (64 or 128).")] = 128,
    repeats: Annotated[int, typer.Option(help="Timed repetitions after one warm-up.", min=1)]
    = 10,
    backward: Annotated[bool, typer.Option(help="Also time forward + backward.")] = True,
    device: Device = "auto",
) -> None:
    """Dense SDPA against input-aware sparse attention (flex on CUDA, gather on CPU).

    [bold]Example[/bold] (on a GPU)

      posecast bench attention --grids 32,48,96 --k-frames 1,2,4,8
    """
    from pathlib import Path

    from posecast.bench.attention import time_attention
    from posecast.pose.keypoints import Keypoints

    source = Path(poses) if poses else Path(__file__).resolve().parents[2] / "examples" / \
        "astronaut_poses.npz"
    keypoints = Keypoints.load(source)
    torch_device = pick_device(device)
    table = Table(title=f"attention · {frames} frames · {heads}×{head_dim} · blocks of "
                  f"{block_size} · {torch_device}")
    for column in ("tokens", "K", "density", "blocks kept", "dense fwd ms", "sparse fwd ms",
                   "fwd ×", "dense f+b ms", "sparse f+b ms", "f+b ×", "max err"):
        table.add_column(column, justify="right")
    for grid in (int(g) for g in grids.split(",")):
        for k in (int(k) for k in k_frames.split(",")):
            t = time_attention(keypoints, frames, grid, k, heads, head_dim, torch_device,
                               block_size, repeats, backward)
            table.add_row(
                str(t.tokens), str(k), f"{t.density:.3f}", f"{t.block_density:.3f}",
                f"{t.dense_forward_ms:.2f}", f"{t.sparse_forward_ms:.2f}",
                f"{t.dense_forward_ms / t.sparse_forward_ms:.2f}",
                "-" if t.dense_backward_ms is None else f"{t.dense_backward_ms:.2f}",
                "-" if t.sparse_backward_ms is None else f"{t.sparse_backward_ms:.2f}",
                "-" if t.sparse_backward_ms is None else
                f"{t.dense_backward_ms / t.sparse_backward_ms:.2f}", f"{t.max_error:.1e}")
    console.print(table)
