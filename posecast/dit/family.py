"""The DiT family's entry in families.py's registry: what each command asks of it, answered
by the modules beside this one."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from posecast.config import PRESETS
from posecast.dit.pretrained import from_pretrained, load_config
from posecast.errors import UsageError
from posecast.families import TrainingOptions

if TYPE_CHECKING:  # the rest loads with the command that needs it (a lean `posecast train`)
    from posecast.bench.render import RenderBenchParts
    from posecast.bench.teacher import TeacherBench
    from posecast.dit.student import DitStudent
    from posecast.train.distill import DistillConfig, StartRun


@dataclass
class DitTeacher:
    network: object  # posecast.dit.denoiser.Denoiser
    device: torch.device

    config = property(attrgetter("network.config"))
    height = property(attrgetter("config.height"))
    width = property(attrgetter("config.width"))

    @property
    def size_multiple(self) -> int:
        return self.config.codec.downsample * self.config.patch_size

    alignment = "upper-body"
    default_steps = property(attrgetter("config.sampler.steps"))
    default_cfg = property(attrgetter("config.sampler.cfg"))

    def resize(self, height: int, width: int) -> None:
        self.network.config = self.config.replace(height=height, width=width)

    def orient(self, height: int, width: int) -> None:
        """posecast's own models keep the size they were trained at."""

    def frame_rate(self, driving_fps: float) -> float:
        return driving_fps  # trained on clips at their own rate

    def set_attention(self, mode: str, k_frames: int | None) -> None:
        self.network.config = self.config.replace(
            attention=mode, k_frames=self.config.k_frames if k_frames is None else k_frames)

    def configure(self, changes: dict[str, str]) -> None:
        if changes:
            raise UsageError("--recipe sets the sampling of MimicMotion models; for posecast's "
                             "own use --steps, --cfg and --size")

    def memory_hint(self) -> str:
        return f"lower --size (now {self.width}x{self.height})"

    def model_calls(self, frames: int, steps: int, cfg: float) -> int:
        from posecast.dit.sampling import model_evaluations

        config = self.config
        return model_evaluations(frames, steps, cfg, config.sampler.method, config.window,
                                 config.overlap)

    def frames(self, portrait, poses, portrait_keypoints, steps, cfg, seed, on_evaluation=None):
        from posecast.dit.codecs import make_codec
        from posecast.dit.sampling import decode_frames, prepare_conditions, sample_latents

        config = self.config
        conditions = prepare_conditions(portrait, poses, config.height, config.width,
                                        portrait_keypoints)
        codec = make_codec(config.codec, self.device)
        latents = sample_latents(self.network, codec, conditions, steps, cfg, seed,
                                 config.sampler.method, on_evaluation=on_evaluation)
        yield from decode_frames(codec, latents)


