"""Teacher speed: ms per denoising step, decode ms per frame, and the resulting FPS.

Weights are random (speed does not depend on them); a VAE codec is built from its standard
architecture with random weights too, so no download is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from posecast.config import DenoiserConfig
from posecast.models.denoiser import Denoiser


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


@dataclass(frozen=True)
class TeacherBench:
    """`bench teacher`'s answer for one family: the table's title and rows (column → text, in
    order) and the --json summary."""

    title: str
    rows: list[dict[str, str]]
    summary: dict


def gigabytes(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def random_codec(config: DenoiserConfig, device: torch.device, dtype: torch.dtype,
                 fast_decode: bool):
    """The configured codec with random weights (VAE: SD's AutoencoderKL layout)."""
    from posecast.models.codecs import PixelCodec

    if config.codec.kind == "pixel":
        return PixelCodec(config.codec), None
    from diffusers import AutoencoderKL, AutoencoderTiny

    if fast_decode:
        decoder = AutoencoderTiny(latent_channels=config.codec.latent_channels)
    else:
        blocks = 4
        decoder = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=config.codec.latent_channels,
            block_out_channels=(128, 256, 512, 512), layers_per_block=2,
            down_block_types=("DownEncoderBlock2D",) * blocks,
            up_block_types=("UpDecoderBlock2D",) * blocks)
    return None, decoder.to(device, dtype).eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(call: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Milliseconds per `call()` (gradients off), after one warm-up call (kernels,
    allocator), the device synchronised around the timed calls."""
    with torch.no_grad():
        call()
        _sync(device)
        started = time.perf_counter()
        for _ in range(repeats):
            call()
        _sync(device)
    return (time.perf_counter() - started) / repeats * 1000


def peak_memory_gb(device: torch.device) -> float | None:
    """The most memory allocated on a CUDA device since its last reset (None elsewhere)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


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

    pixel_codec, decoder = random_codec(config, device, dtype, fast_decode)

    def decode() -> None:
        if decoder is not None:
            decoder.decode(noisy[0])
        else:
            pixel_codec.decode(noisy[0])

    step_ms = time_calls(step, device, repeats)
    decode_ms = time_calls(decode, device, repeats) / frames
    seconds = (steps * step_ms + frames * decode_ms) / 1000
    rows, cols = config.token_grid
    peak = peak_memory_gb(device)
    return TeacherTiming(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        frames=frames, tokens=frames * rows * cols,
        parameters=sum(p.numel() for p in model.parameters()), step_ms=step_ms,
        decode_ms_per_frame=decode_ms, fps=frames / seconds, peak_memory_gb=peak)
