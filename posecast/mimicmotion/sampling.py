"""Sampling MimicMotion: SVD's sampler over MimicMotion's fused windows.

Every step, each window of frames (frame 0, the reference's own pose, then `window − 1`
consecutive frames; neighbours share `overlap` frames) is denoised with CFG's two branches as
one batch, and the windows' predictions are averaged per frame with triangular weights that
favour a window's middle. The unconditional branch drops the CLIP token, the reference latent
and the pose together. The scheduler is SVD's own (diffusers' EulerDiscreteScheduler from the
model folder: v-prediction, Karras sigmas, EDM input scaling), guidance ramps per frame from
min to max, and the initial noise is one window's, repeated along time, as MimicMotion does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from posecast.media.image import to_uint8_frames
from posecast.mimicmotion.attention import InputAwareUNet
from posecast.mimicmotion.model import MimicMotionTeacher, Recipe
from posecast.pose.keypoints import Keypoints


def window_indices(frames: int, window: int, overlap: int) -> list[list[int]]:
    """The frames of each window: [0, i + 1, …, i + window − 1] for i = 0, window − overlap,
    …, and one more ending at the last frame if those miss it; one window of all frames when
    the video is no longer than a window."""
    if frames <= window:
        return [list(range(frames))]
    if not 0 <= overlap < window - 1:
        raise ValueError(f"overlap must be between 0 and window − 2 ({window - 2})")
    stride = window - overlap
    windows = [[0, *range(i + 1, i + window)] for i in range(0, frames - window + 1, stride)]
    if windows[-1][-1] < frames - 1:
        windows.append([0, *range(frames - window + 1, frames)])
    return windows


def fusion_weights(length: int) -> torch.Tensor:
    """(length,) triangular weights: (j + ½)·2 / length, mirrored past the middle."""
    ramp = (torch.arange(length, dtype=torch.float64) + 0.5) * 2.0 / length
    return torch.minimum(ramp, 2.0 - ramp)


def fuse(windows: list[list[int]], frames: int,
         predict: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
    """Per-frame weighted mean of predict(window) (B, len(window), …) over the windows."""
    total = count = None
    for index in windows:
        prediction = predict(index)
        weights = fusion_weights(len(index)).to(prediction.device, prediction.dtype)
        weights = weights.view(1, -1, *([1] * (prediction.ndim - 2)))
        if total is None:
            total = prediction.new_zeros(prediction.shape[0], frames, *prediction.shape[2:])
            count = prediction.new_zeros(frames)
        total[:, index] += prediction * weights
        count[index] += weights.flatten()
    return total / count.view(1, -1, *([1] * (total.ndim - 2)))


def clip_embedding(teacher: MimicMotionTeacher, image: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1] → (1, 1, D): resized to 224 px with antialiasing as SVD does
    (in [-1, 1]), normalised with CLIP's mean and std."""
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
        _resize_with_antialiasing,
    )

    resized = (_resize_with_antialiasing(image * 2.0 - 1.0, (224, 224)) + 1.0) / 2.0
    mean = torch.tensor(teacher.clip_mean).view(1, 3, 1, 1)
    std = torch.tensor(teacher.clip_std).view(1, 3, 1, 1)
    dtype = next(teacher.image_encoder.parameters()).dtype
    pixels = ((resized - mean) / std).to(teacher.device, dtype)
    return teacher.image_encoder(pixels).image_embeds[:, None]


