"""Teacher generation: (reference portrait, pose sequence) → video frames.

All frames are denoised together: at every step, windows of `config.window` frames overlapping
by `config.overlap` predict velocities that are fused (diffusion/windows.py), so any length
works and activation memory is bounded by the window. Latents are decoded in chunks and
yielded as uint8 frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from posecast.attention.mask import mask_for_window
from posecast.devices import autocast
from posecast.diffusion.flow import SAMPLERS, guided, sampling_timesteps
from posecast.diffusion.windows import windowed_velocity
from posecast.dit.denoiser import Denoiser
from posecast.media.image import to_uint8_frames
from posecast.pose.draw import render_pose_maps
from posecast.pose.framing import crop_resize, fit_box, fit_keypoints
from posecast.pose.keypoints import Keypoints


@dataclass(frozen=True)
class Conditions:
    """What the denoiser is conditioned on, at the model's frame size."""

    reference: torch.Tensor  # (1, 3, H, W) in [-1, 1]
    pose_maps: torch.Tensor  # (T, 3, H, W) uint8, kept on the CPU (T may be large)
    poses: Keypoints  # the pose sequence in model-frame coordinates
    reference_keypoints: Keypoints | None = None  # the portrait's, in model-frame coordinates


def prepare_conditions(portrait: np.ndarray, poses: Keypoints, height: int, width: int,
                       portrait_keypoints: Keypoints | None = None) -> Conditions:
    """Fit the portrait (H₀, W₀, 3) uint8 and poses given in its pixel coordinates to the
    model's frame: the largest centred crop of the model's aspect ratio, resized."""
    box = fit_box(portrait.shape[1], portrait.shape[0], width, height)
    reference = torch.from_numpy(crop_resize(portrait, box)).permute(2, 0, 1)[None]
    fitted = fit_keypoints(poses, box)
    maps = torch.from_numpy(render_pose_maps(fitted, height, width)).permute(0, 3, 1, 2)
    reference_keypoints = None if portrait_keypoints is None else \
        fit_keypoints(portrait_keypoints, box)
    return Conditions(reference.float() / 127.5 - 1.0, maps.contiguous(), fitted,
                      reference_keypoints)


def sample_latents(model: Denoiser, codec, conditions: Conditions, steps: int, cfg: float,
                   seed: int, method: str = "euler", shift: float | None = None,
                   on_evaluation: Callable[[], None] | None = None) -> torch.Tensor:
    """Denoise all frames from seeded noise; returns latents (1, T, C, h, w) (float32).

    The noise comes from a CPU generator, so a seed gives the same video on any device.
    """
    config = model.config
    device = next(model.parameters()).device
    frames = conditions.pose_maps.shape[0]
    latent_h, latent_w = config.latent_size
    with torch.no_grad():
        reference = codec.encode(conditions.reference.to(device))
        noise = torch.randn((1, frames, config.codec.latent_channels, latent_h, latent_w),
                            generator=torch.Generator().manual_seed(seed)).to(device)

        plans: dict = {}  # window start → its input-aware AttentionPlan (same every step)

        def window_velocity(x, t, start, end, conditional):
            maps = conditions.pose_maps[start:end].to(device).float()[None] / 255.0
            keep = torch.tensor([conditional], device=device)
            if config.attention == "input_aware" and start not in plans:
                plans[start] = model.attention_plan(
                    [mask_for_window(conditions.poses[start:end], config,
                                     conditions.reference_keypoints)], device)
            with autocast(device):
                v = model(x, torch.full((1,), t, device=device), reference, maps, keep,
                          layout=plans.get(start))
            if on_evaluation is not None:
                on_evaluation()
            return v.float()

        def velocity(x, t, conditional):
            fused = windowed_velocity(
                lambda xw, tw, start, end: window_velocity(xw, tw, start, end, conditional),
                frames, config.window, config.overlap)
            return fused(x, t)

        timesteps = sampling_timesteps(steps, config.sampler.shift if shift is None else shift)
        return SAMPLERS[method](guided(velocity, cfg), noise, timesteps)


def model_evaluations(frames: int, steps: int, cfg: float, method: str, window: int,
                      overlap: int) -> int:
    """How many denoiser calls `sample_latents` makes (for progress bars)."""
    from posecast.diffusion.windows import window_starts

    per_velocity = len(window_starts(frames, window, overlap)) * (1 if cfg == 1.0 else 2)
    velocities = steps if method == "euler" else 2 * steps - 1
    return per_velocity * velocities


def decode_frames(codec, latents: torch.Tensor, chunk: int = 8) -> Iterator[np.ndarray]:
    """Yield (H, W, 3) uint8 frames from latents (1, T, C, h, w), decoding `chunk` at a time."""
    for start in range(0, latents.shape[1], chunk):
        yield from to_uint8_frames(codec.decode(latents[0, start:start + chunk]))
