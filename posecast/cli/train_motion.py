"""`posecast train-motion`: fit the learned speech-to-motion model on talking clips."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from posecast.cli.options import Device, JsonSummary, Overwrite, Seed
from posecast.cli.run_folder import prepare_run_folder
from posecast.cli.ui import print_result, progress_bar, warn
from posecast.errors import ConfigError, UsageError


def train_motion_command(
    dataset: Annotated[Path, typer.Argument(help="Folder of talking clips with audio; keypoints "
                                            "are cached in DATASET/.posecast-keypoints.",
                                            show_default=False)],
    out: Annotated[Path, typer.Option("--output", "-o", help="Output motion model folder.",
                                      show_default=False)],
    max_steps: Annotated[int, typer.Option(help="Optimiser steps.", min=1)] = 2000,
    batch_size: Annotated[int, typer.Option(help="Stretches of audio per step.", min=1)] = 8,
    window_seconds: Annotated[float, typer.Option(help="Seconds per stretch.", min=0.2)] = 4.0,
    learning_rate: Annotated[float, typer.Option(help="AdamW learning rate (cosine decay).")]
    = 1e-3,
    seed: Seed = 0,
    device: Device = "auto",
    json_summary: JsonSummary = False,
    overwrite: Overwrite = False,
) -> None:
    """Train the learned motion model (log-mel audio → keypoint offsets) for `--motion`.

    It learns from clips whose keypoints show a face in every frame. Use it with
    `--motion OUT` in `render`/`motion`.

    [bold]Example[/bold]

      posecast train-motion clips/ --output motion/ --max-steps 2000
    """
    from posecast.config import TRAIN_RULES
    from posecast.devices import pick_device
    from posecast.motion.learned import MotionConfig, train_motion
    from posecast.validation import check_fields

    try:  # torch's own check would be a traceback, after the output folder was prepared
        check_fields({"learning_rate": learning_rate}, TRAIN_RULES)
    except ConfigError as error:
        raise UsageError(f"--learning-rate: {error}") from None
    torch_device = pick_device(device)
    prepare_run_folder(out, dataset, resume=False, overwrite=overwrite, can_resume=False)
    config = MotionConfig()
    with progress_bar("steps") as bar:
        task = bar.add_task("training motion", total=max_steps)
        train_motion(dataset, out, max_steps, batch_size,
                     max(1, round(window_seconds * config.fps)), learning_rate, seed,
                     torch_device, config=config,
                     on_step=lambda step, loss: bar.update(task, completed=step,
                                                           description=f"loss {loss:.5f}"),
                     on_message=warn)
    print_result(f"motion model written to {out} (use it with --motion {out})",
                 {}, json_summary, outputs=[out])
