"""The DiT family's side of distillation (train/distill.py runs the loop): its networks, windows
and flow-matching maths. Levels are times t ∈ [0, 1] (x_t = (1 − t)·x₀ + t·ε, the network
predicts the velocity v = ε − x₀, so x̂₀ = x_t − t·v); the teacher samples with CFG; the
critic is trained by flow matching (‖v − (ε − x₀)‖² = ‖x̂₀ − x₀‖² / t²)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from posecast.attention.mask import mask_for_window
from posecast.attention.plan import AttentionPlan
from posecast.config import DenoiserConfig, SamplerConfig
from posecast.devices import autocast
from posecast.diffusion.flow import sample_training_times, shift_time
from posecast.dit.codecs import make_codec
from posecast.dit.denoiser import Denoiser
from posecast.dit.pretrained import from_pretrained, model_card, save_pretrained
from posecast.dit.student import DitStudent
from posecast.errors import UsageError
from posecast.pose.keypoints import Keypoints
from posecast.train.distill import DistillConfig, Score, StartRun, even_levels, make_optimizers
from posecast.train.distributed import Distributed


def student_config(teacher: DenoiserConfig, settings: DistillConfig) -> DenoiserConfig:
    """The teacher's architecture as a causal student with its own sampler defaults."""
    if teacher.is_student:
        raise UsageError("the teacher is itself a causal student; give a teacher model folder")
    try:
        return teacher.replace(
            chunk=settings.chunk, window=settings.window or teacher.window,
            k_frames=settings.k_frames, attention=settings.attention, reference_frame=False,
            overlap=0, condition_dropout=0.0,
            sampler=SamplerConfig(method="euler", steps=settings.student_steps, cfg=1.0,
                                  shift=teacher.sampler.shift))
    except ValueError as error:
        raise UsageError(str(error)) from None


@dataclass
class Window:
    """A training batch on the device: what every model is conditioned on."""

    frames: torch.Tensor  # (B, W, 3, H, W) real frames in [-1, 1]
    conditions: torch.Tensor  # (B, C, h, w) the portrait latent
    maps: torch.Tensor  # (B, W, 3, H, W) pose maps in [0, 1]
    poses: list[Keypoints]  # one per batch element
    teacher_layout: AttentionPlan | None  # the bidirectional models' input-aware plan
    guided_layout: AttentionPlan | None = None  # the same for CFG's doubled batch

    @property
    def size(self) -> int:
        return self.frames.shape[0]

    def layout_for(self, batch: int) -> AttentionPlan | None:
        """The teacher/critic plan for a batch of `batch` (the window's size, or twice it for
        CFG's two branches), built once per window."""
        if self.teacher_layout is None or batch == self.size:
            return self.teacher_layout
        if self.guided_layout is None:
            self.guided_layout = self.teacher_layout.repeat(batch // self.size)
        return self.guided_layout


def prepare_window(batch: dict, codec, teacher_config: DenoiserConfig,
                   device: torch.device) -> Window:
    layout = None if teacher_config.attention != "input_aware" else AttentionPlan.for_windows(
        [mask_for_window(poses, teacher_config, reference)
         for poses, reference in zip(batch["poses"], batch["reference_poses"], strict=True)],
        teacher_config.attention_backend, device, teacher_config.block_size)
    return Window(batch["frames"].to(device), codec.encode(batch["reference"].to(device)),
                  batch["pose_maps"].to(device), batch["poses"], layout)


def teacher_velocity(model: Denoiser, x: torch.Tensor, t: torch.Tensor, window: Window,
                     cfg: float) -> torch.Tensor:
    """A bidirectional model's velocity over whole windows (B, W, C, h, w); cfg ≠ 1 runs the
    conditional and unconditional branches as one batch."""
    batch = x.shape[0]
    with autocast(x.device):
        if cfg == 1.0:
            return model(x, t, window.conditions, window.maps,
                         layout=window.layout_for(batch)).float()
        keep = torch.arange(2 * batch, device=x.device) < batch
        layout = window.layout_for(2 * batch)
        both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([window.conditions] * 2),
                     torch.cat([window.maps] * 2), keep, layout=layout).float()
    conditional, unconditional = both.chunk(2)
    return unconditional + cfg * (conditional - unconditional)