class DitFamily:
    name = "dit"
    licence = "apache-2.0"
    presets = tuple(PRESETS)

    def size_multiple(self, folder: Path) -> int:
        config = load_config(str(folder))
        return config.codec.downsample * config.patch_size

    def load_teacher(self, folder: Path, device: torch.device) -> DitTeacher:
        return DitTeacher(from_pretrained(folder, device=device), device)

    def load_student(self, folder: Path, device: torch.device, size: tuple[int, int] | None,
                     steps: int | None) -> DitStudent:
        from posecast.dit.student import load_student

        return load_student(folder, device, size, steps)

    def distillation(self, teacher: Path, settings: DistillConfig, resume: bool,
                     fast_decoder: Path | None) -> StartRun:
        from posecast.dit.distill import dit_run, student_config

        if fast_decoder is not None:
            raise UsageError("--fast-decoder is for MimicMotion teachers; posecast's own "
                             "students decode with their model's codec")
        if not resume:
            student_config(load_config(str(teacher)), settings)  # a one-line error if unfit
        return dit_run(str(teacher))

    def model_files(self, folder: Path) -> list[str]:
        from posecast.weights import check_safetensors_header

        load_config(str(folder))  # a one-line error for a config posecast cannot read
        check_safetensors_header(folder / "model.safetensors")
        return []

    def bench_parts(self, folder: Path | None, teacher: Path | None, preset: str,
                    size: tuple[int, int] | None, steps: int | None, attention: str,
                    backend: str | None, device: torch.device) -> RenderBenchParts:
        """`bench render`'s student (the folder's, or random weights of `preset` as a student
        with `attention`) and its teacher (`teacher`, or random weights of the student's
        architecture), bf16 on CUDA as `render` runs them."""
        from posecast.attention.backends import resolve_backend
        from posecast.bench.render import RenderBenchParts
        from posecast.config import preset as make_preset
        from posecast.dit.bench import bench_codec, time_teacher_render
        from posecast.dit.denoiser import Denoiser
        from posecast.dit.distill import student_config
        from posecast.dit.student import DitStudent, student_timesteps
        from posecast.train.distill import DistillConfig

        if size is not None:
            raise UsageError("--size is for MimicMotion students; posecast's own presets have "
                             "their size")
        if folder is not None:
            model = from_pretrained(folder, device=device)
            if not model.config.is_student:
                raise UsageError(f"{folder}: not a distilled student")
        else:
            model = Denoiser(student_config(make_preset(preset),
                                            DistillConfig(attention=attention)))
        teacher_model = from_pretrained(teacher, device=device) if teacher is not None else \
            Denoiser(make_preset(preset) if folder is None else
                     model.config.replace(chunk=0, attention="dense"))
        if backend is not None:
            model.config = model.config.replace(attention_backend=backend)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        model = model.to(device, dtype).eval()
        teacher_model = teacher_model.to(device, dtype if teacher is None else
                                         torch.float32).eval()
        student = DitStudent(model, student_timesteps(model, steps),
                             bench_codec(model.config, device, True, folder is None))
        teacher_codec = bench_codec(teacher_model.config, device, False, teacher is None)

        def time_teacher(fitted, poses, reference, teacher_steps, cfg):
            pixels = torch.from_numpy(reference).permute(2, 0, 1)[None].float() / 127.5 - 1
            return time_teacher_render(teacher_model, teacher_codec, pixels.to(device), fitted,
                                       teacher_steps, cfg)

        return RenderBenchParts(student, student.conditions, time_teacher,
                                resolve_backend(model.config.attention_backend, device), {},
                                "the teacher timed per frame from one window")

    def bench_teacher(self, preset: str, size: str | None, steps: int, cfg: float,
                      frames: list[int], attention: list[str], repeats: int,
                      fast_decode: bool, device: torch.device) -> TeacherBench:
        """Random weights of `preset`: a denoising step of one window (CFG's two branches as
        one batch), and decoding, per frame."""
        from posecast.bench.teacher import TeacherBench, gigabytes
        from posecast.config import parse_size
        from posecast.config import preset as make_preset
        from posecast.dit.bench import time_teacher

        config = make_preset(preset)
        if size is not None:
            height, width = parse_size(size, config.codec.downsample * config.patch_size)
            config = config.replace(height=height, width=width)
        timing = time_teacher(config, steps, cfg, device, repeats, fast_decode)
        row = {"params": f"{timing.parameters / 1e6:.1f} M", "frames": str(timing.frames),
               "tokens": str(timing.tokens), "ms / step": f"{timing.step_ms:.1f}",
               "decode ms / frame": f"{timing.decode_ms_per_frame:.2f}",
               "FPS": f"{timing.fps:.3f}", "peak GB": gigabytes(timing.peak_memory_gb)}
        return TeacherBench(
            f"teacher · {preset} · {config.width}x{config.height} · {steps} steps · "
            f"CFG {cfg:g} · {timing.device}", [row],
            {"preset": preset, "width": config.width, "height": config.height, "steps": steps,
             "cfg": cfg, "timings": [dataclasses.asdict(timing)]})

    def training(self, init_from: Path | None, options: TrainingOptions) -> DitTraining:
        from posecast.config import preset
        from posecast.dit.train import TrainConfig
        from posecast.errors import ConfigError

        changes = {"attention": options.attention, "k_frames": options.k_frames}
        config = load_config(str(init_from)).replace(**changes) if init_from is not None \
            else preset(options.preset, **changes)
        try:  # flags named as the user typed them
            train = TrainConfig(
                max_steps=options.max_steps, batch_size=options.batch_size,
                learning_rate=3e-4 if options.learning_rate is None else options.learning_rate,
                checkpoint_every=options.checkpoint_every,
                gradient_checkpointing=options.gradient_checkpointing, seed=options.seed,
                region_alphas=options.region_alphas, fsdp=options.fsdp)
        except ConfigError as error:
            name = error.field.split(".")[0]
            flag = "--region-alpha" if name == "region_alphas" else \
                f"--{name.replace('_', '-')}"
            raise UsageError(f"{flag}: {error}") from None
        return DitTraining(config, train, options.init_from, options.init_revision)


@dataclass
class DitTraining:
    """A DiT teacher trained with flow matching (train/teacher.py), from scratch or from a
    trained one (`init_from`, as the user named it, at `revision`)."""

    config: object  # posecast.config.DenoiserConfig
    train: object  # posecast.dit.train.TrainConfig
    init_from: str | None
    revision: str | None
    task = "training"
    result = "EMA weights"

    @property
    def memory_hint(self) -> str:
        return "lower --batch-size or add --gradient-checkpointing"

    def run(self, dataset, out, resume, device, on_step, on_message) -> Path:
        from posecast.dit.train import train_teacher

        return train_teacher(dataset, out, self.config, self.train, resume=resume,
                             device=device, init_from=self.init_from,
                             init_revision=self.revision, on_step=on_step,
                             on_message=on_message)


FAMILY = DitFamily()
