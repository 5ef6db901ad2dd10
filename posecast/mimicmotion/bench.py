"""MimicMotion's speed at real size with random weights (`posecast bench teacher --preset
mimicmotion`): the network is built on the meta device (no download, no initialisation cost)
and materialised on the target device with small random weights."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch

from posecast.mimicmotion.attention import InputAwareSettings, InputAwareUNet
from posecast.mimicmotion.model import MimicMotion
from posecast.pose.keypoints import Keypoints

# SVD img2vid-xt's UNet is diffusers' UNetSpatioTemporalConditionModel with its defaults; the
# tiny one has diffusers' own SVD test sizes (tests and CPU smoke runs)
UNETS = {
    "mimicmotion": {},
    "mimicmotion-tiny": dict(block_out_channels=(32, 64), layers_per_block=2, in_channels=8,
                             out_channels=4,
                             down_block_types=("CrossAttnDownBlockSpatioTemporal",
                                               "DownBlockSpatioTemporal"),
                             up_block_types=("UpBlockSpatioTemporal",
                                             "CrossAttnUpBlockSpatioTemporal"),
                             cross_attention_dim=32, num_attention_heads=8,
                             projection_class_embeddings_input_dim=96,
                             addition_time_embed_dim=32),
}


@dataclass(frozen=True)
class MimicMotionTiming:
    device: str
    frames: int  # per window
    parameters: int
    step_ms: float  # one denoising step of one window, CFG's two branches as one batch
    fps: float  # frames / (steps × step), denoising only
    peak_memory_gb: float | None


def random_network(preset: str | dict, device: torch.device, dtype: torch.dtype
                   ) -> MimicMotion:
    """A preset's network, or one of a UNet config (a model folder's)."""
    with torch.device("meta"):
        network = MimicMotion(UNETS[preset] if isinstance(preset, str) else preset)
    network = network.to_empty(device=device)
    generator = torch.Generator(device).manual_seed(0)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.normal_(0.0, 0.02, generator=generator)
    return network.to(dtype).eval()


def time_mimicmotion(preset: str | dict, height: int, width: int, frames: int, steps: int,
                     device: torch.device, repeats: int = 3, poses: Keypoints | None = None,
                     k_frames: int = 4) -> MimicMotionTiming:
    """With `poses` (a keypoint sequence, repeated or cut to the window and fitted to the
    frame), the UNet's spatial attention at levels 1–3 is input-aware under their masks."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    network = random_network(preset, device, dtype)
    window = contextlib.nullcontext
    if poses is not None:
        from posecast.pose.framing import fit_box, fit_keypoints

        fitted = fit_keypoints(Keypoints.concatenate([poses[min(i, len(poses) - 1)]
                                                      for i in range(frames)]),
                               fit_box(poses.width, poses.height, width, height))
        attention = InputAwareUNet(network, InputAwareSettings(k_frames=k_frames))
        prepared = attention.prepare(fitted, (height // 8, width // 8))
        window = lambda: attention.using(prepared)  # noqa: E731
    config = network.unet.config
    latent_h, latent_w = height // 8, width // 8
    g = torch.Generator(device).manual_seed(1)
    sample = torch.randn(2, frames, config.in_channels, latent_h, latent_w, generator=g,
                         device=device, dtype=dtype)
    embeddings = torch.randn(2, 1, config.cross_attention_dim, generator=g, device=device,
                             dtype=dtype)
    time_ids = torch.tensor([[6.0, 127.0, 0.0]] * 2, device=device, dtype=dtype)
    pose = torch.rand(2, frames, 3, height, width, generator=g, device=device, dtype=dtype)
    keep = torch.tensor([True, False], device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        with window():
            network(sample, 10.0, embeddings, time_ids, pose, keep)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.no_grad():
        step()  # warm-up: kernels, allocator
        sync()
        started = time.perf_counter()
        for _ in range(repeats):
            step()
        sync()
    step_ms = (time.perf_counter() - started) / repeats * 1000
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return MimicMotionTiming(
        torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", frames,
        sum(p.numel() for p in network.parameters()), step_ms,
        frames / (steps * step_ms / 1000), peak)


def random_student(preset: str, height: int, width: int, device: torch.device,
                   settings) -> tuple:
    """A random-weight student at `preset`'s UNet size and a random AutoencoderTiny with
    TAESD's architecture (speed does not depend on the weights), and random conditions."""
    from diffusers import AutoencoderTiny

    from posecast.mimicmotion.model import MimicMotionTeacher, Recipe
    from posecast.mimicmotion.student import Conditions, MimicMotionStudent

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    network = random_network(preset, device, dtype)
    parts = MimicMotionTeacher(network, None, None, (0.0,) * 3, (1.0,) * 3, {},
                               Recipe(height=height, width=width))
    decoder = AutoencoderTiny().to(device, dtype).eval().requires_grad_(False)
    student = MimicMotionStudent(parts, settings, decoder)
    config = network.unet.config
    g = torch.Generator(device).manual_seed(2)
    conditions = Conditions(
        torch.randn(1, 1, config.cross_attention_dim, generator=g, device=device, dtype=dtype),
        torch.randn(1, 4, height // 8, width // 8, generator=g, device=device, dtype=dtype),
        torch.tensor([[6.0, 127.0, 0.0]], device=device, dtype=dtype))
    return student, conditions
