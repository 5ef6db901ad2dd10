"""Distilling a MimicMotion teacher into its causal few-step student (the paper's stage 2).

The same stages and settings as the DiT family (train/distill.py, DistillConfig), in SVD's
EDM terms (D(x; σ) is the clean estimate, σ the noise level):
  1. ODE-pair initialisation: the teacher's Euler trajectories with its guidance, over levels
     that pass through each of the student's k levels σ_i, are stored as shards
     (`ode_pairs/`); the student, fed the trajectory's state at σ_i for each chunk (with the
     teacher's end point committed as the past chunks' context), regresses onto the end point.
  2. DMD: per generator step the critic (a copy of the teacher, conditional, no guidance)
     takes `critic_updates` EDM steps on fresh student samples; then the student takes one
     step along the DMD gradient at its samples x, (D_critic − D_teacher)(x + σε; σ) / mean
     |x − D_teacher|, scaled per latent pixel by the region weight map (face, lips, hands,
     arms: region_loss.py), plus λ_region times the region loss (masked L1 + SSIM) of the
     decoded samples against the clips' frames and any perceptual plug-ins; the teacher uses
     CFG. Frames decode with the fast decoder (`--fast-decoder`) or else SVD's VAE.
  3. Region steps (`region_steps`, none by default): the student's samples on the region
     loss (+ plug-ins), plus `region_ode_weight` times the stored ODE pairs' loss, with the
     initialisation's optimiser, restarted; neither the teacher nor the critic is called
     (the DiT family's third stage, train/distill.py).
Student samples come from the streaming Rollout, the code rendering uses, stopping each chunk at a
random step (backward simulation on the student's own cached rollouts).

The teacher's windows are led by the reference's own frame and pose (frame 0, as MimicMotion
samples); its output there is dropped. Every step's randomness comes from (seed, step, rank),
so a resumed run repeats an uninterrupted one (bit-exact on the CPU). Under torchrun the
gradients are averaged across processes. With `gradient_checkpointing` the student's UNet
blocks recompute in the backward pass under the cache state they first read
(causal.recompute_blocks), the critic's ResNets with diffusers' own. With `fsdp` under
torchrun the teacher, student and critic are sharded block by block (train/sharding.py: the
UNet's down, mid and up blocks, then the rest), checkpoints gathered into the same format.
On CUDA every network keeps fp32 weights and computes in bf16 (autocast), as the DiT family.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from posecast.diffusion.edm import edm_scalings, karras_interpolate, karras_levels
from posecast.errors import UsageError
from posecast.generate import autocast
from posecast.json_files import load_json_object
from posecast.mimicmotion.attention import InputAwareUNet
from posecast.mimicmotion.causal import recompute_blocks
from posecast.mimicmotion.model import MimicMotion, MimicMotionTeacher, read_config
from posecast.mimicmotion.sampling import clip_embedding
from posecast.mimicmotion.student import (
    Conditions,
    MimicMotionStudent,
    StudentSettings,
    init_student,
)
from posecast.ownership import mark
from posecast.pose.keypoints import Keypoints
from posecast.streaming.rollout import Rollout
from posecast.train.distill import DistillConfig, DistillReport
from posecast.weights import check_module

PAIRS_DIR = "ode_pairs"


def student_settings(teacher_folder: Path, settings: DistillConfig) -> StudentSettings:
    """The student's settings from a distillation's: chunk, k steps, attention; its window
    (cached frames + chunk) defaults to 3 chunks + 1."""
    window = settings.window or 4 * settings.chunk
    if window <= settings.chunk or window % settings.chunk:
        raise UsageError(f"--window {window}: a multiple of --chunk ({settings.chunk}) above "
                         "it (the cached frames plus one chunk)")
    levels = (read_config(teacher_folder).get("attention") or {}).get("levels")
    extra = {"levels": tuple(levels)} if levels else {}
    return StudentSettings(chunk=settings.chunk, context_frames=window - settings.chunk,
                           steps=settings.student_steps, attention=settings.attention,
                           k_frames=settings.k_frames, **extra)


@dataclass
class Window:
    """A batch of training windows: the student's W frames and the teacher's lead frame."""

    conditions: Conditions  # (B, …)
    frames: torch.Tensor  # (B, W, 3, H, W) the clips' real frames in [-1, 1]
    maps: torch.Tensor  # (B, W, 3, H, W) pose maps in [-1, 1]
    poses: list[Keypoints]  # B windows of W frames, frame pixels
    lead_latent: torch.Tensor  # (B, 4, h, w) the reference's scaled latent
    lead_maps: torch.Tensor  # (B, 1, 3, H, W) its pose map
    lead_poses: list[Keypoints]  # B single frames


def prepare_window(parts: MimicMotionTeacher, batch: dict) -> Window:
    from posecast.pose.dwpose import draw_dwpose

    recipe, vae, device = parts.recipe, parts.vae, parts.device
    dtype = next(parts.network.parameters()).dtype
    reference = batch["reference"]  # (B, 3, H, W) in [-1, 1]

    def maps_of(poses: list[Keypoints]) -> torch.Tensor:
        drawn = np.stack([draw_dwpose(p, recipe.height, recipe.width) for p in poses])
        return (torch.from_numpy(drawn).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0).to(
            device, dtype)

    with torch.no_grad():
        embeddings = torch.cat([clip_embedding(parts, (r[None] + 1) / 2) for r in reference])
        pixels = reference.to(device, next(vae.parameters()).dtype)
        latent = vae.encode(pixels).latent_dist.mode()
    size = reference.shape[0]
    time_ids = torch.tensor([[recipe.fps - 1, recipe.motion_bucket_id,
                              recipe.noise_aug_strength]] * size, device=device, dtype=dtype)
    conditions = Conditions(embeddings.to(dtype), latent.to(dtype), time_ids)
    return Window(conditions, batch["frames"].to(device).float(), maps_of(batch["poses"]),
                  list(batch["poses"]),
                  (latent * vae.config.scaling_factor).float(),
                  maps_of(batch["reference_poses"]), list(batch["reference_poses"]))


def edm_denoise(network, x: torch.Tensor, sigma: torch.Tensor, conditions: Conditions,
                maps: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """D(x; σ) of a (non-causal) MimicMotion network: x (B, T, 4, h, w), σ (B,); `keep`
    (B,) bool drops every condition of the False rows (CFG's unconditional branch)."""
    s = sigma.view(-1, 1, 1, 1, 1)
    c_in, c_skip, c_out, c_noise = edm_scalings(s)
    latent, embeddings = conditions.latent, conditions.embeddings
    if keep is not None:
        latent = latent * keep.view(-1, 1, 1, 1).to(latent.dtype)
        embeddings = embeddings * keep.view(-1, 1, 1).to(embeddings.dtype)
    dtype = next(network.parameters()).dtype
    sample = torch.cat([c_in * x, latent[:, None].expand(-1, x.shape[1], -1, -1, -1)], dim=2)
    with autocast(x.device):  # fp32 weights, bf16 matmuls and convolutions on CUDA
        out = network(sample.to(dtype), c_noise.flatten().to(dtype), embeddings.to(dtype),
                      conditions.time_ids, maps, keep)
    return c_skip * x + c_out * out.float()


class GuidedTeacher:
    """The teacher's D(x; σ) over a window led by the reference frame, with CFG; also the
    critic's (the same call without guidance)."""

    def __init__(self, network, attention: InputAwareUNet | None) -> None:
        self.network, self.attention = network, attention

    def __call__(self, window: Window, x: torch.Tensor, sigma: torch.Tensor,
                 lead_noise: torch.Tensor, cfg: float) -> torch.Tensor:
        """x (B, W, 4, h, w) at σ (B,); lead_noise (B, 4, h, w) noises the lead frame."""
        s = sigma.view(-1, 1, 1, 1)
        lead = (window.lead_latent + s * lead_noise)[:, None]
        led = torch.cat([lead, x], dim=1)
        maps = torch.cat([window.lead_maps, window.maps], dim=1)
        conditions, batch = window.conditions, x.shape[0]
        keep = None
        if cfg != 1.0:  # (conditional, unconditional) as one batch
            led, maps, sigma = led.repeat(2, 1, 1, 1, 1), maps.repeat(2, 1, 1, 1, 1), \
                sigma.repeat(2)
            conditions = Conditions(conditions.embeddings.repeat(2, 1, 1),
                                    conditions.latent.repeat(2, 1, 1, 1),
                                    conditions.time_ids.repeat(2, 1))
            keep = torch.arange(2 * batch, device=x.device) < batch
        if self.attention is None:
            out = edm_denoise(self.network, led, sigma, conditions, maps, keep)
        else:
            poses = [Keypoints.concatenate([lead_pose, poses]) for lead_pose, poses
                     in zip(window.lead_poses, window.poses, strict=True)]
            with self.attention.window(poses, tuple(x.shape[-2:])):
                out = edm_denoise(self.network, led, sigma, conditions, maps, keep)
        out = out[:, 1:]
        if cfg != 1.0:
            conditional, unconditional = out.chunk(2)
            out = unconditional + cfg * (conditional - unconditional)
        return out


class PixelDecoder:
    """Latents → frames with gradients to the latents, for the decoded-frame losses: the
    student's fast decoder (AutoencoderTiny) when it has one, else SVD's temporal VAE."""

    def __init__(self, vae, fast_decoder=None) -> None:
        self.vae, self.fast_decoder = vae, fast_decoder

    def decode(self, latents: torch.Tensor, differentiable: bool = True) -> torch.Tensor:
        """(N, 4, h, w) scaled latents → (N, 3, H, W) in [-1, 1] (bf16 autocast on CUDA)."""
        with autocast(latents.device):
            if self.fast_decoder is not None:
                return self.fast_decoder.decode(latents).sample.float()
            dtype = next(self.vae.parameters()).dtype
            scaled = (latents / self.vae.config.scaling_factor).to(dtype)
            return self.vae.decode(scaled, num_frames=latents.shape[0]).sample.float()


def trajectory_levels(student: StudentSettings, ode_steps: int) -> tuple[list[float], list[int]]:
    """The teacher's Euler levels, σ_max … σ_min then 0, passing through each student level
    σ_i; and the index of each σ_i among them. ode_steps is split evenly over the k
    intervals (rounded up)."""
    sigmas = student.sigmas()
    per = -(-ode_steps // len(sigmas))
    levels, marks = [], []
    for i, high in enumerate(sigmas):
        low = sigmas[i + 1] if i + 1 < len(sigmas) else student.sigma_min
        marks.append(len(levels))
        levels += karras_levels(high, low, per + 1, student.rho)[:-1]
    return levels + [student.sigma_min, 0.0], marks


def teacher_trajectory(teacher: GuidedTeacher, window: Window, noise: torch.Tensor,
                       lead_noise: torch.Tensor, student: StudentSettings, ode_steps: int,
                       cfg: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Euler steps of the teacher from `noise`·σ_max: its states at the student's k levels
    (k, B, W, 4, h, w) and the end point (B, W, 4, h, w)."""
    levels, marks = trajectory_levels(student, ode_steps)
    x = noise * levels[0]
    states = []
    with torch.no_grad():
        for i, (sigma, following) in enumerate(zip(levels[:-1], levels[1:], strict=True)):
            if i in marks:
                states.append(x)
            level = torch.full((x.shape[0],), sigma, device=x.device)
            denoised = teacher(window, x, level, lead_noise, cfg)
            x = denoised if following == 0 else x + (following - sigma) * (x - denoised) / sigma
    return torch.stack(states), x


def _stream(student: MimicMotionStudent, window: Window) -> Rollout:
    return Rollout(student, window.conditions, lambda s, e: window.maps[:, s:e],
                   lambda s, e: [poses[s:e] for poses in window.poses])


def ode_regression_loss(student: MimicMotionStudent, window: Window, states: torch.Tensor,
                        end: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mean over chunks of ‖D_student(state at σ_i) − end point‖², i drawn per chunk, the
    end point committed as context (teacher forcing)."""
    stream, sigmas = _stream(student, window), student.settings.sigmas()
    chunk, losses = student.settings.chunk, []
    for start in range(0, end.shape[1], chunk):
        i = int(torch.randint(len(sigmas), (1,), generator=generator))
        target = end[:, start:start + chunk]
        prediction = stream.regress(states[i][:, start:start + chunk], sigmas[i], target)
        losses.append(F.mse_loss(prediction, target))
    return torch.stack(losses).mean()


def student_sample(student: MimicMotionStudent, window: Window, frames: int,
                   generator: torch.Generator, exit_steps: list[int]) -> torch.Tensor:
    """A rollout of the student (B, W, 4, h, w), chunk c stopping at step exit_steps[c] with
    gradients on that step only."""
    stream, chunk = _stream(student, window), student.settings.chunk
    shape = (window.maps.shape[0], chunk, 4, *window.conditions.latent.shape[-2:])
    chunks = []
    for c, start in enumerate(range(0, frames, chunk)):
        noise = torch.randn(shape, generator=generator).to(student.device)
        chunks.append(stream.chunk(noise, lambda: torch.randn(shape, generator=generator)
                                   .to(student.device), commit=start + chunk < frames,
                                   exit_step=exit_steps[c]))
    return torch.cat(chunks, dim=1)


def dmd_level(generator: torch.Generator, batch: int, settings: DistillConfig,
              student: StudentSettings) -> torch.Tensor:
    """σ (B,): the level DMD compares the scores at, t ~ U[min, max] on Karras' ρ-scale
    (t = 0 is σ_min, 1 is σ_max)."""
    t = settings.dmd_min_time + (settings.dmd_max_time - settings.dmd_min_time) * torch.rand(
        batch, generator=generator, dtype=torch.float64)
    return karras_interpolate(t, student.sigma_min, student.sigma_max, student.rho).float()


def dmd_gradient(x: torch.Tensor, real: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 fake: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 sigma: torch.Tensor, noise: torch.Tensor,
                 weights: torch.Tensor | None) -> torch.Tensor:
    """The DMD gradient at student samples x (B, W, 4, h, w): with x_σ = x + σ·noise,
    (fake(x_σ, σ) − real(x_σ, σ)) / mean |x − real|, times `weights` (B, W, 1, h, w). Moving x
    along its negative moves the critic's estimate of the student's distribution towards
    the teacher's."""
    with torch.no_grad():
        noisy = x.detach() + sigma.view(-1, 1, 1, 1, 1) * noise
        real_x0, fake_x0 = real(noisy, sigma), fake(noisy, sigma)
        normaliser = (x.detach() - real_x0).abs().mean(dim=(1, 2, 3, 4), keepdim=True)
        gradient = (fake_x0 - real_x0) / normaliser.clamp_min(1e-6)
        if weights is not None:
            gradient = gradient * weights.to(gradient)
    return torch.nan_to_num(gradient)


def critic_loss(critic: GuidedTeacher, window: Window, sample: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
    """SVD's EDM loss of the critic on detached student samples."""
    batch = sample.shape[0]
    sigma = torch.exp(0.7 + 1.6 * torch.randn(batch, generator=generator)).to(sample.device)
    noise = torch.randn(sample.shape, generator=generator).to(sample.device)
    lead_noise = torch.randn(window.lead_latent.shape, generator=generator).to(sample.device)
    s = sigma.view(-1, 1, 1, 1, 1)
    denoised = critic(window, sample + s * noise, sigma, lead_noise, 1.0)
    return ((s**2 + 1) / s**2 * (denoised - sample) ** 2).mean()


class MimicMotionDistillation:
    """The networks, optimisers and data of one run (see `distill`)."""

    def __init__(self, teacher_folder: Path, settings: DistillConfig, device: torch.device,
                 world_size: int, fast_decoder: Path | None = None,
                 on_message: Callable[[str], None] | None = None,
                 sharded: bool = False) -> None:
        from posecast.mimicmotion.teacher import load_family_teacher

        family = load_family_teacher(teacher_folder, device)  # its attention, fp32 on CPU
        parts = family.teacher
        parts.network.to(torch.float32)
        self.settings = settings
        self.student_settings = student_settings(teacher_folder, settings)
        self.teacher = GuidedTeacher(parts.network, family.attention)
        self.cfg = parts.recipe.max_guidance if settings.teacher_cfg is None \
            else settings.teacher_cfg
        config = read_config(teacher_folder)
        torch.manual_seed(settings.seed)
        student_parts = dataclasses.replace(parts, network=self._copy(parts.network, config))
        self.student = MimicMotionStudent(student_parts, self.student_settings)
        critic_network = self._copy(parts.network, config)
        if settings.gradient_checkpointing:  # the critic is not causal: diffusers' own will do
            recompute_blocks(self.student.network, self.student.context)
            critic_network.unet.enable_gradient_checkpointing()
        critic_attention = None
        if family.attention is not None:
            critic_attention = InputAwareUNet(critic_network, family.attention.settings)
        self.critic = GuidedTeacher(critic_network, critic_attention)
        self.parts = parts
        if sharded:  # before the optimisers, which then hold the shards
            from posecast.train import sharding

            for network in (parts.network, self.student.network, critic_network):
                sharding.shard(network)
        # gradients are averaged across processes here, or by FSDP itself when sharded
        self.reduce = 1 if sharded else world_size
        self.optimizers = {
            "student": torch.optim.AdamW(self.student.network.parameters(),
                                         lr=settings.learning_rate, betas=(0.0, 0.999),
                                         weight_decay=0.0),
            "critic": torch.optim.AdamW(critic_network.parameters(),
                                        lr=settings.critic_learning_rate, betas=(0.0, 0.999),
                                        weight_decay=0.0),
            "init": torch.optim.AdamW(self.student.network.parameters(),
                                      lr=settings.init_learning_rate, weight_decay=0.0)}
        self.modules = {"student": self.student.network, "critic": critic_network}
        # the module each optimiser steps (for gathering and restoring a sharded one's state)
        self.owners = {"student": self.student.network, "critic": critic_network,
                       "init": self.student.network}
        tiny = None
        if fast_decoder is not None:
            from diffusers import AutoencoderTiny

            tiny = AutoencoderTiny.from_pretrained(fast_decoder).to(device).eval()
            tiny.requires_grad_(False)
            check_module(tiny, fast_decoder)
        self.decoder = PixelDecoder(parts.vae, tiny)
        from posecast.train.perceptual import load_perceptual_terms

        self.perceptual = load_perceptual_terms(settings.perceptual, device, on_message)
        self.counters = {"critic_updates": 0, "generator_updates": 0}

    @staticmethod
    def _copy(network, config: dict) -> MimicMotion:
        copy = MimicMotion(config["unet"]).to(next(network.parameters()).device)
        copy.load_state_dict(network.state_dict())
        return copy.train().requires_grad_(True)

    def _step(self, name: str, loss: torch.Tensor) -> None:
        from posecast.train.distill import sync_gradients

        module = self.modules["critic" if name == "critic" else "student"]
        loss.backward()
        sync_gradients(module, self.reduce)
        torch.nn.utils.clip_grad_norm_(module.parameters(), self.settings.grad_clip)
        self.optimizers[name].step()
        self.optimizers[name].zero_grad(set_to_none=True)

    def stored_pair_loss(self, data, pairs: Path, generator: torch.Generator) -> torch.Tensor:
        """The ODE regression loss on a randomly drawn stored pair, under the conditions of
        the windows it was made from."""
        from safetensors.torch import load_file

        from posecast.train.distill import pair_generator

        settings = self.settings
        index = int(torch.randint(settings.ode_pairs, (1,), generator=generator))
        pair = load_file(pairs / f"pair-{index:05d}.safetensors")
        batch = data.sample(settings.batch_size, pair["end"].shape[1],
                            pair_generator(settings.seed, index))
        window = prepare_window(self.parts, batch)
        device = self.student.device
        return ode_regression_loss(self.student, window, pair["states"].to(device),
                                   pair["end"].to(device), generator)

    def init_step(self, data, pairs: Path, generator: torch.Generator) -> dict[str, float]:
        loss = self.stored_pair_loss(data, pairs, generator)
        self._step("init", loss)
        return {"ode": loss.item()}

    def dmd_step(self, data, generator: torch.Generator, shared: torch.Generator
                 ) -> dict[str, float]:
        from posecast.train.distill import random_exit_steps
        from posecast.train.region_loss import (
            batch_region_bits,
            to_latent_grid,
            weights_from_bits,
        )

        settings, student = self.settings, self.student
        frames, chunk = self.student_settings.window, self.student_settings.chunk
        steps = self.student_settings.steps
        losses = {"critic": 0.0, "dmd": 0.0}
        for _ in range(settings.critic_updates):
            window = prepare_window(self.parts, data.sample(settings.batch_size, frames,
                                                            generator))
            with torch.no_grad():
                sample = student_sample(student, window, frames, generator,
                                        random_exit_steps(frames // chunk, steps, shared))
            loss = critic_loss(self.critic, window, sample, generator)
            self._step("critic", loss)
            losses["critic"] += loss.item() / settings.critic_updates
        self.counters["critic_updates"] += settings.critic_updates

        batch = data.sample(settings.batch_size, frames, generator)
        window = prepare_window(self.parts, batch)
        sample = student_sample(student, window, frames, generator,
                                random_exit_steps(frames // chunk, steps, shared))
        recipe = self.parts.recipe
        bits = batch_region_bits(window.poses, recipe.height, recipe.width)
        weights = to_latent_grid(weights_from_bits(bits, settings.region_weights),
                                 tuple(sample.shape[-2:])).to(sample.device)
        sigma = dmd_level(generator, sample.shape[0], settings, self.student_settings).to(
            sample.device)
        noise = torch.randn(sample.shape, generator=generator).to(sample.device)
        lead_noise = torch.randn(window.lead_latent.shape, generator=generator).to(
            sample.device)
        gradient = dmd_gradient(
            sample, lambda x, s: self.teacher(window, x, s, lead_noise, self.cfg),
            lambda x, s: self.critic(window, x, s, lead_noise, 1.0), sigma, noise, weights)
        from posecast.train.distill import dmd_loss, frame_losses

        loss = dmd_loss(sample, gradient) + frame_losses(
            sample, window, bits, self.decoder, settings, self.perceptual, losses,
            settings.region_loss_weight)
        self._step("student", loss)
        self.counters["generator_updates"] += 1
        losses["dmd"] = gradient.abs().mean().item()
        return losses

    def region_step(self, data, pairs: Path, generator: torch.Generator,
                    shared: torch.Generator) -> dict[str, float]:
        """One student step on the region loss (+ plug-ins) of its own samples, plus
        region_ode_weight times the ODE-pair loss, with the initialisation's optimiser; the
        critic is not called, the teacher only through the stored pairs."""
        from posecast.train.distill import frame_losses, random_exit_steps
        from posecast.train.region_loss import batch_region_bits

        settings, recipe = self.settings, self.parts.recipe
        frames, chunk = self.student_settings.window, self.student_settings.chunk
        window = prepare_window(self.parts, data.sample(settings.batch_size, frames, generator))
        sample = student_sample(self.student, window, frames, generator,
                                random_exit_steps(frames // chunk, self.student_settings.steps,
                                                  shared))
        bits = batch_region_bits(window.poses, recipe.height, recipe.width)
        losses: dict[str, float] = {}
        loss = frame_losses(sample, window, bits, self.decoder, settings, self.perceptual,
                            losses, 1.0)
        if settings.region_ode_weight:
            ode = self.stored_pair_loss(data, pairs, generator)
            loss = loss + settings.region_ode_weight * ode
            losses["ode"] = ode.item()
        self._step("init", loss)
        return losses


def make_ode_pairs(run: MimicMotionDistillation, data, folder: Path, env,
                   on_pairs: Callable[[int, int], None] | None, sharded: bool = False) -> None:
    """The teacher's trajectories for every shard not on disk: each process makes every
    world_size-th one, or, with a sharded teacher (whose every call involves all processes),
    all of them make every shard and rank 0 writes it."""
    import torch.distributed as dist
    from safetensors.torch import save_file

    from posecast.paths import atomic_output
    from posecast.train.distill import pair_generator

    settings = run.settings
    frames = run.student_settings.window
    folder.mkdir(parents=True, exist_ok=True)
    missing = [index for index in range(settings.ode_pairs)
               if not (folder / f"pair-{index:05d}.safetensors").exists()]
    if env.world_size > 1:
        dist.barrier()  # every process has listed the missing shards before any is written
    for index in range(settings.ode_pairs):
        path = folder / f"pair-{index:05d}.safetensors"
        if index in missing and (sharded or index % env.world_size == env.rank):
            generator = pair_generator(settings.seed, index)
            window = prepare_window(run.parts, data.sample(settings.batch_size, frames,
                                                           generator))
            shape = (settings.batch_size, frames, 4, *window.conditions.latent.shape[-2:])
            noise = torch.randn(shape, generator=generator).to(run.student.device)
            lead_noise = torch.randn(window.lead_latent.shape, generator=generator).to(
                run.student.device)
            states, end = teacher_trajectory(run.teacher, window, noise, lead_noise,
                                             run.student_settings, settings.ode_steps, run.cfg)
            if env.is_main or not sharded:
                with atomic_output(path) as tmp:
                    save_file({"states": states.cpu().contiguous(),
                               "end": end.cpu().contiguous()}, tmp)
        if on_pairs is not None:
            on_pairs(index + 1, settings.ode_pairs)
    if env.world_size > 1:
        dist.barrier()


def write_student(run: MimicMotionDistillation, teacher_folder: Path, out: Path,
                  fast_decoder: Path | None, weights: dict[str, torch.Tensor] | None = None
                  ) -> None:
    """The student folder: the teacher's components (copied once), the student's weights (its
    network's, or `weights`: a sharded one's gathered state dict) and settings, the fast
    decoder when given."""
    from safetensors.torch import save_file

    from posecast.paths import atomic_output

    if not (out / "config.json").is_file():
        init_student(teacher_folder, out, run.student_settings, fast_decoder)
    weights = run.student.network.state_dict() if weights is None else weights
    state = {key: value.detach().cpu().contiguous() for key, value in weights.items()}
    with atomic_output(out / "model.safetensors") as tmp:
        save_file(state, tmp, metadata={"format": "pt"})
    config = load_json_object(out / "config.json")
    config["distilled"] = {"teacher": str(teacher_folder), **run.settings.to_dict()}
    with atomic_output(out / "config.json") as tmp:
        tmp.write_text(json.dumps(config, indent=2, default=str) + "\n")


def distill(dataset: str | os.PathLike, teacher_source: str, out: str | os.PathLike,
            settings: DistillConfig, resume: bool = False, device: str = "auto",
            on_step: Callable[[DistillReport], None] | None = None,
            on_message: Callable[[str], None] | None = None,
            on_pairs: Callable[[int, int], None] | None = None,
            fast_decoder: str | os.PathLike | None = None) -> Path:
    """Distil the MimicMotion teacher at `teacher_source` into a student folder `out` (also
    holding checkpoint/, ode_pairs/ and train_log.jsonl). Returns `out`."""
    from safetensors import SafetensorError

    unsupported = [flag for flag, used in (("--grad-accumulation", settings.grad_accumulation > 1),
                                           ("--sample-every", settings.sample_every > 0)) if used]
    if unsupported:
        raise UsageError(f"{' and '.join(unsupported)}: not available for MimicMotion "
                         "students yet (use a larger --batch-size or more processes)")

    from posecast.data.clips import ClipDataset
    from posecast.hub import resolve_folder
    from posecast.train import distributed, sharding
    from posecast.train.checkpoint import (
        CHECKPOINT_DIR,
        damaged,
        load_checkpoint,
        open_log,
        read_checkpoint,
        save_checkpoint,
    )
    from posecast.train.distill import restart_optimiser, resumed_settings
    from posecast.train.teacher import step_generator

    out = Path(out)
    env = distributed.setup(device)
    try:
        if resume:
            found, settings = resumed_settings(out, settings.max_steps, settings.region_steps)
        teacher_folder = resolve_folder(teacher_source)
        sharded = settings.fsdp and env.world_size > 1
        run = MimicMotionDistillation(teacher_folder, settings, env.device, env.world_size,
                                      None if fast_decoder is None else Path(fast_decoder),
                                      on_message, sharded)
        owned = {name: (run.owners[name], optimizer)
                 for name, optimizer in run.optimizers.items()}
        step = 0
        if resume:
            try:
                if sharded:
                    meta, module_states, optimizer_states = read_checkpoint(
                        found, list(run.modules), list(run.optimizers))
                    sharding.load_full_states(run.modules, owned, module_states,
                                              optimizer_states)
                else:
                    meta = load_checkpoint(found, run.modules, run.optimizers)
            except (OSError, RuntimeError, ValueError, KeyError, SafetensorError) as error:
                raise damaged(found, error) from None
            step, run.counters = meta["step"], meta["counters"]
        recipe = run.parts.recipe
        data = ClipDataset(dataset, recipe.height, recipe.width, on_clip=on_message)
        if env.is_main:
            mark(out, "run")
        if settings.init_steps and step < settings.init_steps:
            make_ode_pairs(run, data, out / PAIRS_DIR, env, on_pairs, sharded)
        log = open_log(out, step) if env.is_main else None
        total = settings.total_steps
        while step < total:
            started = time.perf_counter()
            generator = step_generator(settings.seed, step, env.rank)
            shared = step_generator(settings.seed, step, -1)
            if step < settings.init_steps:
                phase, losses = "init", run.init_step(data, out / PAIRS_DIR, generator)
            elif step < settings.region_start:
                phase, losses = "dmd", run.dmd_step(data, generator, shared)
            else:
                if step == settings.region_start:
                    restart_optimiser(run.optimizers["init"])
                phase, losses = "region", run.region_step(data, out / PAIRS_DIR, generator,
                                                          shared)
            step += 1
            report = DistillReport(step, total, phase, losses, run.counters["critic_updates"],
                                   run.counters["generator_updates"],
                                   settings.batch_size * env.world_size
                                   / (time.perf_counter() - started))
            if env.is_main:
                log.write(json.dumps(dataclasses.asdict(report)) + "\n")
                log.flush()
                if on_step is not None:
                    on_step(report)
            if step % settings.checkpoint_every == 0 or step == total:
                states, optimizer_states = run.modules, run.optimizers
                if sharded:  # gathering is collective: every process takes part
                    states, optimizer_states = sharding.full_states(run.modules, owned)
                if env.is_main:
                    save_checkpoint(out / CHECKPOINT_DIR, step, states, optimizer_states,
                                    {"distill_config": settings.to_dict(),
                                     "family": "mimicmotion", "teacher": str(teacher_source),
                                     "counters": run.counters})
                    write_student(run, teacher_folder, out,
                                  None if fast_decoder is None else Path(fast_decoder),
                                  states["student"] if sharded else None)
        if log is not None:
            log.close()
        return out
    finally:
        distributed.cleanup()
