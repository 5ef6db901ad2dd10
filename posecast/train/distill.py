"""Distilling the teacher into a few-step causal student (METHOD.md, "Distillation").

Stages, one step counter:
  1. ODE-pair initialisation (steps [0, init_steps)): teacher trajectories under the clips'
     conditions are stored as safetensors shards (`ode_pairs/`); the student, fed the
     trajectory's state at each of its timesteps with the teacher's end point as the past
     chunks' context, regresses onto the teacher's end point.
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
     DMD steps do, but draws that grid, so the bundled starter takes none; a region step
     costs about 1 s on an idle 2-core CPU (the ODE term adds a pass over a stored pair), a
     DMD step with 3 critic updates about 6 s.
Student samples come from the streaming Rollout, the code inference uses, stopping each chunk at a
random step (backward simulation).

Every step draws its data, noise and step choices from a generator seeded by
(seed, step, rank), so the checkpoint (student, critic, both optimisers, step, counters)
determines the rest of the run: a resumed run repeats an uninterrupted one. Under torchrun
the gradients are averaged across processes after each backward pass (see `sync_gradients`).
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

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from posecast.attention.mask import mask_for_window
from posecast.attention.plan import AttentionPlan
from posecast.config import DISTILL_RULES, REGION_RULES, DenoiserConfig, SamplerConfig
from posecast.data.clips import ClipDataset
from posecast.diffusion.flow import add_noise, sample_training_times, shift_time
from posecast.errors import InputError, UsageError
from posecast.generate import autocast
from posecast.models.codecs import make_codec, to_uint8_frames
from posecast.models.denoiser import Denoiser
from posecast.models.pretrained import from_pretrained, model_card, save_pretrained
from posecast.ownership import mark
from posecast.paths import atomic_output
from posecast.pose.keypoints import Keypoints
from posecast.streaming.rollout import Rollout
from posecast.student import DitStudent, student_timesteps
from posecast.train import distributed
from posecast.train.checkpoint import (
    CHECKPOINT_DIR,
    damaged,
    load_checkpoint,
    open_for_resume,
    open_log,
    read_checkpoint,
    save_checkpoint,
)
from posecast.train.perceptual import PerceptualTerm, load_perceptual_terms
from posecast.train.region_loss import (
    RegionWeights,
    batch_region_bits,
    region_reconstruction_loss,
    to_latent_grid,
    weights_from_bits,
)
from posecast.train.teacher import step_generator
from posecast.validation import as_tuple, build, check_fields

PAIRS_DIR = "ode_pairs"


@dataclass(frozen=True)
class DistillConfig:
    """Every setting of a distillation run (`posecast distill --config FILE` takes these
    names in JSON; flags override the file)."""

    # the student
    student_steps: int = 4  # k denoising steps per chunk (1–8)
    chunk: int = 4  # frames generated together (block-causal)
    window: int | None = None  # frames per training rollout (context + chunk); None: teacher's
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
    reference: torch.Tensor  # (B, C, h, w) the portrait latent
    pose_maps: torch.Tensor  # (B, W, 3, H, W) in [0, 1]
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
    layout = None
    if teacher_config.attention == "input_aware":
        layout = AttentionPlan.for_windows(
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
            return model(x, t, window.reference, window.pose_maps,
                         layout=window.layout_for(batch)).float()
        keep = torch.arange(2 * batch, device=x.device) < batch
        layout = window.layout_for(2 * batch)
        both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([window.reference] * 2),
                     torch.cat([window.pose_maps] * 2), keep, layout=layout).float()
    conditional, unconditional = both.chunk(2)
    return unconditional + cfg * (conditional - unconditional)


def _rollout(student: Denoiser, window: Window, timesteps: list[float]) -> Rollout:
    return Rollout(DitStudent(student, timesteps, device=window.frames.device), window.reference,
                   lambda s, e: window.pose_maps[:, s:e],
                   lambda s, e: [poses[s:e] for poses in window.poses])


def student_sample(student: Denoiser, window: Window, timesteps: list[float],
                   generator: torch.Generator, noise: torch.Tensor | None = None,
                   exit_steps: list[int] | None = None) -> torch.Tensor:
    """The student's video of every window (B, W, C, h, w), chunk by chunk. `exit_steps`
    (one per chunk) stops chunks early with gradients on that step (training); None runs all
    steps. Noise comes from `generator` (CPU) unless given."""
    config, device = student.config, window.frames.device
    shape = (window.size, window.pose_maps.shape[1], config.codec.latent_channels,
             *config.latent_size)
    if noise is None:
        noise = torch.randn(shape, generator=generator).to(device)
    chunk_shape = (shape[0], config.chunk, *shape[2:])
    rollout = _rollout(student, window, timesteps)
    chunks = []
    for index, start in enumerate(range(0, shape[1], config.chunk)):
        chunks.append(rollout.chunk(
            noise[:, start:start + config.chunk],
            lambda: torch.randn(chunk_shape, generator=generator).to(device),
            None if exit_steps is None else exit_steps[index],
            commit=start + config.chunk < shape[1]))
    return torch.cat(chunks, dim=1)


# ---------------------------------------------------------------------------- ODE pairs


def teacher_trajectory(teacher: Denoiser, window: Window, noise: torch.Tensor,
                       timesteps: list[float], ode_steps: int, cfg: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Euler-integrate the teacher from `noise` (B, W, C, h, w); returns its states at the
    student's times t_0…t_{k−1} (k, B, W, C, h, w) and its end point (B, W, C, h, w)."""
    k = len(timesteps) - 1
    per_interval = max(1, math.ceil(ode_steps / k))
    x, states = noise, []
    with torch.no_grad():
        for i in range(k):
            states.append(x)
            grid = torch.linspace(timesteps[i], timesteps[i + 1], per_interval + 1).tolist()
            for t, t_next in zip(grid[:-1], grid[1:], strict=True):
                times = torch.full((x.shape[0],), t, device=x.device)
                x = x + (t_next - t) * teacher_velocity(teacher, x, times, window, cfg)
    return torch.stack(states), x


