"""The MimicMotion family (this folder): SVD's UNet with MimicMotion's pose network, imported
from its public weights (importer.py), sampled as a teacher (teacher.py, sampling.py),
fine-tuned (train.py), distilled into its causal student (student.py, causal.py, distill.py),
behind the Family interface of posecast/families.py."""

from __future__ import annotations

from pathlib import Path

import torch

from posecast.errors import InputError, UsageError
from posecast.mimicmotion.bench import UNETS, render_bench_parts
from posecast.mimicmotion.distill import mimicmotion_run, student_settings
from posecast.mimicmotion.model import COMPONENTS, missing_component, read_config
from posecast.mimicmotion.student import MimicMotionStudent, is_student_folder, load_student
from posecast.mimicmotion.teacher import MimicMotionFamilyTeacher, load_family_teacher
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

    def bench_parts(self, folder, teacher, preset, size, steps, attention, backend, device):
        return render_bench_parts(folder, teacher, preset, size, steps, attention, backend,
                                  device)


FAMILY = MimicMotionFamily()
