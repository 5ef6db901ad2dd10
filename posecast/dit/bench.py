"""The DiT family's speed with random weights: its teacher per denoising step and per frame
(`posecast bench teacher`) and its parts of `bench render` (a random VAE of the configured
shapes, the teacher's one-window timing)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from posecast.bench.counters import count_flops
from posecast.bench.render import PipelineTiming
from posecast.bench.teacher import peak_memory_gb, sync, time_calls
from posecast.config import DenoiserConfig
from posecast.dit.codecs import PixelCodec
from posecast.dit.denoiser import Denoiser
from posecast.dit.sampling import Conditions, decode_frames, sample_latents
from posecast.extras import require_extra
from posecast.pose.draw import render_pose_maps
from posecast.pose.keypoints import Keypoints


@dataclass(frozen=True)
class TeacherTiming:
    device: str
    frames: int
    tokens: int
    parameters: int
    step_ms: float  # one denoising step of one window (with CFG: two model calls)
    decode_ms_per_frame: float
    fps: float  # frames / (steps × step time + decode time), I/O excluded
    peak_memory_gb: float | None


class RandomVae:
    """A codec with random weights in the configured VAE's shapes (timing only): SD's
    AutoencoderKL layout, or with `fast_decode` TAESD's AutoencoderTiny."""

    def __init__(self, config: DenoiserConfig, device: torch.device, dtype: torch.dtype,
                 fast_decode: bool) -> None:
        require_extra("vae")
        from diffusers import AutoencoderKL, AutoencoderTiny

        channels = config.codec.latent_channels
        if fast_decode:
            decoder = AutoencoderTiny(latent_channels=channels)
        else:
            decoder = AutoencoderKL(
                in_channels=3, out_channels=3, latent_channels=channels,
                block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4)
        self.decoder = decoder.to(device, dtype).eval()
        self.config, self.dtype = config, dtype

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        size = (frames.shape[-2] // self.config.codec.downsample,
                frames.shape[-1] // self.config.codec.downsample)
        return torch.zeros(frames.shape[0], self.config.codec.latent_channels, *size,
                           device=frames.device)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.decoder.decode(latents.to(self.dtype)).sample.clamp(-1, 1)


def bench_codec(config: DenoiserConfig, device: torch.device, fast_decode: bool, random: bool,
                dtype: torch.dtype | None = None):
    """The model's codec, or with `random` one of random weights (a pixel codec has none)."""
    from posecast.dit.codecs import make_codec

    if config.codec.kind == "pixel":
        return PixelCodec(config.codec)
    if random:
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        return RandomVae(config, device, dtype, fast_decode)
    return make_codec(config.codec, device, fast_decode=fast_decode)


def time_teacher_render(model: Denoiser, codec, reference: torch.Tensor, poses: Keypoints,
                        steps: int, cfg: float) -> PipelineTiming:
    """The teacher per frame from one window: one denoising step of its first window (CFG's
    branches as one batch) timed and multiplied by `steps`, plus decoding that window. The
    real sampler fuses overlapping windows, so a long video costs it somewhat more per frame;
    this keeps the bench short at real sizes."""
    config, device = model.config, next(model.parameters()).device
    window = poses[:min(len(poses), config.window)]
    maps = torch.from_numpy(render_pose_maps(window, config.height, config.width))
    conditions = Conditions(reference, maps.permute(0, 3, 1, 2).contiguous(), window)

    def one_step() -> torch.Tensor:
        return sample_latents(model, codec, conditions, 1, cfg, seed=0,
                              method=config.sampler.method)

    one_step()  # warm-up: kernels, allocator, compiled attention
    sync(device)
    started = time.perf_counter()
    latents = one_step()
    sync(device)
    step = time.perf_counter() - started
    started = time.perf_counter()
    for _ in decode_frames(codec, latents):
        pass
    sync(device)
    decode = time.perf_counter() - started
    per_frame, frames = len(window), len(poses)
    denoise = steps * step / per_frame * frames
    decode = decode / per_frame * frames
    flops = steps * count_flops(one_step) / per_frame
    return PipelineTiming("teacher", frames, denoise, decode, denoise + decode, None, None, flops)


def time_teacher(config: DenoiserConfig, steps: int, cfg: float, device: torch.device,
                 repeats: int = 3, fast_decode: bool = False) -> TeacherTiming:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    model = Denoiser(config).to(device, dtype).eval()
    frames = config.window
    latent_h, latent_w = config.latent_size
    channels = config.codec.latent_channels
    noisy = torch.randn(1, frames, channels, latent_h, latent_w, device=device, dtype=dtype)
    reference = torch.randn(1, channels, latent_h, latent_w, device=device, dtype=dtype)
    maps = torch.rand(1, frames, 3, config.height, config.width, device=device, dtype=dtype)
    calls = 1 if cfg == 1.0 else 2
    batch_noisy = noisy.expand(calls, -1, -1, -1, -1)
    keep = torch.tensor([True, False][:calls], device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:  # CFG runs its two branches as one batch of 2
        model(batch_noisy, torch.full((calls,), 0.5, device=device),
              reference.expand(calls, -1, -1, -1), maps.expand(calls, -1, -1, -1, -1), keep)

    codec = bench_codec(config, device, fast_decode, random=True, dtype=dtype)
    step_ms = time_calls(step, device, repeats)
    decode_ms = time_calls(lambda: codec.decode(noisy[0]), device, repeats) / frames
    seconds = (steps * step_ms + frames * decode_ms) / 1000
    rows, cols = config.token_grid
    peak = peak_memory_gb(device)
    return TeacherTiming(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        frames=frames, tokens=frames * rows * cols,
        parameters=sum(p.numel() for p in model.parameters()), step_ms=step_ms,
        decode_ms_per_frame=decode_ms, fps=frames / seconds, peak_memory_gb=peak)