def pair_generator(seed: int, index: int) -> torch.Generator:
    """The data of ODE-pair shard `index` (negative step numbers: never a training step's)."""
    return step_generator(seed, -1 - index, 0)


def make_ode_pairs(folder: Path, teacher: Denoiser, codec, data: ClipDataset,
                   settings: DistillConfig, window_frames: int, timesteps: list[float],
                   cfg: float, env: distributed.Distributed, sharded: bool = False,
                   on_progress: Callable[[int, int], None] | None = None) -> None:
    """Write the missing shards `shard-NNNNN.safetensors` (states, end point); each rank makes
    every world_size-th one, or, with a sharded teacher (whose every call involves all ranks),
    all ranks run every shard and rank 0 writes it. A shard's windows are re-drawn from its
    seed when used."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = [index for index in range(settings.ode_pairs)
               if not (folder / f"shard-{index:05d}.safetensors").exists()]
    if env.world_size > 1:
        dist.barrier()  # every rank has listed the missing shards before any is written
    for index in range(settings.ode_pairs):
        path = folder / f"shard-{index:05d}.safetensors"
        mine = sharded or index % env.world_size == env.rank
        if index in missing and mine:
            generator = pair_generator(settings.seed, index)
            window = prepare_window(data.sample(settings.batch_size, window_frames, generator),
                                    codec, teacher.config, env.device)
            shape = (window.size, window_frames, teacher.config.codec.latent_channels,
                     *teacher.config.latent_size)
            noise = torch.randn(shape, generator=generator).to(env.device)
            states, end = teacher_trajectory(teacher, window, noise, timesteps,
                                             settings.ode_steps, cfg)
            if env.is_main or not sharded:
                with atomic_output(path) as tmp:
                    save_file({"states": states.cpu().contiguous(),
                               "end": end.cpu().contiguous()},
                              tmp, metadata={"timesteps": json.dumps(timesteps)})
        if on_progress is not None:
            on_progress(index + 1, settings.ode_pairs)
    if env.world_size > 1:
        dist.barrier()


def load_ode_pair(folder: Path, index: int, timesteps: list[float]) -> dict[str, torch.Tensor]:
    path = folder / f"shard-{index:05d}.safetensors"
    try:
        pair = load_file(path)
    except (OSError, SafetensorError) as error:
        raise InputError(f"{path}: unreadable ODE pair ({error}); delete {folder} to make the "
                         "pairs again") from None
    if pair["states"].shape[0] != len(timesteps) - 1:
        raise InputError(f"{path}: made for another number of student steps; delete {folder} "
                         "to make the pairs again")
    return pair


def ode_regression_loss(student: Denoiser, window: Window, states: torch.Tensor,
                        end: torch.Tensor, timesteps: list[float],
                        generator: torch.Generator) -> torch.Tensor:
    """Mean over chunks of ‖student(x_{t_i}) − teacher end point‖², with i drawn per chunk
    and the teacher's end point as the past chunks' context (teacher forcing)."""
    chunk, frames = student.config.chunk, end.shape[1]
    rollout = _rollout(student, window, timesteps)
    losses = []
    for start in range(0, frames, chunk):
        i = int(torch.randint(len(timesteps) - 1, (1,), generator=generator))
        target = end[:, start:start + chunk]
        prediction = rollout.regress(states[i][:, start:start + chunk], timesteps[i],
                                           target)
        losses.append(F.mse_loss(prediction, target))
    return torch.stack(losses).mean()


# ------------------------------------------------------------------------------- DMD


def dmd_gradient(x: torch.Tensor, teacher: Denoiser, critic: Denoiser, window: Window,
                 generator: torch.Generator, settings: DistillConfig, cfg: float,
                 weights: torch.Tensor | None) -> torch.Tensor:
    """The DMD gradient at student samples x (B, W, C, h, w), region-weighted by `weights`
    (B, W, 1, h, w) or not (None)."""
    batch = x.shape[0]
    shift = teacher.config.sampler.shift
    uniform = torch.rand(batch, generator=generator, dtype=torch.float64)
    t = shift_time(settings.dmd_min_time + (settings.dmd_max_time - settings.dmd_min_time)
                   * uniform, shift).float().to(x.device)
    noise = torch.randn(x.shape, generator=generator).to(x.device)
    with torch.no_grad():
        noisy = add_noise(x.detach(), noise, t)
        scale = t.view(-1, 1, 1, 1, 1)
        real = noisy - scale * teacher_velocity(teacher, noisy, t, window, cfg)
        fake = noisy - scale * teacher_velocity(critic, noisy, t, window, 1.0)
        normaliser = (x.detach() - real).abs().mean(dim=(1, 2, 3, 4), keepdim=True)
        gradient = (fake - real) / normaliser.clamp_min(1e-6)
        if weights is not None:
            gradient = gradient * weights.to(gradient)
    return torch.nan_to_num(gradient)


def dmd_loss(x: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """A loss whose gradient with respect to x is `gradient` / x.numel()."""
    return 0.5 * F.mse_loss(x.float(), (x - gradient).detach().float())


def critic_loss(critic: Denoiser, sample: torch.Tensor, window: Window,
                generator: torch.Generator) -> torch.Tensor:
    """Flow matching of the critic on detached student samples (B, W, C, h, w)."""
    t = sample_training_times(sample.shape[0], critic.config.sampler.shift, generator,
                              sample.device)
    noise = torch.randn(sample.shape, generator=generator).to(sample.device)
    velocity = teacher_velocity(critic, add_noise(sample, noise, t), t, window, 1.0)
    return F.mse_loss(velocity, noise - sample)


def random_exit_steps(chunks: int, steps: int, generator: torch.Generator) -> list[int]:
    return torch.randint(steps, (chunks,), generator=generator).tolist()


# --------------------------------------------------------------------------- trainer


@dataclass(frozen=True)
class DistillReport:
    step: int
    total_steps: int
    phase: str  # "init" | "dmd"
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


def _optimiser_step(module, optimizer, world_size, clip):
    sync_gradients(module, world_size)  # world_size 1 (one process, or FSDP): nothing to do
    torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def restart_optimiser(optimizer: torch.optim.Optimizer) -> None:
    """Forget an optimiser's moments before the region stage takes the ODE stage's one: Adam
    divides by √v, and second moments sized to the ODE loss's small gradients would scale the
    region loss's first updates up (measured: the patch grid grows faster, docs/ABLATION.md)."""
    optimizer.state.clear()