def student_card(config: DenoiserConfig, settings: DistillConfig, teacher: str,
                 step: int) -> str:
    recipe = json.dumps(settings.to_dict(), indent=2)
    return model_card(config, (
        f"## Distilled student\n\nA causal {config.sampler.steps}-step student generating "
        f"{config.chunk}-frame chunks with {config.context_frames} frames of KV cache, "
        f"distilled from `{teacher}` for {step} steps (`posecast distill`). Render with "
        f"`posecast render`.\n\nSettings:\n\n```json\n{recipe}\n```"))


class DitDistillation:
    """A DiT teacher, its causal student (the teacher's weights to start) and critic (a copy of
    the teacher), in fp32 on the run's device, with their optimisers."""

    def __init__(self, teacher_source: str, settings: DistillConfig, env: Distributed) -> None:
        self.settings, self.source = settings, teacher_source
        teacher = from_pretrained(teacher_source, device=env.device).requires_grad_(False)
        self.config = config = student_config(teacher.config, settings)
        torch.manual_seed(settings.seed)
        student = Denoiser(config).to(env.device)
        student.load_state_dict(teacher.state_dict())
        critic = Denoiser(teacher.config).to(env.device)
        critic.load_state_dict(teacher.state_dict())
        for model in (student, critic):
            model.gradient_checkpointing = settings.gradient_checkpointing
            model.train()
        self.sharded = settings.fsdp and env.world_size > 1
        if self.sharded:
            from posecast.train import sharding

            for model in (teacher, student, critic):
                sharding.shard(model)
        self.teacher, self.critic = teacher, critic
        self.modules = {"student": student, "critic": critic}
        self.optimizers = make_optimizers(student, critic, settings)
        self.owners = {"student": student, "critic": critic, "init": student}
        self.decoder = self.codec = make_codec(config.codec, env.device)
        self.student = DitStudent(student, codec=self.codec, device=env.device)
        self.cfg = teacher.config.sampler.cfg if settings.teacher_cfg is None \
            else settings.teacher_cfg
        self.window_frames, self.height, self.width = config.window, config.height, config.width
        self.fps = config.fps
        self.checkpoint_meta = {"student_config": config.to_dict()}

    def window(self, batch: dict) -> Window:
        return prepare_window(batch, self.codec, self.teacher.config, self.student.device)

    def score(self, window: Window, generator: torch.Generator) -> Score:
        def clean(which: str, x: torch.Tensor, t: torch.Tensor, cfg: float) -> torch.Tensor:
            model = self.teacher if which == "teacher" else self.critic
            return x - t.view(-1, 1, 1, 1, 1) * teacher_velocity(model, x, t, window, cfg)

        return clean

    def trajectory_levels(self, ode_steps: int) -> tuple[list[float], list[int]]:
        """Even steps in t between the student's times."""
        return even_levels(self.student.timesteps, ode_steps)

    def dmd_levels(self, fraction: torch.Tensor) -> torch.Tensor:
        return shift_time(fraction, self.teacher.config.sampler.shift)

    def training_levels(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        return sample_training_times(batch, self.critic.config.sampler.shift, generator)

    def critic_weight(self, level: torch.Tensor) -> torch.Tensor:
        return level.reciprocal().square()

    def save_student(self, out: Path, step: int, weights: dict | None) -> None:
        save_pretrained(self.modules["student"], out,
                        student_card(self.config, self.settings, self.source, step),
                        state=weights)


def dit_run(teacher_source: str) -> StartRun:
    """What the distillation loop (train/distill.py) starts for a DiT teacher folder."""
    return lambda settings, env, on_message: DitDistillation(teacher_source, settings, env)
