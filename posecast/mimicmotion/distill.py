"""The MimicMotion family's side of distillation (the paper's stage 2; train/distill.py runs
the loop and its stages), in SVD's EDM terms: levels are noise levels σ, D(x; σ) the clean
estimate (v-prediction with EDM's scalings); the critic (a copy of the teacher, conditional,
no guidance) trains on EDM's weighted loss at SVD's training levels; DMD compares the scores
at levels on Karras' ρ-scale; the teacher's ODE pairs follow Karras levels through each of the
student's k levels. Frames for the decoded-frame losses decode with the fast decoder
(`--fast-decoder`) or else SVD's VAE.

The teacher's windows are led by the reference's own frame and pose (frame 0, as MimicMotion
samples); its output there is dropped, and one draw of noise noises that lead frame for
every call of a score. With `gradient_checkpointing` the student's UNet blocks recompute in
the backward pass under the cache state they first read (causal.recompute_blocks), the
critic's ResNets with diffusers' own. With `fsdp` under torchrun the teacher, student and
critic are sharded block by block (train/sharding.py: the UNet's down, mid and up blocks, then
the rest). On CUDA every network keeps fp32 weights and computes in bf16 (autocast).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from posecast.devices import autocast
from posecast.diffusion.edm import edm_scalings, karras_interpolate, karras_levels
from posecast.errors import UsageError
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
from posecast.pose.keypoints import Keypoints
from posecast.train.distill import DistillConfig, Score, StartRun, make_optimizers
from posecast.weights import check_module


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


class MimicMotionDistillation:
    """A MimicMotion teacher (with CFG), its causal student and critic (copies of it) in fp32
    on `device`, with their optimisers: the DistillationRun of train/distill.py."""

    def __init__(self, teacher_folder: Path, settings: DistillConfig, device: torch.device,
                 fast_decoder: Path | None = None, sharded: bool = False) -> None:
        from posecast.mimicmotion.teacher import load_family_teacher

        family = load_family_teacher(teacher_folder, device)  # its attention, fp32 on CPU
        parts = family.teacher
        parts.network.to(torch.float32)
        self.settings, self.sharded = settings, sharded
        self.teacher_folder, self.fast_decoder = teacher_folder, fast_decoder
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
        critic_attention = None if family.attention is None else \
            InputAwareUNet(critic_network, family.attention.settings)
        self.critic = GuidedTeacher(critic_network, critic_attention)
        self.parts = parts
        if sharded:  # before the optimisers, which then hold the shards
            from posecast.train import sharding

            for network in (parts.network, self.student.network, critic_network):
                sharding.shard(network)
        self.optimizers = make_optimizers(self.student.network, critic_network, settings)
        self.modules = {"student": self.student.network, "critic": critic_network}
        self.owners = {"student": self.student.network, "critic": critic_network,
                       "init": self.student.network}
        tiny = None
        if fast_decoder is not None:
            from diffusers import AutoencoderTiny

            tiny = AutoencoderTiny.from_pretrained(fast_decoder).to(device).eval()
            tiny.requires_grad_(False)
            check_module(tiny, fast_decoder)
        self.decoder = PixelDecoder(parts.vae, tiny)
        recipe = parts.recipe
        self.window_frames, self.height, self.width = self.student_settings.window, \
            recipe.height, recipe.width
        self.fps = recipe.fps
        self.checkpoint_meta = {"family": "mimicmotion"}

    @staticmethod
    def _copy(network, config: dict) -> MimicMotion:
        copy = MimicMotion(config["unet"]).to(next(network.parameters()).device)
        copy.load_state_dict(network.state_dict())
        return copy.train().requires_grad_(True)

    def window(self, batch: dict) -> Window:
        return prepare_window(self.parts, batch)

    def score(self, window: Window, generator: torch.Generator) -> Score:
        """The teacher's and critic's D(x; σ), the lead frame noised with one draw."""
        lead_noise = torch.randn(window.lead_latent.shape, generator=generator).to(
            self.student.device)

        def clean(which: str, x: torch.Tensor, sigma: torch.Tensor, cfg: float) -> torch.Tensor:
            network = self.teacher if which == "teacher" else self.critic
            return network(window, x, sigma, lead_noise, cfg)

        return clean

    def trajectory_levels(self, ode_steps: int) -> tuple[list[float], list[int]]:
        return trajectory_levels(self.student_settings, ode_steps)

    def dmd_levels(self, fraction: torch.Tensor) -> torch.Tensor:
        """On Karras' ρ-scale: fraction 0 is σ_min, 1 is σ_max."""
        student = self.student_settings
        return karras_interpolate(fraction, student.sigma_min, student.sigma_max, student.rho)

    def training_levels(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """SVD's training levels: log σ ~ N(0.7, 1.6²)."""
        return torch.exp(0.7 + 1.6 * torch.randn(batch, generator=generator))

    def critic_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """EDM's weighting (σ² + σ_data²) / (σ·σ_data)² with σ_data = 1."""
        return (sigma**2 + 1) / sigma**2

    def save_student(self, out: Path, step: int, weights: dict | None) -> None:
        write_student(self, self.teacher_folder, out, self.fast_decoder, weights)


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


def mimicmotion_run(teacher_folder: Path, fast_decoder: Path | None = None) -> StartRun:
    """What the distillation loop (train/distill.py) starts for a MimicMotion teacher folder,
    with an AutoencoderTiny folder as the student's fast decoder when given."""
    return lambda settings, env, on_message: MimicMotionDistillation(
        teacher_folder, settings, env.device, fast_decoder, settings.fsdp and env.world_size > 1)