def resumed_settings(out: Path, max_steps: int | None = None, region_steps: int | None = None
                     ) -> tuple[Path, DistillConfig]:
    """The newest checkpoint in `out` and the settings it was saved with, its stage lengths
    changed where `max_steps` / `region_steps` are given (a resumed run can be extended or
    given a region stage; every other setting must stay as saved)."""
    found, saved = open_for_resume(out)
    try:
        settings = DistillConfig.from_dict(saved["distill_config"])
    except (ValueError, KeyError, TypeError, UsageError) as error:
        raise damaged(found, error) from None
    lengths = {name: value for name, value in
               (("max_steps", max_steps), ("region_steps", region_steps)) if value is not None}
    return found, dataclasses.replace(settings, **lengths)


def distill(dataset: str | os.PathLike, teacher_source: str, out: str | os.PathLike,
            settings: DistillConfig, resume: bool = False, device: str = "auto",
            on_step: Callable[[DistillReport], None] | None = None,
            on_message: Callable[[str], None] | None = None,
            on_pairs: Callable[[int, int], None] | None = None,
            teacher_revision: str | None = None) -> Path:
    """Distil the teacher at `teacher_source` (a Hub repo id at `teacher_revision`, or a
    folder) into a student model folder `out` (also holding checkpoint/, ode_pairs/,
    train_log.jsonl and samples/). Returns `out`."""
    out = Path(out)
    env = distributed.setup(device)
    try:
        checkpoint_dir = out / CHECKPOINT_DIR
        if resume:
            found, settings = resumed_settings(out, settings.max_steps, settings.region_steps)
        teacher = from_pretrained(teacher_source, teacher_revision,
                                  device=env.device).requires_grad_(False)
        config = student_config(teacher.config, settings)
        torch.manual_seed(settings.seed)
        student = Denoiser(config).to(env.device)
        student.load_state_dict(teacher.state_dict())
        critic = Denoiser(teacher.config).to(env.device)
        critic.load_state_dict(teacher.state_dict())
        for model in (student, critic):
            model.gradient_checkpointing = settings.gradient_checkpointing
            model.train()
        sharded = settings.fsdp and env.world_size > 1
        if sharded:
            from posecast.train import sharding

            for model in (teacher, student, critic):
                sharding.shard(model)
        student_optimizer = torch.optim.AdamW(student.parameters(), lr=settings.learning_rate,
                                              betas=(0.0, 0.999), weight_decay=0.0)
        critic_optimizer = torch.optim.AdamW(critic.parameters(),
                                             lr=settings.critic_learning_rate,
                                             betas=(0.0, 0.999), weight_decay=0.0)
        init_optimizer = torch.optim.AdamW(student.parameters(),
                                           lr=settings.init_learning_rate, weight_decay=0.0)
        modules = {"student": student, "critic": critic}
        optimizers = {"student": student_optimizer, "critic": critic_optimizer,
                      "init": init_optimizer}
        owners = {"student": student, "critic": critic, "init": student}
        step, counters = 0, {"critic_updates": 0, "generator_updates": 0}
        if resume:
            try:
                if sharded:
                    meta, module_states, optimizer_states = read_checkpoint(
                        found, list(modules), list(optimizers))
                    sharding.load_full_states(
                        modules, {name: (owners[name], opt) for name, opt in optimizers.items()},
                        module_states, optimizer_states)
                else:
                    meta = load_checkpoint(found, modules, optimizers)
            except (OSError, RuntimeError, ValueError, KeyError, SafetensorError) as error:
                raise damaged(found, error) from None
            step, counters = meta["step"], meta["counters"]

        codec = make_codec(config.codec, env.device)
        data = ClipDataset(dataset, config.height, config.width, on_clip=on_message)
        timesteps = student_timesteps(student)
        cfg = teacher.config.sampler.cfg if settings.teacher_cfg is None else settings.teacher_cfg
        perceptual = load_perceptual_terms(settings.perceptual, env.device, on_message)
        if env.is_main:
            mark(out, "run")
        if env.world_size > 1:
            dist.barrier()
        pairs_dir = out / PAIRS_DIR
        if settings.init_steps and step < settings.init_steps:
            make_ode_pairs(pairs_dir, teacher, codec, data, settings, config.window,
                           timesteps, cfg, env, sharded, on_pairs)

        log = open_log(out, step) if env.is_main else None
        fixed_sample = data.sample(1, config.window, torch.Generator().manual_seed(settings.seed))
        while step < settings.total_steps:
            started = time.perf_counter()
            generator = step_generator(settings.seed, step, env.rank)
            # the same on every rank: where each chunk's rollout stops (a sharded model needs
            # every rank to make the same calls)
            shared = step_generator(settings.seed, step, -1)
            reduce = 1 if sharded else env.world_size  # FSDP reduces gradients itself
            if step < settings.init_steps:
                phase, losses = "init", _init_step(student, init_optimizer, codec, data, teacher,
                                                   settings, timesteps, pairs_dir, generator,
                                                   env, reduce)
            elif step < settings.region_start:
                phase, losses = "dmd", _dmd_step(student, critic, teacher, student_optimizer,
                                                 critic_optimizer, codec, data, settings,
                                                 timesteps, cfg, perceptual, generator,
                                                 shared, env, reduce)
                counters["critic_updates"] += settings.critic_updates
                counters["generator_updates"] += 1
            else:
                if step == settings.region_start:
                    restart_optimiser(init_optimizer)
                phase, losses = "region", _region_step(student, init_optimizer, codec, data,
                                                       teacher.config, settings, timesteps,
                                                       perceptual, pairs_dir, generator, shared,
                                                       env, reduce)
            step += 1
            windows = settings.batch_size * settings.grad_accumulation * env.world_size
            report = DistillReport(step, settings.total_steps, phase, losses,
                                   counters["critic_updates"], counters["generator_updates"],
                                   windows / (time.perf_counter() - started))
            if env.is_main:
                log.write(json.dumps(dataclasses.asdict(report)) + "\n")
                log.flush()
                if on_step is not None:
                    on_step(report)
            if settings.sample_every and step % settings.sample_every == 0 and \
                    (env.is_main or sharded):  # a sharded forward needs every process
                write_sample(out / "samples" / f"step-{step:06d}.mp4", student, codec,
                             teacher.config, fixed_sample, timesteps, settings.seed,
                             env.device, write=env.is_main)
            if step % settings.checkpoint_every == 0 or step == settings.total_steps:
                states, optimizer_states = modules, optimizers
                if sharded:  # gathering is collective: every process takes part
                    states, optimizer_states = sharding.full_states(
                        modules, {name: (owners[name], opt) for name, opt in optimizers.items()})
                if env.is_main:
                    save_checkpoint(checkpoint_dir, step, states, optimizer_states,
                                    {"distill_config": settings.to_dict(),
                                     "student_config": config.to_dict(),
                                     "teacher": str(teacher_source),
                                     "teacher_revision": teacher_revision,
                                     "dataset": str(dataset), "counters": counters})
                    save_pretrained(student, out, student_card(config, settings,
                                                               teacher_source, step),
                                    state=states["student"] if sharded else None)
        if log is not None:
            log.close()
        return out
    finally:
        distributed.cleanup()


