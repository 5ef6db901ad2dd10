"""The MimicMotion family (this folder): SVD's UNet with MimicMotion's pose network, imported
from its public weights (importer.py), sampled as a teacher (teacher.py, sampling.py),
fine-tuned (train.py), distilled into its causal student (student.py, causal.py, distill.py),
behind the Family interface of posecast/families.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from posecast.errors import InputError, UsageError
from posecast.families import TrainingOptions
from posecast.mimicmotion.bench import UNETS, render_bench_parts, teacher_bench
from posecast.mimicmotion.distill import mimicmotion_run, student_settings
from posecast.mimicmotion.model import COMPONENTS, missing_component, read_config
from posecast.mimicmotion.student import MimicMotionStudent, is_student_folder, load_student
from posecast.mimicmotion.teacher import MimicMotionFamilyTeacher, load_family_teacher
from posecast.mimicmotion.train import FineTuneConfig, fine_tune
from posecast.train.distill import DistillConfig, StartRun


class MimicMotionFamily:
    name = "mimicmotion"
    licence = "other"  # MimicMotion's and SVD's own terms
    presets = tuple(UNETS)

    def size_multiple(self, folder: Path) -> int:
        return MimicMotionFamilyTeacher.size_multiple

    def load_teacher(self, folder: Path, device: torch.device) -> MimicMotionFamilyTeacher:
        if is_student_folder(folder):
            raise UsageError(f"{folder}: a causal MimicMotion student, not a teacher; render "
                             "it with `posecast render --model`, or give the teacher it came "
                             "from")
        return load_family_teacher(folder, device)

    def load_student(self, folder: Path, device: torch.device, size: tuple[int, int] | None,
                     steps: int | None) -> MimicMotionStudent:
        return load_student(folder, device, size=size, steps=steps)

    def distillation(self, teacher: Path, settings: DistillConfig, resume: bool,
                     fast_decoder: Path | None) -> StartRun:
        if "student" in read_config(teacher):
            raise UsageError(f"--teacher {teacher}: a student folder; give the teacher it was "
                             "distilled from")
        student_settings(teacher, settings)  # a one-line error for a window that cannot be
        if fast_decoder is not None and not (fast_decoder / "config.json").is_file():
            raise UsageError(f"--fast-decoder {fast_decoder}: not an AutoencoderTiny folder "
                             "(no config.json)")
        return mimicmotion_run(teacher, fast_decoder)

    def model_files(self, folder: Path) -> list[str]:
        missing = missing_component(folder)
        if missing:
            raise InputError(f"{folder}: the MimicMotion folder lacks {missing}")
        return sorted(str(path.relative_to(folder)) for name in COMPONENTS
                      for path in (folder / name).rglob("*") if path.is_file())

    def training(self, init_from: Path | None, options: TrainingOptions) -> FineTuning:
        """SVD's objective from `init_from` (or, resuming, the folder the run started from)."""
        settings = FineTuneConfig(
            max_steps=options.max_steps, batch_size=options.batch_size, frames=options.frames,
            learning_rate=1e-5 if options.learning_rate is None else options.learning_rate,
            checkpoint_every=options.checkpoint_every,
            gradient_checkpointing=options.gradient_checkpointing, seed=options.seed,
            attention=options.attention, k_frames=options.k_frames,
            region_alphas=options.region_alphas, fsdp=options.fsdp)
        return FineTuning(init_from, settings)

    def bench_teacher(self, preset, size, steps, cfg, frames, attention, repeats, fast_decode,
                      device):
        return teacher_bench(preset, size, steps, cfg, frames, attention, repeats, device)

    def bench_parts(self, folder, teacher, preset, size, steps, attention, backend, device):
        return render_bench_parts(folder, teacher, preset, size, steps, attention, backend,
                                  device)


@dataclass
class FineTuning:
    init_from: Path | None
    settings: FineTuneConfig
    task = "fine-tuning"
    result = "the fine-tuned network and SVD's components"

    @property
    def memory_hint(self) -> str:
        return (f"windows of {self.settings.frames} frames at batch size "
                f"{self.settings.batch_size}: lower --frames or --batch-size, or add "
                "--gradient-checkpointing")

    def run(self, dataset, out, resume, device, on_step, on_message) -> Path:
        return fine_tune(dataset, out, None if self.init_from is None else str(self.init_from),
                         self.settings, resume=resume, device=device, on_step=on_step,
                         on_message=on_message)


FAMILY = MimicMotionFamily()
