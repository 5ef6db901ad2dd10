"""Fitting the teacher: flow matching on random windows of a clip folder.

One code path for CPU, one GPU, and torchrun (DDP). Each step draws its data, noise and times
from a generator seeded by (seed, step, rank), so a resumed run repeats exactly what an
uninterrupted one would have done, with no RNG state to carry.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from posecast.attention.mask import mask_for_window
from posecast.config import REGION_RULES, TRAIN_RULES, DenoiserConfig
from posecast.data.clips import ClipDataset
from posecast.diffusion.flow import add_noise, sample_training_times
from posecast.dit.codecs import make_codec
from posecast.dit.denoiser import Denoiser
from posecast.dit.pretrained import from_pretrained, save_pretrained
from posecast.ownership import mark
from posecast.train import distributed, loop
from posecast.train.checkpoint import CHECKPOINT_DIR, save_checkpoint
from posecast.train.region_loss import RegionWeights, to_latent_grid, weights_from_bits
from posecast.validation import check_fields


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int = 2000
    batch_size: int = 4  # windows per process per step
    learning_rate: float = 3e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    checkpoint_every: int = 250
    gradient_checkpointing: bool = False
    grad_clip: float = 1.0
    seed: int = 0
    fsdp: bool = False  # under torchrun: shard the model and its EMA (sharding.py), not DDP
    # α per region in the loss weight w = 1 + Σ α_r·m_r (train/region_loss.py); regions not
    # named weigh 0, so the default is the plain flow-matching loss
    region_alphas: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_fields(vars(self), TRAIN_RULES)
        check_fields(self.region_alphas, REGION_RULES, "region_alphas.")


@dataclass(frozen=True)
class StepReport:
    step: int
    max_steps: int
    loss: float
    clips_per_second: float


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for ema_param, param in zip(ema.parameters(), model.parameters(), strict=True):
            ema_param.lerp_(param.detach().to(ema_param.dtype), 1 - decay)


def flow_matching_loss(model, codec, batch: dict[str, torch.Tensor], config: DenoiserConfig,
                       generator: torch.Generator, device: torch.device,
                       region_alphas: dict[str, float] | None = None) -> torch.Tensor:
    """Mean squared velocity error; with `region_alphas`, a mean weighted by the region
    weight map w (B, W, 1, h, w), normalised by w's mean so its scale matches the plain loss
    (the batch then needs "region_bits": ClipDataset(with_region_bits=True))."""
    frames = batch["frames"].to(device)  # (B, W, 3, H, W) in [-1, 1]
    size, window = frames.shape[0], frames.shape[1]
    latents = codec.encode(frames.flatten(0, 1)).unflatten(0, (size, window))
    reference = codec.encode(batch["reference"].to(device))
    noise = torch.randn(latents.shape, generator=generator).to(device, latents.dtype)
    t = sample_training_times(size, config.sampler.shift, generator, device)
    keep = (torch.rand(size, generator=generator) >= config.condition_dropout).to(device)
    masks = None
    if config.attention == "input_aware":
        masks = [mask_for_window(poses, config, reference_poses) for poses, reference_poses
                 in zip(batch["poses"], batch["reference_poses"], strict=True)]
    with torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda"):
        velocity = model(add_noise(latents, noise, t), t, reference,
                         batch["pose_maps"].to(device), keep, layout=masks)
    if not region_alphas:
        return F.mse_loss(velocity.float(), (noise - latents).float())
    alphas = RegionWeights(**{region: 0.0 for region in ("face", "lips", "hands", "arms")}
                           | region_alphas)
    weights = to_latent_grid(weights_from_bits(batch["region_bits"], alphas),
                             config.latent_size).to(device)
    squared = (velocity.float() - (noise - latents).float()) ** 2
    return (weights * squared).mean() / weights.mean()


def train_teacher(dataset: str | os.PathLike, out: str | os.PathLike, config: DenoiserConfig,
                  train: TrainConfig, resume: bool = False, device: str = "auto",
                  init_from: str | None = None, init_revision: str | None = None,
                  on_step: Callable[[StepReport], None] | None = None,
                  on_message: Callable[[str], None] | None = None) -> Path:
    """Train, checkpointing into `out/checkpoint`; the EMA weights go to `out` as a model
    folder at each checkpoint and at the end. Returns `out`.

    `init_from` (a model folder, or a repo id at `init_revision`) starts from trained
    weights: the paper's stage 1 fine-tunes a dense teacher with `config.attention =
    "input_aware"`. Its architecture must match `config` (attention settings may differ)."""
    out = Path(out)
    env = distributed.setup(device)
    try:
        if resume:  # the saved settings, and where the run started (for its model card)
            found, (config, train, init_from, init_revision) = loop.resumed(out, lambda saved: (
                DenoiserConfig.from_dict(saved["model_config"]),
                dataclasses.replace(TrainConfig(**saved["train_config"]),
                                    max_steps=train.max_steps),
                saved.get("initial_model"), saved.get("initial_revision")))
        torch.manual_seed(train.seed)  # identical initial weights on every rank
        model = Denoiser(config).to(env.device)
        if init_from is not None and not resume:
            model.load_state_dict(from_pretrained(init_from, init_revision).state_dict())
        model.gradient_checkpointing = train.gradient_checkpointing
        ema = copy.deepcopy(model).eval().requires_grad_(False)
        sharded = train.fsdp and env.world_size > 1
        if sharded:  # before the optimiser, which then holds the shards
            from posecast.train.sharding import shard

            for module in (model, ema):  # the EMA's shards follow the model's one for one
                shard(module)
        owners = {"model": model} if sharded else None
        optimizer = torch.optim.AdamW(model.parameters(), lr=train.learning_rate,
                                      weight_decay=train.weight_decay)
        modules = {"model": model, "ema": ema}
        step = loop.restore(found, modules, {"model": optimizer}, owners)["step"] if resume else 0
        codec = make_codec(config.codec, env.device)
        data = ClipDataset(dataset, config.height, config.width, on_clip=on_message,
                           with_region_bits=bool(train.region_alphas))
        trained = model
        if env.world_size > 1 and not sharded:
            trained = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
        if env.is_main:
            mark(out, "run")
        model.train()

        def take_step(step: int) -> StepReport:
            started = time.perf_counter()
            generator = loop.step_generator(train.seed, step, env.rank)
            batch = data.sample(train.batch_size, config.window, generator)
            loss = flow_matching_loss(trained, codec, batch, config, generator, env.device,
                                      train.region_alphas)
            loop.apply_gradients(loss, model, optimizer, train.grad_clip)
            ema_update(ema, model, min(train.ema_decay, (2 + step) / (11 + step)))
            return StepReport(step + 1, train.max_steps, loss.item(),
                              train.batch_size * env.world_size
                              / (time.perf_counter() - started))

        def save(step: int) -> None:
            states, optimizer_states = loop.full_states(modules, {"model": optimizer}, owners)
            if env.is_main:
                save_checkpoint(out / CHECKPOINT_DIR, step, states, optimizer_states,
                                {"model_config": config.to_dict(),
                                 "train_config": dataclasses.asdict(train),
                                 # not "init_from": that key marks a MimicMotion run
                                 "dataset": str(dataset), "initial_model": init_from,
                                 "initial_revision": init_revision})
                save_pretrained(ema, out, state=states["ema"] if sharded else None)

        loop.run_steps(out, env, step, train.max_steps, train.checkpoint_every, take_step, save,
                  on_step)
        return out
    finally:
        distributed.cleanup()