def stored_pair_loss(student, codec, data, teacher_config, settings, timesteps, pairs_dir,
                     generator, env) -> torch.Tensor:
    """The ODE regression loss on a randomly drawn stored pair shard, under the conditions
    of the windows it was made from."""
    index = int(torch.randint(settings.ode_pairs, (1,), generator=generator))
    pair = load_ode_pair(pairs_dir, index, timesteps)
    window = prepare_window(data.sample(settings.batch_size, pair["end"].shape[1],
                                        pair_generator(settings.seed, index)),
                            codec, teacher_config, env.device)
    return ode_regression_loss(student, window, pair["states"].to(env.device),
                               pair["end"].to(env.device), timesteps, generator)


def _init_step(student, optimizer, codec, data, teacher, settings, timesteps, pairs_dir,
               generator, env, reduce: int) -> dict[str, float]:
    total = 0.0
    for _ in range(settings.grad_accumulation):
        loss = stored_pair_loss(student, codec, data, teacher.config, settings, timesteps,
                                pairs_dir, generator, env)
        (loss / settings.grad_accumulation).backward()
        total += loss.item() / settings.grad_accumulation
    _optimiser_step(student, optimizer, reduce, settings.grad_clip)
    return {"ode": total}


def _dmd_step(student, critic, teacher, student_optimizer, critic_optimizer, codec, data,
              settings, timesteps, cfg, perceptual: list[PerceptualTerm], generator,
              shared, env, reduce: int) -> dict[str, float]:
    config = student.config
    chunks = config.window // config.chunk
    steps = len(timesteps) - 1
    # logged: the critic's loss, the mean |DMD gradient|, the region loss (and plug-ins')
    losses = {"critic": 0.0, "dmd": 0.0, "region": 0.0}
    for _ in range(settings.critic_updates):
        for _ in range(settings.grad_accumulation):
            window = prepare_window(data.sample(settings.batch_size, config.window, generator),
                                    codec, teacher.config, env.device)
            with torch.no_grad():
                sample = student_sample(student, window, timesteps, generator,
                                        exit_steps=random_exit_steps(chunks, steps, shared))
            loss = critic_loss(critic, sample, window, generator) / settings.grad_accumulation
            loss.backward()
            losses["critic"] += loss.item() / settings.critic_updates
        _optimiser_step(critic, critic_optimizer, reduce, settings.grad_clip)

    for _ in range(settings.grad_accumulation):
        batch = data.sample(settings.batch_size, config.window, generator)
        window = prepare_window(batch, codec, teacher.config, env.device)
        sample = student_sample(student, window, timesteps, generator,
                                exit_steps=random_exit_steps(chunks, steps, shared))
        bits = batch_region_bits(window.poses, config.height, config.width)  # (B, W, H, W)
        pixel_weights = weights_from_bits(bits, settings.region_weights).to(env.device)
        gradient = dmd_gradient(sample, teacher, critic, window, generator, settings, cfg,
                                to_latent_grid(pixel_weights, config.latent_size))
        loss = dmd_loss(sample, gradient)
        losses["dmd"] += gradient.abs().mean().item() / settings.grad_accumulation
        loss = loss + frame_losses(sample, window, bits, codec, settings, perceptual, losses,
                                    settings.region_loss_weight)
        (loss / settings.grad_accumulation).backward()
    _optimiser_step(student, student_optimizer, reduce, settings.grad_clip)
    return losses


