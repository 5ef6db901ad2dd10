"""Fine-tuning MimicMotion (the paper's stage 1): SVD's training objective on co-speech clips,
optionally with input-aware attention in the UNet.

The objective is SVD's (EDM with v-prediction, the parametrisation its sampler inverts): a
noise level σ with log σ ~ N(0.7, 1.6²) per window, x = latents + σ·ε,
  D(x) = x/(σ²+1) − σ/√(σ²+1) · F(x/√(σ²+1), ¼·ln σ),
loss = (σ²+1)/σ² · ‖D(x) − latents‖², averaged with the region weights w = 1 + Σ α_r·m_r
when --region-alpha is given. A window is the clip's reference frame (frame 0, with its own
pose, as MimicMotion samples) followed by frames of the clip; the reference conditions through
its CLIP token and its VAE latent on every frame; all three conditions are dropped together for
`condition_dropout` of the windows (CFG's unconditional branch). The VAE and CLIP stay frozen;
the UNet and the pose network train. Under torchrun the gradients are averaged (DDP), or with
`fsdp` the network is sharded block by block (FSDP2; checkpoints are gathered into the same
format, so sharded and unsharded runs resume each other). Every step's randomness comes from
(seed, step, rank), so --resume continues exactly (bit-exact on the CPU).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from posecast.devices import autocast
from posecast.diffusion.edm import edm_scalings
from posecast.mimicmotion.attention import InputAwareSettings, InputAwareUNet
from posecast.mimicmotion.model import COMPONENTS, load_teacher, read_config
from posecast.mimicmotion.sampling import clip_embedding
from posecast.ownership import mark
from posecast.pose.keypoints import Keypoints


@dataclass(frozen=True)
class FineTuneConfig:
    max_steps: int = 1000
    batch_size: int = 1  # windows per process per step
    frames: int = 16  # per window, frame 0 being the reference
    learning_rate: float = 1e-5
    checkpoint_every: int = 250
    gradient_checkpointing: bool = False
    grad_clip: float = 1.0
    seed: int = 0
    condition_dropout: float = 0.1
    noise_mean: float = 0.7  # log σ ~ N(noise_mean, noise_std²), as SVD was trained
    noise_std: float = 1.6
    fsdp: bool = False  # under torchrun: shard the network block by block (FSDP2)
    attention: str = "dense"  # or "input_aware"
    k_frames: int = 3
    levels: tuple[int, ...] = (1, 2, 3)  # UNet levels whose spatial attention becomes joint
    region_alphas: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FineTuneReport:
    step: int
    max_steps: int
    loss: float
    windows_per_second: float


def svd_loss(teacher, attention: InputAwareUNet | None, batch: dict,
             settings: FineTuneConfig, generator: torch.Generator) -> torch.Tensor:
    """SVD's EDM loss on one batch of windows (see the module's docstring)."""
    from posecast.pose.dwpose import draw_dwpose

    network, vae, device = teacher.network, teacher.vae, teacher.device
    dtype = next(network.parameters()).dtype
    recipe = teacher.recipe
    reference = batch["reference"]  # (B, 3, H, W) in [-1, 1]
    frames = torch.cat([reference[:, None], batch["frames"]], dim=1)  # (B, T, 3, H, W)
    size, length = frames.shape[:2]
    poses = [Keypoints.concatenate([ref, window]) for ref, window
             in zip(batch["reference_poses"], batch["poses"], strict=True)]
    maps = torch.stack([torch.from_numpy(draw_dwpose(p, recipe.height, recipe.width))
                        for p in poses]).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0
    with torch.no_grad():
        embeddings = torch.cat([clip_embedding(teacher, (r[None] + 1) / 2) for r in reference])
        latents = vae.encode(frames.flatten(0, 1).to(device, dtype)).latent_dist.sample(
            generator) * vae.config.scaling_factor
        latents = latents.unflatten(0, (size, length)).float()
        noise = torch.randn(reference.shape, generator=generator)
        augmented = (reference + recipe.noise_aug_strength * noise).to(device, dtype)
        reference_latent = vae.encode(augmented).latent_dist.mode().float()
    keep = (torch.rand(size, generator=generator) >= settings.condition_dropout).to(device)
    sigma = torch.exp(settings.noise_mean + settings.noise_std
                      * torch.randn(size, generator=generator)).to(device)
    epsilon = torch.randn(latents.shape, generator=generator).to(device)
    noisy = latents + sigma.view(-1, 1, 1, 1, 1) * epsilon
    s = sigma.view(-1, 1, 1, 1, 1)
    c_in, c_skip, c_out, _ = edm_scalings(s)
    keep5 = keep.view(-1, 1, 1, 1, 1).to(latents.dtype)
    conditioned = torch.cat([c_in * noisy, (reference_latent[:, None] * keep5)
                             .expand(-1, length, -1, -1, -1)], dim=2)
    time_ids = torch.tensor([[recipe.fps - 1, recipe.motion_bucket_id,
                              recipe.noise_aug_strength]] * size, device=device)
    inputs = (conditioned.to(dtype), edm_scalings(sigma)[3].to(dtype),
              (embeddings * keep.view(-1, 1, 1)).to(dtype), time_ids.to(dtype),
              maps.to(device, dtype), keep)
    with autocast(device):
        if attention is None:
            output = network(*inputs)
        else:
            with attention.window(poses, tuple(latents.shape[-2:])):
                output = network(*inputs)
    denoised = c_skip * noisy + c_out * output.float()
    weight = (s**2 + 1) / s**2
    error = weight * (denoised - latents) ** 2
    if not settings.region_alphas:
        return error.mean()
    from posecast.train.region_loss import RegionWeights, to_latent_grid, weights_from_bits

    alphas = RegionWeights(**{region: 0.0 for region in ("face", "lips", "hands", "arms")}
                           | settings.region_alphas)
    regions = to_latent_grid(weights_from_bits(batch["region_bits"], alphas),
                             latents.shape[-2:]).to(device)
    # frame 0, the reference, is another frame of the clip whose regions the batch lacks: 1
    regions = torch.cat([torch.ones_like(regions[:, :1]), regions], dim=1)
    return (regions * error).mean() / regions.mean()


def write_model(out: Path, init_folder: Path, network, settings: FineTuneConfig) -> None:
    """The fine-tuned model folder: the initial folder's SVD components and recipe, the new
    weights (`network`, or its full state dict), and the attention it was trained with."""
    from safetensors.torch import save_file

    from posecast.paths import atomic_output

    mark(out, "model")
    for name in COMPONENTS:
        if not (out / name).exists():
            shutil.copytree(init_folder / name, out / name)
    weights = network if isinstance(network, dict) else network.state_dict()
    state = {key: value.detach().cpu().contiguous() for key, value in weights.items()}
    with atomic_output(out / "model.safetensors") as tmp:
        save_file(state, tmp, metadata={"format": "pt"})
    config = read_config(init_folder)
    config["attention"] = {"mode": settings.attention, "k_frames": settings.k_frames,
                           "levels": list(settings.levels)}
    config["fine_tuned"] = {key: value for key, value in dataclasses.asdict(settings).items()}
    with atomic_output(out / "config.json") as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n")
    card = (init_folder / "README.md").read_text() if (init_folder / "README.md").is_file() \
        else ""
    with atomic_output(out / "README.md") as tmp:
        tmp.write_text(card + f"\n## Fine-tuned by posecast\n\nSettings: "
                       f"{json.dumps(config['fine_tuned'])}\n")


def fine_tune(dataset: str | os.PathLike, out: str | os.PathLike, init_from: str,
              settings: FineTuneConfig, resume: bool = False, device: str = "auto",
              on_step: Callable[[FineTuneReport], None] | None = None,
              on_message: Callable[[str], None] | None = None) -> Path:
    """Fine-tune the MimicMotion folder `init_from` on a clip folder into `out`."""
    from posecast.data.clips import ClipDataset
    from posecast.hub import resolve_folder
    from posecast.train import distributed, loop
    from posecast.train.checkpoint import CHECKPOINT_DIR, save_checkpoint

    out = Path(out)
    env = distributed.setup(device)
    try:
        if resume:
            found, (settings, init_from) = loop.resumed(out, lambda saved: (
                dataclasses.replace(FineTuneConfig(**saved["settings"]),
                                    max_steps=settings.max_steps), saved["init_from"]))
        init_folder = resolve_folder(init_from)
        teacher = load_teacher(init_folder, env.device)  # fp32 weights; bf16 autocast on CUDA
        network = teacher.network.train().requires_grad_(True)
        if settings.gradient_checkpointing:
            network.unet.enable_gradient_checkpointing()
        attention = None if settings.attention != "input_aware" else InputAwareUNet(
            network, InputAwareSettings(k_frames=settings.k_frames, levels=tuple(settings.levels)))
        sharded = settings.fsdp and env.world_size > 1
        if sharded:  # each UNet block, then the rest (conv_in, pose network, embeddings)
            from posecast.train.sharding import shard

            shard(network)
        optimizer = torch.optim.AdamW(network.parameters(), lr=settings.learning_rate)
        owners = {"model": network} if sharded else None
        step = loop.restore(found, {"model": network}, {"model": optimizer}, owners)["step"] \
            if resume else 0
        recipe = teacher.recipe
        data = ClipDataset(dataset, recipe.height, recipe.width, on_clip=on_message,
                           with_region_bits=bool(settings.region_alphas))
        if env.world_size > 1 and not sharded:
            teacher.network = torch.nn.parallel.DistributedDataParallel(
                network, device_ids=[env.device.index] if env.device.type == "cuda" else None)
        if env.is_main:
            mark(out, "run")

        def take_step(step: int) -> FineTuneReport:
            started = time.perf_counter()
            generator = loop.step_generator(settings.seed, step, env.rank)
            batch = data.sample(settings.batch_size, settings.frames - 1, generator)
            loss = svd_loss(teacher, attention, batch, settings, generator)
            loop.apply_gradients(loss, network, optimizer, settings.grad_clip)
            return FineTuneReport(step + 1, settings.max_steps, loss.item(),
                                  settings.batch_size * env.world_size
                                  / (time.perf_counter() - started))

        def save(step: int) -> None:
            modules, optimizers = loop.full_states({"model": network}, {"model": optimizer}, owners)
            if env.is_main:
                save_checkpoint(out / CHECKPOINT_DIR, step, modules, optimizers,
                                {"settings": dataclasses.asdict(settings),
                                 "init_from": str(init_from)})
                write_model(out, init_folder, modules["model"], settings)

        loop.run_steps(out, env, step, settings.max_steps, settings.checkpoint_every, take_step,
                  save, on_step)
        return out
    finally:
        distributed.cleanup()
