"""Codecs: frames (N, 3, H, W) in [-1, 1] ↔ the denoiser's latents (N, C, h, w).

PixelCodec is weight-free (latents are the frames). VaeCodec wraps a diffusers AutoencoderKL
found through `hub.py`, optionally with an AutoencoderTiny as a fast decoder for inference.
"""

from __future__ import annotations

import torch

from posecast.config import CodecConfig
from posecast.extras import require_extra
from posecast.hub import resolve_folder
from posecast.weights import check_module


class PixelCodec:
    def __init__(self, config: CodecConfig) -> None:
        self.config = config

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return frames

    def decode(self, latents: torch.Tensor, differentiable: bool = False) -> torch.Tensor:
        return latents.clamp(-1, 1)


class VaeCodec:
    """Latents are the VAE's posterior mean × scaling_factor (SD convention)."""

    def __init__(self, config: CodecConfig, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, fast_decode: bool = False) -> None:
        require_extra("vae")
        from diffusers import AutoencoderKL, AutoencoderTiny

        self.config = config
        folder = resolve_folder(config.repo, config.revision, kind="VAE")
        self.vae = AutoencoderKL.from_pretrained(folder, subfolder=config.subfolder,
                                                 use_safetensors=True).to(device, dtype).eval()
        self.fast_decoder = None
        if fast_decode and config.fast_decoder_repo:
            fast = resolve_folder(config.fast_decoder_repo, kind="fast decoder")
            self.fast_decoder = AutoencoderTiny.from_pretrained(
                fast, use_safetensors=True).to(device, dtype).eval()
            check_module(self.fast_decoder, fast)
        check_module(self.vae, folder)
        self.vae.requires_grad_(False)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            posterior = self.vae.encode(frames.to(self.vae.dtype)).latent_dist
        return posterior.mean * self.config.scaling_factor

    def decode(self, latents: torch.Tensor, differentiable: bool = False) -> torch.Tensor:
        """Frames from latents; `differentiable` keeps the graph (training losses on frames)
        and always uses the full decoder."""
        if differentiable:
            scaled = latents.to(self.vae.dtype) / self.config.scaling_factor
            return self.vae.decode(scaled).sample.clamp(-1, 1)
        with torch.no_grad():
            if self.fast_decoder is not None:  # TAESD decodes scaled latents directly
                fast = self.fast_decoder.decode(latents.to(self.fast_decoder.dtype)).sample
                return fast.clamp(-1, 1)
            scaled = latents.to(self.vae.dtype) / self.config.scaling_factor
            return self.vae.decode(scaled).sample.clamp(-1, 1)


def make_codec(config: CodecConfig, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32, fast_decode: bool = False):
    if config.kind == "pixel":
        return PixelCodec(config)
    if config.kind == "vae":
        return VaeCodec(config, device, dtype, fast_decode)
    raise ValueError(f"unknown codec kind '{config.kind}' (pixel or vae)")