def frame_losses(sample, window: Window, bits: torch.Tensor, codec, settings: DistillConfig,
                  perceptual: list[PerceptualTerm], losses: dict[str, float],
                  region_weight: float) -> torch.Tensor | float:
    """region_weight·L_region + the plug-ins' terms on the decoded samples (B, W, C, h, w)
    against the window's real frames, bits (B, W, H, W); adds each term to `losses`."""
    if not (region_weight or perceptual):
        return 0.0
    frames = codec.decode(sample.flatten(0, 1), differentiable=True)
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


def _region_step(student, optimizer, codec, data, teacher_config, settings, timesteps,
                 perceptual: list[PerceptualTerm], pairs_dir, generator, shared, env,
                 reduce: int) -> dict[str, float]:
    """One student step on the region loss (+ plug-ins) of its own samples, plus
    region_ode_weight times the ODE-pair loss."""
    config = student.config
    chunks, steps = config.window // config.chunk, len(timesteps) - 1
    losses: dict[str, float] = {}
    for _ in range(settings.grad_accumulation):
        window = prepare_window(data.sample(settings.batch_size, config.window, generator),
                                codec, teacher_config, env.device)
        sample = student_sample(student, window, timesteps, generator,
                                exit_steps=random_exit_steps(chunks, steps, shared))
        bits = batch_region_bits(window.poses, config.height, config.width)
        loss = frame_losses(sample, window, bits, codec, settings, perceptual, losses, 1.0)
        if settings.region_ode_weight:
            ode = stored_pair_loss(student, codec, data, teacher_config, settings, timesteps,
                                   pairs_dir, generator, env)
            loss = loss + settings.region_ode_weight * ode
            losses["ode"] = losses.get("ode", 0.0) + ode.item() / settings.grad_accumulation
        (loss / settings.grad_accumulation).backward()
    _optimiser_step(student, optimizer, reduce, settings.grad_clip)
    return losses


