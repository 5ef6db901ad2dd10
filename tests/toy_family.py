"""A third model family defined only in the tests: the proof that a family is one module behind
posecast's seams (families.Family, streaming.rollout.StudentBackend,
train.distill.DistillationRun), and the cheapest member of the family contract suite.

The toy works on 32 × 32 frames whose latents are the frames pooled 2× (3 × 16 × 16). Levels
are flow-matching times (x_ℓ = (1 − ℓ)·x₀ + ℓ·ε). Its network estimates the clean latent from
the noisy one, the pose maps, the portrait's latent and the mean of the past frames its cache
holds (a ring of `context_frames` clean frames, written by the commit pass): causal by
construction, and its whole-window oracle is one line (`ToyNet.oracle`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from posecast.errors import UsageError
from posecast.pose.draw import render_pose_maps
from posecast.pose.framing import Box, fit_box
from posecast.pose.keypoints import Keypoints
from posecast.train.distill import DistillConfig, even_levels, make_optimizers

SIZE = 32  # frame side in pixels; latents are SIZE // 2


class ToyNet(torch.nn.Module):
    """x̂₀ = x·a/(1 + ℓ) + b·(pooled pose maps) + c·(portrait latent) + d·(mean past frame)."""

    def __init__(self) -> None:
        super().__init__()
        self.weights = torch.nn.Parameter(torch.tensor([1.0, 0.3, 0.2, 0.5]))
        self.pose = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x, level, conditions, maps, past):
        """x (B, T, 3, h, w) at `level` (B,); maps (B, T, 3, H, W); past (B, 3, h, w)."""
        a, b, c, d = self.weights
        pooled = F.avg_pool2d(maps.flatten(0, 1), 2)
        pose = self.pose(pooled).view(x.shape)
        scale = (1 + level).view(-1, 1, 1, 1, 1)
        return a * x / scale + b * pose + (c * conditions + d * past)[:, None]

    def oracle(self, x, level, conditions, maps, context: int, chunk: int):
        """The cached rollout's estimates written out whole: each chunk's past is the mean of
        the `context` frames of x before it (x itself committed), zero before any."""
        out = []
        for start in range(0, x.shape[1], chunk):
            held = x[:, max(0, start - context):start]
            past = held.mean(dim=1) if held.shape[1] else torch.zeros_like(x[:, 0])
            out.append(self(x[:, start:start + chunk], level, conditions,
                            maps[:, start:start + chunk], past))
        return torch.cat(out, dim=1)


@dataclass
class ToyCache:
    """A ring of `capacity` clean frames (B, capacity, 3, h, w), written in place."""

    capacity: int
    chunk: int
    frames: torch.Tensor
    valid: torch.Tensor  # (capacity,) bool
    slots: torch.Tensor  # the ring slots the next commit writes

    def point_at(self, first_slot: int) -> None:
        torch.arange(first_slot, first_slot + self.chunk, out=self.slots)

    def filled(self) -> None:
        self.valid.index_fill_(0, self.slots, True)

    def reset(self) -> None:
        self.valid.zero_()

    def mark_static(self) -> None:
        pass

    def past(self) -> torch.Tensor:
        """The mean of the held frames (zeros when none)."""
        weights = self.valid.to(self.frames.dtype).view(1, -1, 1, 1, 1)
        return (self.frames * weights).sum(1) / weights.sum().clamp_min(1)


class ToyStudent:
    """The toy network as a streaming StudentBackend."""

    commit_level = 0.0
    attention_backend, block_size, attention_layers = "dense", 128, 1
    height = width = SIZE

    def __init__(self, network: ToyNet, steps: int = 2, chunk: int = 2,
                 context_frames: int = 2) -> None:
        self.network, self.chunk, self.context_frames = network, chunk, context_frames
        self.steps = steps
        self.device = torch.device("cpu")

    def levels(self) -> list[float]:
        return torch.linspace(1.0, 0.0, self.steps + 1).tolist()[:-1]

    def noisy(self, clean, level, noise):
        return (1 - level) * clean + level * noise

    def grids(self) -> dict:
        return {}

    def batch_size(self, conditions: torch.Tensor) -> int:
        return conditions.shape[0]

    def new_cache(self, batch: int) -> ToyCache:
        shape = (batch, self.context_frames, *self.latent_shape())
        return ToyCache(self.context_frames, self.chunk, torch.zeros(shape),
                        torch.zeros(self.context_frames, dtype=torch.bool),
                        torch.arange(self.chunk))

    def layout(self, cache, plans, frames):
        return None

    def predict(self, x, level, conditions, pose_maps, cache, layout, position, commit):
        if commit:  # the clean chunk joins the ring (no gradient through the cache)
            if cache.capacity:
                cache.frames.index_copy_(1, cache.slots, x.detach())
            return None
        levels = torch.full((x.shape[0],), float(level))
        return self.network(x, levels, conditions, pose_maps, cache.past())

    def latent_shape(self) -> tuple[int, int, int]:
        return (3, SIZE // 2, SIZE // 2)

    def conditions(self, reference: np.ndarray) -> torch.Tensor:
        pixels = torch.from_numpy(reference).permute(2, 0, 1)[None].float() / 127.5 - 1
        return F.avg_pool2d(pixels, 2)

    def draw_poses(self, poses: Keypoints) -> np.ndarray:
        return render_pose_maps(poses, SIZE, SIZE)

    def pose_input(self, drawn: torch.Tensor) -> torch.Tensor:
        return drawn.float() / 255.0

    def decode(self, latents: torch.Tensor, differentiable: bool = False) -> torch.Tensor:
        return F.interpolate(latents, scale_factor=2).clamp(-1, 1)

    def frame(self, image: np.ndarray, keypoints: Keypoints) -> Box:
        return fit_box(image.shape[1], image.shape[0], SIZE, SIZE)


# ------------------------------------------------------------------------- folders


def write_folder(folder: Path, network: ToyNet, student: dict | None = None) -> Path:
    """A toy model folder: config.json naming the family (and the student's settings)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"family": "toy", **({"student": student} if student else {})}
    (folder / "config.json").write_text(json.dumps(config))
    save_file({k: v.detach().contiguous() for k, v in network.state_dict().items()},
              folder / "model.safetensors")
    return folder


def read_folder(folder: Path) -> tuple[ToyNet, dict | None]:
    network = ToyNet()
    network.load_state_dict(load_file(folder / "model.safetensors"))
    return network, json.loads((folder / "config.json").read_text()).get("student")


# ---------------------------------------------------------------------- distillation


@dataclass
class ToyWindow:
    conditions: torch.Tensor
    maps: torch.Tensor
    poses: list[Keypoints]
    frames: torch.Tensor


class ToyRun:
    """The toy family's DistillationRun: a frozen teacher, the student and critic (copies)."""

    height = width = SIZE
    fps, sharded = 25.0, False

    def __init__(self, teacher_folder: Path, settings: DistillConfig) -> None:
        self.settings = settings
        teacher, _ = read_folder(teacher_folder)
        self.teacher = teacher.requires_grad_(False)
        torch.manual_seed(settings.seed)
        student_net, critic = ToyNet(), ToyNet()
        student_net.load_state_dict(teacher.state_dict())
        critic.load_state_dict(teacher.state_dict())
        self.window_frames = settings.window or 4
        self.student = ToyStudent(student_net, settings.student_steps, settings.chunk,
                                  self.window_frames - settings.chunk)
        self.critic = critic
        self.modules = {"student": student_net, "critic": critic}
        self.optimizers = make_optimizers(student_net, critic, settings)
        self.owners = {"student": student_net, "critic": critic, "init": student_net}
        self.decoder = self.student
        self.cfg = 1.0
        self.checkpoint_meta = {"family": "toy"}

    def window(self, batch: dict) -> ToyWindow:
        return ToyWindow(F.avg_pool2d(batch["reference"], 2), batch["pose_maps"],
                         list(batch["poses"]), batch["frames"])

    def score(self, window: ToyWindow, generator: torch.Generator):
        def clean(which, x, level, cfg):
            network = self.teacher if which == "teacher" else self.critic
            return network(x, level, window.conditions, window.maps,
                           torch.zeros_like(x[:, 0]))
        return clean

    def trajectory_levels(self, ode_steps: int) -> tuple[list[float], list[int]]:
        return even_levels([*self.student.levels(), 0.0], ode_steps)

    def dmd_levels(self, fraction: torch.Tensor) -> torch.Tensor:
        return fraction

    def training_levels(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        return 0.05 + 0.9 * torch.rand(batch, generator=generator)

    def critic_weight(self, level: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(level)

    def save_student(self, out: Path, step: int, weights: dict | None) -> None:
        student = self.student
        write_folder(out, self.modules["student"],
                     {"steps": student.steps, "chunk": student.chunk,
                      "context_frames": student.context_frames})


class ToyFamily:
    name = "toy"
    licence = "mit"

    def size_multiple(self, folder: Path) -> int:
        return 2

    def load_teacher(self, folder: Path, device: torch.device):
        raise UsageError(f"{folder}: toy models are not sampled as teachers")

    def load_student(self, folder: Path, device: torch.device, size, steps) -> ToyStudent:
        network, settings = read_folder(folder)
        if settings is None:
            raise UsageError(f"{folder}: a toy teacher, not a student; distil it first")
        if size is not None and size != (SIZE, SIZE):
            raise UsageError(f"--size: toy students make {SIZE}x{SIZE} frames")
        return ToyStudent(network.eval(), steps or settings["steps"], settings["chunk"],
                          settings["context_frames"])

    def distillation(self, teacher: Path, settings: DistillConfig, resume: bool,
                     fast_decoder: Path | None):
        if fast_decoder is not None:
            raise UsageError("--fast-decoder: toy students decode by upsampling")
        return lambda settings, env, on_message: ToyRun(teacher, settings)

    def model_files(self, folder: Path) -> list[str]:
        return []


FAMILY = ToyFamily()
