"""`posecast train`: fit a teacher on a folder of talking clips."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from posecast.cli.options import (
    Device,
    JsonSummary,
    Overwrite,
    Seed,
    check_revision,
    in_panel,
    panel_option,
    parse_region_alphas,
    revision_option,
)
from posecast.cli.run_folder import prepare_run_folder
from posecast.cli.ui import print_result, progress_bar, warn
from posecast.errors import PosecastError, UsageError


def train_command(
    dataset: Annotated[Path, typer.Argument(help="Folder of clips (videos with audio); keypoints "
                                            "are cached in DATASET/.posecast-keypoints.",
                                            show_default=False)],
    out: Annotated[Path, panel_option(
        "Output", "Output model folder (also holds the checkpoint and train_log.jsonl).",
        "--output", "-o", show_default=False)],
    preset: Annotated[str, panel_option(
        "Model", "Model size: tiny, mini (the bundled starter), small or base.")] = "small",
    max_steps: Annotated[int, panel_option("Training", "Total optimiser steps.", min=1)] = 2000,
    batch_size: Annotated[int, panel_option("Training", "Windows per process per step.",
                                            min=1)] = 4,
    learning_rate: Annotated[float | None, panel_option(
        "Training", "AdamW learning rate \\[default: 3e-4; 1e-5 when fine-tuning MimicMotion].",
        show_default=False)] = None,
    frames: Annotated[int, panel_option(
        "MimicMotion", "MimicMotion: frames per training window, the reference frame first.",
        min=2)] = 16,
    checkpoint_every: Annotated[int, panel_option("Output", "Steps between checkpoints.",
                                                  min=1)] = 250,
    gradient_checkpointing: Annotated[bool, panel_option(
        "Training", "Recompute activations in the backward pass (less memory, ~30 % slower).",
        "--gradient-checkpointing")]
    = False,
    resume: Annotated[bool, panel_option("Output", "Continue from OUT/checkpoint exactly.",
                                                     "--resume")]
    = False,
    attention: Annotated[str, panel_option(
        "Model", "dense, or input_aware (pose-guided sparse attention, METHOD.md).")] = "dense",
    k_frames: Annotated[int, panel_option(
        "Model", "input_aware: pose-similar past frames each frame attends to.", min=0,
        max=64)] = 3,
    init_from: Annotated[str | None, panel_option(
        "Model", "Start from a trained model (folder or repo id), e.g. to fine-tune a dense "
        "teacher with --attention input_aware; a MimicMotion folder (from `posecast import "
        "mimicmotion`) is fine-tuned with SVD's objective (the paper's stage 1).")] = None,
    revision: in_panel(revision_option("--init-from"), "Model") = None,
    region_alpha: Annotated[list[str] | None, panel_option(
        "Training", "Weigh the loss by w = 1 + Σ α_r·m_r over the keypoints' regions, as "
        "REGION=ALPHA (face, lips, hands, arms; unnamed regions 0); repeat for several. On small "
        "frames the mouth is a few pixels, which an unweighted loss barely counts.",
        show_default=False)] = None,
    fsdp: Annotated[bool, panel_option(
        "Training", "Under torchrun: shard the network (and a DiT's EMA) across the processes "
        "(FSDP2) instead of copying it to each.", "--fsdp")] = False,
    seed: in_panel(Seed, "Training") = 0,
    device: in_panel(Device, "Training") = "auto",
    json_summary: in_panel(JsonSummary, "Output") = False,
    overwrite: in_panel(Overwrite, "Output") = False,
) -> None:
    """Train a pose-conditioned video denoiser (the teacher) with flow matching.

    The same command runs on many GPUs:

      torchrun --nproc-per-node 8 -m posecast train clips/ --output teacher/

    [bold]Example[/bold]

      posecast train clips/ --preset small --output teacher/ --max-steps 2000

      posecast train clips/ --init-from teacher/ --attention input_aware --output teacher_sparse/

      posecast train clips/ --init-from teacher/ --region-alpha lips=16 --output teacher_lips/
    """
    import torch

    from posecast.devices import pick_device
    from posecast.families import TrainingOptions, training_family

    pick_device(device)  # a clear error for an unknown or absent device, before any work
    region_alphas = parse_region_alphas(region_alpha or [])
    if attention not in ("dense", "input_aware"):
        raise UsageError(f"--attention {attention}: use dense or input_aware")
    check_revision(revision, init_from, "--init-from")
    family, init_folder = training_family(init_from, preset, out, resume, revision)
    training = family.training(init_folder, TrainingOptions(  # checked before `out` is touched
        preset=preset, max_steps=max_steps, batch_size=batch_size, learning_rate=learning_rate,
        checkpoint_every=checkpoint_every, gradient_checkpointing=gradient_checkpointing,
        seed=seed, attention=attention, k_frames=k_frames, region_alphas=region_alphas,
        fsdp=fsdp, frames=frames, init_from=init_from, init_revision=revision))
    prepare_run_folder(out, dataset, resume, overwrite)
    with progress_bar("steps") as bar:
        task = bar.add_task(training.task, total=max_steps)

        def on_step(report) -> None:
            speed = next((f" · {value:.1f} {name.split('_per_')[0]}/s"
                          for name, value in vars(report).items() if "_per_second" in name), "")
            bar.update(task, completed=report.step,
                       description=f"loss {report.loss:.4f}{speed}")

        try:
            training.run(dataset, out, resume, device, on_step, warn)
        except torch.cuda.OutOfMemoryError:
            raise PosecastError(f"out of GPU memory {training.task}; "
                                f"{training.memory_hint}") from None
    print_result(f"model written to {out} ({training.result}; resume state in "
                 f"{out}/checkpoint)",
                 {"checkpoint": str(out / "checkpoint")}, json_summary, outputs=[out])