def student_card(config: DenoiserConfig, settings: DistillConfig, teacher: str,
                 step: int) -> str:
    recipe = json.dumps(settings.to_dict(), indent=2)
    return model_card(config, (
        f"## Distilled student\n\nA causal {config.sampler.steps}-step student generating "
        f"{config.chunk}-frame chunks with {config.context_frames} frames of KV cache, "
        f"distilled from `{teacher}` for {step} steps (`posecast distill`). Render with "
        f"`posecast render`.\n\nSettings:\n\n```json\n{recipe}\n```"))


def write_sample(path: Path, student: Denoiser, codec, teacher_config: DenoiserConfig,
                 batch: dict, timesteps: list[float], seed: int, device: torch.device,
                 write: bool = True) -> None:
    """The real window beside the student's rendering of it (same poses and reference);
    `write=False` generates without writing (the other processes of a sharded run)."""
    from posecast.media import write_mp4

    window = prepare_window(batch, codec, teacher_config, device)
    was_training = student.training
    student.eval()
    with torch.no_grad():
        latents = student_sample(student, window, timesteps, torch.Generator().manual_seed(seed))
        frames = codec.decode(latents[0])
    student.train(was_training)
    if not write:
        return
    side_by_side = torch.cat([window.frames[0], frames], dim=-1)  # (W, 3, H, 2W)
    path.parent.mkdir(parents=True, exist_ok=True)
    with write_mp4(path, fps=student.config.fps) as mp4:
        for frame in to_uint8_frames(side_by_side):
            mp4.write(frame)
