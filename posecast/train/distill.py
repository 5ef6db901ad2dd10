"""Distilling a teacher into its few-step causal student (METHOD.md, "Distillation"), for every
model family: one loop over a family's `DistillationRun`.

Levels are the family's noise levels (flow-matching times for the DiT, EDM's σ for
MimicMotion); every network call below gives a clean estimate x̂₀ of x at a level.
Stages, one step counter:
  1. ODE-pair initialisation (steps [0, init_steps)): teacher trajectories under the clips'
     conditions (Euler steps over levels that pass through each of the student's k levels,
     with the teacher's guidance) are stored as safetensors shards (`ode_pairs/`); the
     student, fed the trajectory's state at each of its levels with the teacher's end point
     committed as the past chunks' context, regresses onto the end point.
  2. DMD (the next max_steps steps): per step the critic ("fake score", a copy of the teacher)
     takes `critic_updates` denoising steps on fresh student samples, then the student takes
     one step on  L = L_DMD + λ_region·L_region (+ perceptual plug-ins).
     The DMD gradient at a student sample x is (x̂₀_critic − x̂₀_teacher) of the re-noised x,
     normalised by mean |x − x̂₀_teacher| (DMD) and scaled per latent pixel by the region
     weight map w (region_loss.py); the teacher uses CFG.
  3. Region steps (the next region_steps steps, none by default): the student's samples on
     L_region (+ plug-ins), with the ODE stage's optimiser, restarted; neither the teacher nor
     the critic is called. With region_ode_weight, each step also regresses onto a stored ODE
     pair (the init stage's loss), which holds the student near the teacher's clean
     picture while the region loss pulls its frames toward the real ones (alone, the region
     loss draws a grid at the patch borders, docs/ABLATION.md). Not in the paper: at the
     starter's size a strongly weighted lips term opens the mouth further than the recipe's
     DMD steps do, but draws that grid, so the bundled starter takes none.
Student samples come from the streaming Rollout, the code rendering uses, stopping each chunk
at a random step (backward simulation).

Every step draws its data, noise and step choices from a generator seeded by
(seed, step, rank), so the checkpoint (student, critic, both optimisers, step, counters)
determines the rest of the run: a resumed run repeats an uninterrupted one. Under torchrun
the gradients are averaged across processes after each backward pass (see `sync_gradients`),
or, with `fsdp`, the family's networks are sharded (sharding.py) and FSDP reduces them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from posecast.config import DISTILL_RULES, REGION_RULES
from posecast.data.clips import ClipDataset
from posecast.errors import InputError, UsageError
from posecast.ownership import mark
from posecast.paths import atomic_output
from posecast.pose.keypoints import Keypoints
from posecast.streaming.rollout import Rollout, StudentBackend
from posecast.train import distributed
from posecast.train.checkpoint import CHECKPOINT_DIR, save_checkpoint
from posecast.train.loop import full_states, restore, resumed, run_steps, step_generator
from posecast.train.perceptual import PerceptualTerm, load_perceptual_terms
from posecast.train.region_loss import (
    RegionWeights,
    batch_region_bits,
    region_reconstruction_loss,
    to_latent_grid,
    weights_from_bits,
)
from posecast.validation import as_tuple, build, check_fields

PAIRS_DIR = "ode_pairs"


@dataclass(frozen=True)
class DistillConfig:
    """Every setting of a distillation run (`posecast distill --config FILE` takes these
    names in JSON; flags override the file)."""

    # the student
    student_steps: int = 4  # k denoising steps per chunk (1–8)
    chunk: int = 4  # frames generated together (block-causal)
    window: int | None = None  # frames per training rollout (context + chunk); None: family's
    k_frames: int = 3  # input-aware: pose-similar past frames per frame
    attention: str = "input_aware"  # "input_aware" | "dense"
    # optimisation
    max_steps: int = 1000  # DMD generator steps (after the init steps)
    region_steps: int = 0  # region-loss-only steps after DMD (init optimiser and learning rate)
    batch_size: int = 2  # windows per process per micro-batch
    grad_accumulation: int = 1
    learning_rate: float = 2e-5
    critic_learning_rate: float = 2e-5
    critic_updates: int = 5  # critic steps per generator step (r)
    grad_clip: float = 1.0
    gradient_checkpointing: bool = False
    # ODE-pair initialisation (init_steps = 0 turns it off)
    init_steps: int = 200
    init_learning_rate: float = 1e-4
    ode_pairs: int = 32  # shards of batch_size windows each
    ode_steps: int = 24  # teacher Euler steps per trajectory (rounded up to a multiple of k)
    # DMD
    teacher_cfg: float | None = None  # None: the teacher's own sampler setting
    dmd_min_time: float = 0.02
    dmd_max_time: float = 0.98
    # input-aware region loss
    region_weights: RegionWeights = field(default_factory=RegionWeights)
    region_loss_weight: float = 0.25  # λ_region on the decoded-frame loss (0 turns it off)
    ssim_weight: float = 0.5  # inside the region loss: L1 + ssim_weight · (1 − SSIM)
    edge_weight: float = 0.0  # + edge_weight · mean |∇x̂ − ∇x| (region_loss.edge_error)
    region_ode_weight: float = 0.0  # region steps: + this · the ODE-pair loss (needs pairs)
    perceptual: tuple[str, ...] = ()  # plug-ins, "name=folder_or_repo[:weight]" (perceptual.py)
    # bookkeeping
    checkpoint_every: int = 100
    sample_every: int = 0  # write samples/step-N.mp4 every N steps (0: never)
    seed: int = 0
    fsdp: bool = False  # under torchrun: shard teacher, student and critic (sharding.py)

    def __post_init__(self) -> None:
        check_fields(vars(self), DISTILL_RULES)  # types and ranges (ConfigError)
        check_fields(vars(self.region_weights), REGION_RULES, "region_weights.")
        checks = [(self.init_steps == 0 or self.ode_pairs >= 1,
                   "ODE initialisation needs at least one pair shard"),
                  (self.region_ode_weight == 0 or self.init_steps > 0,
                   "region_ode_weight needs the ODE pairs of init_steps > 0"),
                  (0 < self.dmd_min_time < self.dmd_max_time <= 1,
                   "DMD times must satisfy 0 < min < max <= 1")]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    @property
    def region_start(self) -> int:
        """The first step of the region stage (after the ODE-pair and DMD stages)."""
        return self.init_steps + self.max_steps

    @property
    def total_steps(self) -> int:
        return self.region_start + self.region_steps

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DistillConfig:
        """From JSON; ConfigError names the first unknown, mistyped or out-of-range field."""
        return build(cls, data, convert={
            "region_weights": lambda weights: weights if isinstance(weights, RegionWeights)
            else build(RegionWeights, weights, "region_weights."),
            "perceptual": as_tuple})


# ------------------------------------------------------------------- what a family gives


class Window(Protocol):
    """A training batch on the device, as a family prepares it from the clips."""

    conditions: Any  # the student's conditioning (the portraits')
    maps: torch.Tensor  # (B, W, 3, H, W) the student's pose input
    poses: list[Keypoints]  # B windows of W frames, frame pixels
    frames: torch.Tensor  # (B, W, 3, H, W) the clips' real frames in [-1, 1]


# score(which, x, level, cfg) → x̂₀: "teacher" or "critic", x (B, W, C, h, w), level (B,)
Score = Callable[[str, torch.Tensor, torch.Tensor, float], torch.Tensor]


class DistillationRun(Protocol):
    """One family's networks and noise maths for a run: the student (a StudentBackend whose
    network trains), its critic and frozen teacher, the optimisers, and how to save."""

    settings: DistillConfig
    student: StudentBackend
    modules: dict[str, torch.nn.Module]  # "student" and "critic": checkpointed and trained
    optimizers: dict[str, torch.optim.Optimizer]  # "student", "critic", "init"
    owners: dict[str, torch.nn.Module]  # the module each optimiser steps
    decoder: Any  # .decode(latents (N, C, h, w), differentiable=True) → (N, 3, H, W)
    window_frames: int  # W: frames per training rollout
    height: int
    width: int
    fps: float
    cfg: float  # the teacher's guidance in DMD and the ODE pairs
    sharded: bool
    checkpoint_meta: dict  # the family's own entries in the checkpoint's state

    def window(self, batch: dict) -> Window:
        """A batch from ClipDataset.sample on the device."""

    def score(self, window: Window, generator: torch.Generator) -> Score:
        """The teacher's and critic's clean estimates under `window` (a family that noises
        extra inputs draws that noise from `generator` once, for every call of the score)."""

    def trajectory_levels(self, ode_steps: int) -> tuple[list[float], list[int]]:
        """The teacher's Euler levels from the start to 0, passing through each student
        level, and the index of each student level among them."""

    def dmd_levels(self, fraction: torch.Tensor) -> torch.Tensor:
        """(B,) levels for fractions in [0, 1] (0 the least noise)."""

    def training_levels(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """(B,) levels the critic trains at."""

    def critic_weight(self, level: torch.Tensor) -> torch.Tensor:
        """(B,) the weight of ‖x̂₀ − x‖² at each level in the critic's loss."""

    def save_student(self, out: Path, step: int, weights: dict | None) -> None:
        """The student model folder (`weights`: a sharded student's gathered state)."""