def sample_latents(teacher: MimicMotionTeacher, reference: np.ndarray,
                   pose_maps: torch.Tensor | None, generator: torch.Generator,
                   frames: int | None = None, recipe: Recipe | None = None,
                   on_evaluation: Callable[[], None] | None = None,
                   attention: InputAwareUNet | None = None,
                   poses: Keypoints | None = None) -> torch.Tensor:
    """The latents (1, T, 4, h, w) of a video of `reference` (H, W, 3) uint8 at the recipe's
    size following pose_maps (T, 3, H, W) in [-1, 1] (frame 0: the reference's own pose), or
    of T = `frames` frames without pose. Noise comes from `generator` (the noise that augments
    the reference first, then the latents', as SVD's pipeline draws them). With `attention`
    (input-aware attention installed on the network), each window attends under the masks of
    its `poses` (Keypoints of all T frames in the frame's pixels)."""
    if attention is not None and poses is None:
        raise ValueError("input-aware attention needs the poses of every frame")
    recipe = recipe or teacher.recipe
    network, vae, device = teacher.network, teacher.vae, teacher.device
    dtype = next(network.parameters()).dtype
    frames = pose_maps.shape[0] if pose_maps is not None else frames
    image = torch.from_numpy(reference).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        embeddings = clip_embedding(teacher, image).to(dtype)
        pixels = image * 2.0 - 1.0
        noise = torch.randn(pixels.shape, generator=generator, dtype=pixels.dtype)
        pixels = (pixels + recipe.noise_aug_strength * noise).to(device)
        latent = vae.encode(pixels.to(next(vae.parameters()).dtype)).latent_dist.mode()
        latent = latent.to(dtype)  # (1, 4, h, w), unscaled
        time_ids = torch.tensor([[recipe.fps - 1, recipe.motion_bucket_id,
                                  recipe.noise_aug_strength]], device=device, dtype=dtype)
        scheduler = teacher.scheduler()
        scheduler.set_timesteps(recipe.steps, device=device)
        window = min(recipe.window, frames)
        shape = (1, window, latent.shape[1], *latent.shape[2:])
        latents = torch.randn(shape, generator=generator, dtype=dtype).to(device)
        latents = latents * scheduler.init_noise_sigma
        latents = latents.repeat(1, frames // window + 1, 1, 1, 1)[:, :frames]
        guidance = torch.linspace(recipe.min_guidance, recipe.max_guidance, frames,
                                  device=device, dtype=dtype).view(1, frames, 1, 1, 1)
        guided = recipe.max_guidance > 1.0
        reference_latents = latent[:, None].expand(-1, frames, -1, -1, -1)
        maps = None if pose_maps is None else pose_maps.to(device, dtype)[None]
        windows = window_indices(frames, recipe.window, recipe.overlap)
        prepared = {} if attention is None else {  # each window's masks, for every step
            tuple(index): attention.prepare(Keypoints.concatenate([poses[i] for i in index]),
                                            tuple(latent.shape[-2:])) for index in windows}

        for t in scheduler.timesteps:
            scaled = scheduler.scale_model_input(latents, t)

            def predict(index: list[int], scaled=scaled, t=t) -> torch.Tensor:
                if attention is None:
                    return predict_window(index, scaled, t)
                with attention.using(prepared[tuple(index)]):
                    return predict_window(index, scaled, t)

            def predict_window(index: list[int], scaled, t) -> torch.Tensor:
                x = torch.cat([scaled[:, index], reference_latents[:, index]], dim=2)
                pose = None if maps is None else maps[:, index]
                if guided and recipe.split_guidance:  # two batch-1 calls: half the activations
                    unconditional = torch.cat([scaled[:, index],
                                               torch.zeros_like(reference_latents[:, index])], 2)
                    out = torch.cat([
                        network(x, t, embeddings, time_ids, pose,
                                torch.tensor([True], device=device)),
                        network(unconditional, t, torch.zeros_like(embeddings), time_ids, pose,
                                torch.tensor([False], device=device))])
                elif guided:  # (conditional, unconditional) as one batch of 2
                    x = torch.cat([x, torch.cat([scaled[:, index],
                                                 torch.zeros_like(reference_latents[:, index])],
                                                dim=2)])
                    out = network(x, t, torch.cat([embeddings, torch.zeros_like(embeddings)]),
                                  time_ids.repeat(2, 1),
                                  None if pose is None else pose.repeat(2, 1, 1, 1, 1),
                                  torch.tensor([True, False], device=device))
                else:
                    out = network(x, t, embeddings, time_ids, pose)
                if on_evaluation is not None:
                    on_evaluation()
                return out

            prediction = fuse(windows, frames, predict)
            if guided:
                conditional, unconditional = prediction.chunk(2)
                prediction = unconditional + guidance * (conditional - unconditional)
            latents = scheduler.step(prediction, t, latents).prev_sample
    return latents


def decode_frames(teacher: MimicMotionTeacher, latents: torch.Tensor,
                  chunk: int | None = None) -> Iterator[np.ndarray]:
    """(H, W, 3) uint8 frames of latents (1, T, 4, h, w), `chunk` frames per decoder call."""
    vae = teacher.vae
    chunk = chunk or teacher.recipe.decode_chunk
    scaled = latents.flatten(0, 1) / vae.config.scaling_factor
    with torch.no_grad():
        for start in range(0, scaled.shape[0], chunk):
            part = scaled[start:start + chunk].to(next(vae.parameters()).dtype)
            yield from to_uint8_frames(vae.decode(part, num_frames=part.shape[0]).sample.float())
