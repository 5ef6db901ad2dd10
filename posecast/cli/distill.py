"""`posecast distill`: a few-step causal student from a teacher (DMD + the region loss)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from posecast.cli.options import (
    Device,
    JsonSummary,
    Overwrite,
    check_revision,
    check_seed,
    in_panel,
    panel_option,
    parse_region_alphas,
    revision_option,
)
from posecast.cli.run_folder import prepare_run_folder
from posecast.cli.ui import print_result, progress_bar, warn
from posecast.errors import ConfigError, UsageError
from posecast.json_files import load_json


def _setting(panel: str, help: str, *names: str, **limits):
    """An option whose default is DistillConfig's: None means "not given", so the config file's
    value stands (--help states the default in the text)."""
    return panel_option(panel, help, *names, show_default=False, **limits)


def distill_command(
    dataset: Annotated[Path, typer.Argument(help="Folder of clips (the teacher's training data "
                                            "or like it).", show_default=False)],
    teacher: Annotated[str, _setting("Teacher and output",
                                     "The teacher: a model folder or Hub repo id.")],
    out: Annotated[Path, _setting("Teacher and output", "Output student model folder (also "
                                  "holds checkpoint/, ode_pairs/, train_log.jsonl).", "--output",
                                  "-o")],
    revision: in_panel(revision_option("--teacher"), "Teacher and output") = None,
    config: Annotated[Path | None, panel_option(
        "Teacher and output",
        "JSON file of settings (DistillConfig field names); flags override it.")] = None,
    student_steps: Annotated[int | None, _setting(
        "Student", "Denoising steps of the student, 1-8 \\[default: 4].", "--steps", min=1,
        max=8)] = None,
    chunk: Annotated[int | None, _setting(
        "Student", "Frames generated together; attention is causal across chunks "
        "\\[default: 4].", min=1)] = None,
    window: Annotated[int | None, _setting(
        "Student", "Frames per training rollout = KV-cache context + one chunk; a multiple of "
        "--chunk \\[default: the teacher's window].", min=1)] = None,
    k_frames: Annotated[int | None, _setting(
        "Student", "Pose-similar past frames each frame attends to \\[default: 3].", min=0,
        max=64)]
    = None,
    attention: Annotated[str | None, _setting(
        "Student", "input_aware (the method) or dense (the ablation) \\[default: "
        "input_aware].")] = None,
    init_steps: Annotated[int | None, _setting(
        "ODE initialisation", "ODE-pair regression steps before DMD; 0 skips the "
        "initialisation \\[default: 200].", min=0)] = None,
    ode_pairs: Annotated[int | None, _setting(
        "ODE initialisation", "Teacher trajectory shards (of --batch-size windows) to regress "
        "on \\[default: 32].", min=1)] = None,
    max_steps: Annotated[int | None, _setting(
        "DMD", "DMD generator steps, after the initialisation steps \\[default: 1000; on "
        "--resume, the saved run's].", min=1)] = None,
    region_steps: Annotated[int | None, _setting(
        "Region loss", "Steps on the region loss alone after the DMD steps (no teacher or "
        "critic; the initialisation's optimiser and learning rate) \\[default: 0; on --resume, "
        "the saved run's].", min=0)] = None,
    critic_updates: Annotated[int | None, _setting(
        "DMD", "Critic steps per generator step \\[default: 5].", min=1)] = None,
    batch_size: Annotated[int | None, _setting(
        "Optimisation", "Windows per process per micro-batch \\[default: 2].", min=1)] = None,
    grad_accumulation: Annotated[int | None, _setting(
        "Optimisation", "Micro-batches per optimiser step \\[default: 1].", min=1)] = None,
    learning_rate: Annotated[float | None, _setting(
        "DMD", "Student learning rate in the DMD stage \\[default: 2e-5].")] = None,
    teacher_cfg: Annotated[float | None, _setting(
        "DMD", "CFG of the teacher's score \\[default: the teacher's own].", min=0.0)] = None,
    region_loss_weight: Annotated[float | None, _setting(
        "Region loss", "Weight of the region loss on decoded frames (L1 + SSIM against the "
        "real clip, whole frame plus α_r × each region's mean); 0 turns it off \\[default: "
        "0.25].", min=0.0)] = None,
    region_alpha: Annotated[list[str] | None, _setting(
        "Region loss", "Region weight α_r, as REGION=ALPHA (face, lips, hands, arms; defaults "
        "1, 1, 2, 0.5): the DMD gradient is scaled by 1 + Σ α_r·m_r and the region loss adds "
        "α_r × each region's mean error; repeat the option for several.")] = None,
    perceptual: Annotated[list[str] | None, _setting(
        "Region loss", "A perceptual plug-in, NAME=SOURCE[:WEIGHT] (NAME lpips; SOURCE its "
        "folder or Hub repo id, OWNER/NAME@REVISION for a revision); skipped with a warning "
        "when its weights are unavailable.")] = None,
    fast_decoder: Annotated[Path | None, _setting(
        "MimicMotion", "MimicMotion teachers: an AutoencoderTiny folder for SD latents "
        "(diffusers layout, e.g. a download of madebyollin/taesd) the student renders with; "
        "without it the student decodes with SVD's temporal VAE.")] = None,
    checkpoint_every: Annotated[int | None, _setting(
        "Run", "Steps between checkpoints \\[default: 100].", min=1)] = None,
    sample_every: Annotated[int | None, _setting(
        "Run", "Write OUT/samples/step-N.mp4 (real | student) every N steps; 0 never "
        "\\[default: 0].", min=0)] = None,
    gradient_checkpointing: Annotated[bool | None, _setting(
        "Optimisation", "Recompute activations in the backward pass (less memory).",
        "--gradient-checkpointing")] = None,
    fsdp: Annotated[bool | None, _setting(
        "Optimisation", "Under torchrun: shard the teacher, student and critic across the "
        "processes (FSDP2) for models that do not fit one GPU.", "--fsdp")] = None,
    resume: Annotated[bool, panel_option(
        "Run", "Continue from OUT/checkpoint exactly, with the settings it was saved with; "
        "--max-steps and --region-steps given here change the run's length.", "--resume")] = False,
    seed: Annotated[int | None, _setting("Run", "Random seed \\[default: 0].",
                                         callback=check_seed)] = None,
    device: in_panel(Device, "Run") = "auto",
    json_summary: in_panel(JsonSummary, "Run") = False,
    overwrite: in_panel(Overwrite, "Run") = False,
) -> None:
    """Distil a teacher into a causal few-step student that `posecast render` loads.

    ODE-pair initialisation, then DMD with the input-aware region loss; the output is a model
    folder.

    The teacher may be posecast's own or a MimicMotion folder (`posecast import mimicmotion`,
    fine-tuned with `posecast train`); the student is of the teacher's family.

    The same command runs on many GPUs (gradients averaged across processes):

      torchrun --nproc-per-node 8 -m posecast distill clips/ --teacher teacher/ --output student/

    [bold]Example[/bold]

      posecast distill clips/ --teacher teacher/ --output student/ --steps 4 --chunk 4
    """
    from posecast.devices import pick_device
    from posecast.families import family_for
    from posecast.hub import resolve_folder
    from posecast.train.distill import DistillConfig, resumed_settings, run_distillation
    from posecast.train.region_loss import RegionWeights

    pick_device(device)
    # every flag defaults to None ("not given"), so the config file's value stands unless a flag
    # names another one
    settings = _read_config_file(config) if config is not None else {}
    flags = dict(student_steps=student_steps, chunk=chunk, window=window, k_frames=k_frames,
                 attention=attention, max_steps=max_steps, region_steps=region_steps,
                 init_steps=init_steps,
                 ode_pairs=ode_pairs, critic_updates=critic_updates, batch_size=batch_size,
                 grad_accumulation=grad_accumulation, learning_rate=learning_rate,
                 teacher_cfg=teacher_cfg, region_loss_weight=region_loss_weight,
                 checkpoint_every=checkpoint_every, sample_every=sample_every,
                 gradient_checkpointing=gradient_checkpointing, seed=seed, fsdp=fsdp)
    settings.update({name: value for name, value in flags.items() if value is not None})
    if perceptual:
        settings["perceptual"] = tuple(perceptual)
    if region_alpha:
        alphas = dict(settings.get("region_weights", {}))
        alphas.update(parse_region_alphas(region_alpha))
        settings["region_weights"] = RegionWeights(**alphas)
    try:
        settings = DistillConfig.from_dict(settings)
    except ConfigError as error:  # say where the bad value came from: a flag or the file
        given = {name for name, value in flags.items() if value is not None}
        given |= {"perceptual"} if perceptual else set()
        given |= {"region_weights"} if region_alpha else set()
        name = error.field.split(".")[0]
        flag = "--region-alpha" if name == "region_weights" else f"--{name.replace('_', '-')}"
        raise UsageError(f"{flag if name in given or config is None else config}: {error}"
                         ) from None
    if resume:  # the saved run's settings; only stage lengths given as flags change
        _, settings = resumed_settings(out, max_steps, region_steps)
    # fail on a bad teacher, student shape or setting before touching the output
    check_revision(revision, teacher, "--teacher")
    teacher_folder = resolve_folder(teacher, revision)
    start = family_for(teacher_folder).distillation(teacher_folder, settings, resume,
                                                    fast_decoder)
    prepare_run_folder(out, dataset, resume, overwrite)

    with progress_bar("steps") as bar:
        pairs = bar.add_task("teacher ODE pairs", total=None, visible=False)
        task = bar.add_task("distilling", total=settings.total_steps)

        def on_pairs(done: int, total: int) -> None:
            bar.update(pairs, completed=done, total=total, visible=done < total)

        def on_step(report) -> None:
            losses = " ".join(f"{name} {value:.4g}" for name, value in report.losses.items())
            bar.update(task, completed=report.step, description=f"{report.phase}: {losses} · "
                       f"{report.samples_per_second:.2f} samples/s")

        run_distillation(start, dataset, out, settings, resume=resume, device=device,
                         on_step=on_step,
                on_pairs=on_pairs, source={"teacher": teacher, "teacher_revision": revision},
                on_message=warn)
    print_result(f"student written to {out} (render it with `posecast render --model {out}`; "
                 f"resume state in {out}/checkpoint)",
                 {"checkpoint": str(out / "checkpoint")}, json_summary, outputs=[out])


def _read_config_file(path: Path) -> dict:
    try:
        data = load_json(path)
    except OSError as error:
        raise UsageError(f"{path}: cannot read the config file ({error.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a text file (not UTF-8); give a JSON file of "
                         "settings") from None
    except ValueError as error:  # not JSON, or nested too deeply
        raise UsageError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the config file must hold a JSON object of settings")
    return data