def make_optimizers(student: torch.nn.Module, critic: torch.nn.Module,
                    settings: DistillConfig) -> dict[str, torch.optim.Optimizer]:
    """DMD's student and critic optimisers (no momentum) and the ODE stage's."""
    return {"student": torch.optim.AdamW(student.parameters(), lr=settings.learning_rate,
                                         betas=(0.0, 0.999), weight_decay=0.0),
            "critic": torch.optim.AdamW(critic.parameters(), lr=settings.critic_learning_rate,
                                        betas=(0.0, 0.999), weight_decay=0.0),
            "init": torch.optim.AdamW(student.parameters(), lr=settings.init_learning_rate,
                                      weight_decay=0.0)}


def _levels(level: torch.Tensor) -> torch.Tensor:
    return level.view(-1, 1, 1, 1, 1)


# ----------------------------------------------------------------------- student samples


def student_sample(run: DistillationRun, window: Window, generator: torch.Generator,
                   exit_steps: list[int] | None = None, noise: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """The student's video of every window (B, W, C, h, w), chunk by chunk. `exit_steps`
    (one per chunk) stops chunks early with gradients on that step (training); None runs all
    steps. Noise comes from `generator` (CPU), chunk by chunk, unless given (B, W, C, h, w)."""
    student = run.student
    batch, frames = window.maps.shape[:2]
    chunk, device = student.chunk, window.maps.device
    shape = (batch, chunk, *student.latent_shape())
    rollout = Rollout(student, window.conditions, lambda s, e: window.maps[:, s:e],
                      lambda s, e: [poses[s:e] for poses in window.poses])
    chunks = []
    for index, start in enumerate(range(0, frames, chunk)):
        first = torch.randn(shape, generator=generator).to(device) if noise is None \
            else noise[:, start:start + chunk]
        chunks.append(rollout.chunk(first, lambda: torch.randn(shape, generator=generator)
                                    .to(device),
                                    None if exit_steps is None else exit_steps[index],
                                    commit=start + chunk < frames))
    return torch.cat(chunks, dim=1)


def random_exit_steps(chunks: int, steps: int, generator: torch.Generator) -> list[int]:
    return torch.randint(steps, (chunks,), generator=generator).tolist()


# ---------------------------------------------------------------------------- ODE pairs


def euler_trajectory(score: Score, start: torch.Tensor, levels: list[float],
                     marks: list[int], cfg: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Euler steps of the teacher's ODE dx/dℓ = (x − x̂₀)/ℓ from `start` at levels[0]: its
    states at the `marks` (len(marks), B, W, C, h, w) and its end point at levels[-1] = 0."""
    x, states = start, []
    with torch.no_grad():
        for i, (level, following) in enumerate(zip(levels[:-1], levels[1:], strict=True)):
            if i in marks:
                states.append(x)
            clean = score("teacher", x, torch.full((x.shape[0],), level, device=x.device), cfg)
            x = x + (following - level) * (x - clean) / level
    return torch.stack(states), x


def even_levels(times: list[float], ode_steps: int) -> tuple[list[float], list[int]]:
    """Euler levels in even steps between consecutive `times` (the student's levels, then 0),
    ode_steps split over the intervals (rounded up), ending at 0; and the index of each of
    `times[:-1]` among them (the states an ODE pair keeps)."""
    per = max(1, math.ceil(ode_steps / (len(times) - 1)))
    levels, marks = [], []
    for start, end in zip(times[:-1], times[1:], strict=True):
        marks.append(len(levels))
        levels += torch.linspace(start, end, per + 1).tolist()[:-1]
    return levels + [0.0], marks


def pair_generator(seed: int, index: int) -> torch.Generator:
    """The data of ODE-pair shard `index` (negative step numbers: never a training step's)."""
    return step_generator(seed, -1 - index, 0)


def _shard(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:05d}.safetensors"


def make_ode_pairs(run: DistillationRun, folder: Path, data: ClipDataset,
                   env: distributed.Distributed,
                   on_progress: Callable[[int, int], None] | None = None) -> None:
    """Write the missing shards (states, end point); each rank makes every world_size-th one,
    or, with a sharded teacher (whose every call involves all ranks), all ranks run every
    shard and rank 0 writes it. A shard's windows are re-drawn from its seed when used."""
    settings = run.settings
    folder.mkdir(parents=True, exist_ok=True)
    missing = [index for index in range(settings.ode_pairs) if not _shard(folder, index).exists()]
    if env.world_size > 1:
        dist.barrier()  # every rank has listed the missing shards before any is written
    levels, marks = run.trajectory_levels(settings.ode_steps)
    for index in range(settings.ode_pairs):
        if index in missing and (run.sharded or index % env.world_size == env.rank):
            generator = pair_generator(settings.seed, index)
            window = run.window(data.sample(settings.batch_size, run.window_frames, generator))
            shape = (settings.batch_size, run.window_frames, *run.student.latent_shape())
            noise = torch.randn(shape, generator=generator).to(env.device)
            score = run.score(window, generator)
            states, end = euler_trajectory(score, run.student.noisy(0.0, levels[0], noise),
                                           levels, marks, run.cfg)
            if env.is_main or not run.sharded:
                with atomic_output(_shard(folder, index)) as tmp:
                    save_file({"states": states.cpu().contiguous(),
                               "end": end.cpu().contiguous()}, tmp,
                              metadata={"levels": json.dumps(run.student.levels())})
        if on_progress is not None:
            on_progress(index + 1, settings.ode_pairs)
    if env.world_size > 1:
        dist.barrier()


def load_ode_pair(folder: Path, index: int, steps: int) -> dict[str, torch.Tensor]:
    path = _shard(folder, index)
    try:
        pair = load_file(path)
    except (OSError, SafetensorError) as error:
        raise InputError(f"{path}: unreadable ODE pair ({error}); delete {folder} to make the "
                         "pairs again") from None
    if pair["states"].shape[0] != steps:
        raise InputError(f"{path}: made for another number of student steps; delete {folder} "
                         "to make the pairs again")
    return pair


def ode_regression_loss(run: DistillationRun, window: Window, states: torch.Tensor,
                        end: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mean over chunks of ‖x̂₀_student(state at ℓ_i) − teacher end point‖², i drawn per
    chunk, the end point committed as the past chunks' context (teacher forcing)."""
    student = run.student
    rollout = Rollout(student, window.conditions, lambda s, e: window.maps[:, s:e],
                      lambda s, e: [poses[s:e] for poses in window.poses])
    levels, losses = student.levels(), []
    for start in range(0, end.shape[1], student.chunk):
        i = int(torch.randint(len(levels), (1,), generator=generator))
        target = end[:, start:start + student.chunk]
        prediction = rollout.regress(states[i][:, start:start + student.chunk], levels[i],
                                     target)
        losses.append(F.mse_loss(prediction, target))
    return torch.stack(losses).mean()


def stored_pair_loss(run: DistillationRun, data: ClipDataset, pairs: Path,
                     generator: torch.Generator) -> torch.Tensor:
    """The ODE regression loss on a randomly drawn stored pair shard, under the conditions
    of the windows it was made from."""
    settings = run.settings
    index = int(torch.randint(settings.ode_pairs, (1,), generator=generator))
    pair = load_ode_pair(pairs, index, len(run.student.levels()))
    window = run.window(data.sample(settings.batch_size, pair["end"].shape[1],
                                    pair_generator(settings.seed, index)))
    device = window.maps.device
    return ode_regression_loss(run, window, pair["states"].to(device), pair["end"].to(device),
                               generator)


# ------------------------------------------------------------------------------- DMD


def dmd_gradient(x: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                 weights: torch.Tensor | None) -> torch.Tensor:
    """The DMD gradient at student samples x (B, W, C, h, w) from the teacher's (`real`) and
    critic's (`fake`) clean estimates of the re-noised x: (fake − real) / mean |x − real|,
    times `weights` (B, W, 1, h, w). Moving x along its negative moves the critic's estimate
    of the student's distribution towards the teacher's."""
    with torch.no_grad():
        normaliser = (x.detach() - real).abs().mean(dim=(1, 2, 3, 4), keepdim=True)
        gradient = (fake - real) / normaliser.clamp_min(1e-6)
        if weights is not None:
            gradient = gradient * weights.to(gradient)
    return torch.nan_to_num(gradient)


def dmd_loss(x: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """A loss whose gradient with respect to x is `gradient` / x.numel()."""
    return 0.5 * F.mse_loss(x.float(), (x - gradient).detach().float())


def dmd_scores(run: DistillationRun, x: torch.Tensor, window: Window,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's (with CFG) and critic's clean estimates of x re-noised to a level drawn
    on the family's scale between settings.dmd_min_time and dmd_max_time."""
    settings = run.settings
    fraction = settings.dmd_min_time + (settings.dmd_max_time - settings.dmd_min_time) * \
        torch.rand(x.shape[0], generator=generator, dtype=torch.float64)
    level = run.dmd_levels(fraction).float().to(x.device)
    noise = torch.randn(x.shape, generator=generator).to(x.device)
    score = run.score(window, generator)
    with torch.no_grad():
        noisy = run.student.noisy(x.detach(), _levels(level), noise)
        return score("teacher", noisy, level, run.cfg), score("critic", noisy, level, 1.0)


def critic_loss(run: DistillationRun, window: Window, sample: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
    """The critic's denoising loss on detached student samples (B, W, C, h, w): the family's
    weighting of ‖x̂₀ − x‖² at its training levels (flow matching's velocity error, EDM's)."""
    level = run.training_levels(sample.shape[0], generator).to(sample.device)
    noise = torch.randn(sample.shape, generator=generator).to(sample.device)
    score = run.score(window, generator)
    clean = score("critic", run.student.noisy(sample, _levels(level), noise), level, 1.0)
    return (_levels(run.critic_weight(level)) * (clean - sample) ** 2).mean()


# ----------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class DistillReport:
    step: int
    total_steps: int
    phase: str  # "init" | "dmd" | "region"
    losses: dict[str, float]
    critic_updates: int  # totals so far
    generator_updates: int
    samples_per_second: float


def sync_gradients(module: torch.nn.Module, world_size: int) -> None:
    """Average gradients across torchrun processes (the student is called many times per
    backward pass, which DDP's hooks do not support, so the reduction is explicit)."""
    if world_size == 1:
        return
    for param in module.parameters():
        if param.requires_grad:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            dist.all_reduce(param.grad)
            param.grad /= world_size


def _optimiser_step(run: DistillationRun, name: str, world_size: int) -> None:
    module = run.owners[name]
    sync_gradients(module, 1 if run.sharded else world_size)  # FSDP reduces its own
    torch.nn.utils.clip_grad_norm_(module.parameters(), run.settings.grad_clip)
    run.optimizers[name].step()
    run.optimizers[name].zero_grad(set_to_none=True)


def restart_optimiser(optimizer: torch.optim.Optimizer) -> None:
    """Forget an optimiser's moments before the region stage takes the ODE stage's one: Adam
    divides by √v, and second moments sized to the ODE loss's small gradients would scale the
    region loss's first updates up (measured: the patch grid grows faster, docs/ABLATION.md)."""
    optimizer.state.clear()


def frame_losses(run: DistillationRun, sample: torch.Tensor, window: Window,
                 bits: torch.Tensor, perceptual: list[PerceptualTerm], losses: dict[str, float],
                 region_weight: float) -> torch.Tensor | float:
    """region_weight·L_region + the plug-ins' terms on the decoded samples (B, W, C, h, w)
    against the window's real frames, bits (B, W, H, W); adds each term to `losses`."""
    if not (region_weight or perceptual):
        return 0.0
    settings = run.settings
    frames = run.decoder.decode(sample.flatten(0, 1), differentiable=True)
    target = window.frames.flatten(0, 1)
    total = 0.0
    if region_weight:
        region = region_reconstruction_loss(frames, target, bits.flatten(0, 1),
                                            settings.region_weights, settings.ssim_weight,
                                            settings.edge_weight)
        total = total + region_weight * region
        losses["region"] = losses.get("region", 0.0) + region.item() / settings.grad_accumulation
    for term in perceptual:
        value = term(frames, target, window.poses)
        total = total + term.weight * value
        losses[term.name] = losses.get(term.name, 0.0) + value.item() / settings.grad_accumulation
    return total


def _own_samples(run: DistillationRun, data: ClipDataset, generator: torch.Generator,
                 shared: torch.Generator) -> tuple[Window, torch.Tensor]:
    """A fresh window and the student's rollout of it, each chunk stopping at a step drawn
    from `shared` (the same on every rank: a sharded model needs every rank's calls alike)."""
    settings, student = run.settings, run.student
    window = run.window(data.sample(settings.batch_size, run.window_frames, generator))
    exits = random_exit_steps(run.window_frames // student.chunk, len(student.levels()), shared)
    return window, student_sample(run, window, generator, exit_steps=exits)


def init_step(run: DistillationRun, data: ClipDataset, pairs: Path, generator: torch.Generator,
              world_size: int) -> dict[str, float]:
    settings, total = run.settings, 0.0
    for _ in range(settings.grad_accumulation):
        loss = stored_pair_loss(run, data, pairs, generator)
        (loss / settings.grad_accumulation).backward()
        total += loss.item() / settings.grad_accumulation
    _optimiser_step(run, "init", world_size)
    return {"ode": total}


def dmd_step(run: DistillationRun, data: ClipDataset, perceptual: list[PerceptualTerm],
             generator: torch.Generator, shared: torch.Generator,
             world_size: int) -> dict[str, float]:
    """`critic_updates` critic steps on fresh student samples, then one student step on the
    DMD loss and the decoded-frame losses. Logged: the critic's loss, the mean |DMD
    gradient|, the region loss (and plug-ins')."""
    settings = run.settings
    accumulation = settings.grad_accumulation
    losses = {"critic": 0.0, "dmd": 0.0}
    for _ in range(settings.critic_updates):
        for _ in range(accumulation):
            with torch.no_grad():
                window, sample = _own_samples(run, data, generator, shared)
            loss = critic_loss(run, window, sample, generator) / accumulation
            loss.backward()
            losses["critic"] += loss.item() / settings.critic_updates
        _optimiser_step(run, "critic", world_size)
    for _ in range(accumulation):
        window, sample = _own_samples(run, data, generator, shared)
        bits = batch_region_bits(window.poses, run.height, run.width)  # (B, W, H, W)
        weights = to_latent_grid(weights_from_bits(bits, settings.region_weights),
                                 tuple(sample.shape[-2:])).to(sample.device)
        real, fake = dmd_scores(run, sample, window, generator)
        gradient = dmd_gradient(sample, real, fake, weights)
        losses["dmd"] += gradient.abs().mean().item() / accumulation
        loss = dmd_loss(sample, gradient) + frame_losses(
            run, sample, window, bits, perceptual, losses, settings.region_loss_weight)
        (loss / accumulation).backward()
    _optimiser_step(run, "student", world_size)
    return losses


def region_step(run: DistillationRun, data: ClipDataset, perceptual: list[PerceptualTerm],
                pairs: Path, generator: torch.Generator, shared: torch.Generator,
                world_size: int) -> dict[str, float]:
    """One student step on the region loss (+ plug-ins) of its own samples, plus
    region_ode_weight times the ODE-pair loss, with the initialisation's optimiser; the
    critic is not called, the teacher only through the stored pairs."""
    settings = run.settings
    losses: dict[str, float] = {}
    for _ in range(settings.grad_accumulation):
        window, sample = _own_samples(run, data, generator, shared)
        bits = batch_region_bits(window.poses, run.height, run.width)
        loss = frame_losses(run, sample, window, bits, perceptual, losses, 1.0)
        if settings.region_ode_weight:
            ode = stored_pair_loss(run, data, pairs, generator)
            loss = loss + settings.region_ode_weight * ode
            losses["ode"] = losses.get("ode", 0.0) + ode.item() / settings.grad_accumulation
        (loss / settings.grad_accumulation).backward()
    _optimiser_step(run, "init", world_size)
    return losses


def write_sample(path: Path, run: DistillationRun, batch: dict, seed: int,
                 write: bool = True) -> None:
    """The real window beside the student's rendering of it (same poses and reference);
    `write=False` generates without writing (the other processes of a sharded run)."""
    from posecast.media import write_mp4
    from posecast.media.image import to_uint8_frames

    window = run.window(batch)
    network = run.modules["student"]
    was_training = network.training
    network.eval()
    with torch.no_grad():
        latents = student_sample(run, window, torch.Generator().manual_seed(seed))
        frames = run.decoder.decode(latents[0], differentiable=False)
    network.train(was_training)
    if not write:
        return
    side_by_side = torch.cat([window.frames[0].to(frames), frames], dim=-1)  # (W, 3, H, 2W)
    path.parent.mkdir(parents=True, exist_ok=True)
    with write_mp4(path, fps=run.fps) as mp4:
        for frame in to_uint8_frames(side_by_side):
            mp4.write(frame)


# ------------------------------------------------------------------------------ the loop


def resumed_settings(out: Path, max_steps: int | None = None, region_steps: int | None = None
                     ) -> tuple[Path, DistillConfig]:
    """The newest checkpoint in `out` and the settings it was saved with, its stage lengths
    changed where `max_steps` / `region_steps` are given (a resumed run can be extended or
    given a region stage; every other setting must stay as saved)."""
    found, settings = resumed(out, lambda saved: DistillConfig.from_dict(saved["distill_config"]))
    lengths = {name: value for name, value in
               (("max_steps", max_steps), ("region_steps", region_steps)) if value is not None}
    return found, dataclasses.replace(settings, **lengths)


# start(settings, env, on_message) → the family's run for these settings on env's device
StartRun = Callable[[DistillConfig, distributed.Distributed, Callable | None], DistillationRun]


def run_distillation(start: StartRun, dataset: str | os.PathLike, out: str | os.PathLike,
            settings: DistillConfig, resume: bool = False, device: str = "auto",
            on_step: Callable[[DistillReport], None] | None = None,
            on_message: Callable[[str], None] | None = None,
            on_pairs: Callable[[int, int], None] | None = None,
            source: dict | None = None) -> Path:
    """Distil a family's teacher into a student model folder `out` (also holding checkpoint/,
    ode_pairs/, train_log.jsonl and samples/): `start` makes the family's run (its
    `Family.distillation`; families.distill does both); `source`: where the teacher came
    from, kept in the checkpoint. Returns `out`."""
    out = Path(out)
    env = distributed.setup(device)
    try:
        if resume:
            found, settings = resumed_settings(out, settings.max_steps, settings.region_steps)
        run = start(settings, env, on_message)
        owners = run.owners if run.sharded else None
        step, counters = 0, {"critic_updates": 0, "generator_updates": 0}
        if resume:
            meta = restore(found, run.modules, run.optimizers, owners)
            step, counters = meta["step"], meta["counters"]
        data = ClipDataset(dataset, run.height, run.width, on_clip=on_message)
        perceptual = load_perceptual_terms(settings.perceptual, env.device, on_message)
        if env.is_main:
            mark(out, "run")
        if env.world_size > 1:
            dist.barrier()
        pairs = out / PAIRS_DIR
        if settings.init_steps and step < settings.init_steps:
            make_ode_pairs(run, pairs, data, env, on_pairs)
        fixed_sample = data.sample(1, run.window_frames,
                                   torch.Generator().manual_seed(settings.seed))

        def take_step(step: int) -> DistillReport:
            started = time.perf_counter()
            generator = step_generator(settings.seed, step, env.rank)
            shared = step_generator(settings.seed, step, -1)  # the same on every rank
            if step < settings.init_steps:
                phase, losses = "init", init_step(run, data, pairs, generator, env.world_size)
            elif step < settings.region_start:
                phase, losses = "dmd", dmd_step(run, data, perceptual, generator, shared,
                                                env.world_size)
                counters["critic_updates"] += settings.critic_updates
                counters["generator_updates"] += 1
            else:
                if step == settings.region_start:
                    restart_optimiser(run.optimizers["init"])
                phase, losses = "region", region_step(run, data, perceptual, pairs, generator,
                                                      shared, env.world_size)
            done = step + 1
            if settings.sample_every and done % settings.sample_every == 0 and \
                    (env.is_main or run.sharded):  # a sharded forward needs every process
                write_sample(out / "samples" / f"step-{done:06d}.mp4", run, fixed_sample,
                             settings.seed, write=env.is_main)
            windows = settings.batch_size * settings.grad_accumulation * env.world_size
            return DistillReport(done, settings.total_steps, phase, losses,
                                 counters["critic_updates"], counters["generator_updates"],
                                 windows / (time.perf_counter() - started))

        def save(step: int) -> None:
            states, optimizer_states = full_states(run.modules, run.optimizers, owners)
            if env.is_main:
                save_checkpoint(out / CHECKPOINT_DIR, step, states, optimizer_states,
                                {"distill_config": settings.to_dict(), **(source or {}),
                                 **run.checkpoint_meta, "dataset": str(dataset),
                                 "counters": counters})
                run.save_student(out, step, states["student"] if run.sharded else None)

        run_steps(out, env, step, settings.total_steps, settings.checkpoint_every, take_step,
                  save, on_step)
        return out
    finally:
        distributed.cleanup()

