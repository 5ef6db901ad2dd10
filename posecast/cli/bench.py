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
    repeats: Annotated[int, typer.Option(help="Timed repetitions after one warm-up.")] = 3,
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
