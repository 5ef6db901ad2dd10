"""Frozen configuration dataclasses, saved as `config.json` beside the weights.

Teacher, student and critic are one backbone (`DenoiserConfig`); what differs is the attention
mode, causality and the sampler defaults.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posecast.errors import UsageError


@dataclass(frozen=True)
class CodecConfig:
    """How frames become the denoiser's latents.

    kind "pixel": the frame itself scaled to [-1, 1] (3 channels, no downsampling, no weights).
    kind "vae": a diffusers AutoencoderKL from `repo` (folder or Hub id, `subfolder`), with an
    optional fast decoder (`fast_decoder_repo`, an AutoencoderTiny) for inference.
    """

    kind: str = "pixel"
    repo: str | None = None
    subfolder: str | None = None
    revision: str | None = None
    fast_decoder_repo: str | None = None
    latent_channels: int = 3
    downsample: int = 1
    scaling_factor: float = 1.0


@dataclass(frozen=True)
class SamplerConfig:
    """Sampler defaults stored with a model (CLI flags override them)."""

    method: str = "euler"  # "euler" | "heun"
    steps: int = 25
    cfg: float = 2.0
    shift: float = 3.0  # timestep shift (SD3-style); > 1 spends more steps at high noise


@dataclass(frozen=True)
class DenoiserConfig:
    """The video denoiser: a DiT with joint spatio-temporal attention over a window."""

    height: int = 32  # frame size in pixels
    width: int = 32
    codec: CodecConfig = field(default_factory=CodecConfig)
    patch_size: int = 4  # latent pixels per token side
    hidden_size: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    pose_guider_channels: tuple[int, ...] = (16, 32)
    reference_frame: bool = False  # also prepend the reference as a frame tokens attend to
    attention: str = "dense"  # "dense" | "input_aware"
    attention_backend: str = "auto"  # input_aware: auto | dense | gather | flex
    k_frames: int = 3  # input_aware: pose-similar past frames each frame attends to (K)
    block_size: int = 128  # input_aware: tokens per flex block (128 on CUDA: kernel tiles)
    region_dilation: int = 1  # input_aware: grow token regions by this many tokens
    background_reach: int = 0  # input_aware: past frames background tokens see (paper: 0)
    chunk: int = 0  # > 0: a causal student generating chunks of this many frames (block-causal)
    window: int = 4  # frames per attention window
    overlap: int = 1  # frames shared by neighbouring windows in long videos
    fps: float = 25.0
    condition_dropout: float = 0.1  # training: drop pose + reference together (for CFG)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)

    def __post_init__(self) -> None:
        latent_h, latent_w = self.latent_size
        if self.height % self.codec.downsample or self.width % self.codec.downsample:
            raise ValueError(f"frame size {self.width}x{self.height} is not divisible by the "
                             f"codec's downsampling {self.codec.downsample}")
        if latent_h % self.patch_size or latent_w % self.patch_size:
            raise ValueError(f"latent size {latent_w}x{latent_h} is not divisible by the patch "
                             f"size {self.patch_size}")
        if self.hidden_size % self.heads or (self.hidden_size // self.heads) % 2:
            raise ValueError("hidden_size / heads must be an even whole number (RoPE pairs)")
        factor = self.codec.downsample * self.patch_size
        if 2 ** len(self.pose_guider_channels) != factor:
            raise ValueError(f"the pose guider needs log2({factor}) stride-2 layers, one per "
                             f"entry of pose_guider_channels")
        if self.codec.kind not in ("pixel", "vae"):
            raise ValueError(f"codec kind must be pixel or vae, not {self.codec.kind}")
        if self.sampler.method not in ("euler", "heun"):
            raise ValueError(f"sampler method must be euler or heun, not {self.sampler.method}")
        if self.attention not in ("dense", "input_aware"):
            raise ValueError(f"attention must be dense or input_aware, not {self.attention}")
        if not 0 <= self.overlap < self.window:
            raise ValueError("overlap must be at least 0 and smaller than window")
        if self.chunk and self.window % self.chunk:
            raise ValueError(f"a student's window ({self.window}) must be a whole number of "
                             f"chunks ({self.chunk})")
        if self.chunk and self.reference_frame:
            raise ValueError("a causal student takes the reference by channels only "
                             "(reference_frame must be false)")

    @property
    def is_student(self) -> bool:
        """A causal few-step student (distilled), rather than a bidirectional teacher."""
        return self.chunk > 0

    @property
    def context_frames(self) -> int:
        """Student: past frames held in the KV cache while a chunk is generated."""
        return self.window - self.chunk

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.height // self.codec.downsample, self.width // self.codec.downsample

    @property
    def token_grid(self) -> tuple[int, int]:
        """(rows, columns) of tokens per frame."""
        latent_h, latent_w = self.latent_size
        return latent_h // self.patch_size, latent_w // self.patch_size

    def replace(self, **changes: Any) -> DenoiserConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DenoiserConfig:
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        data["codec"] = CodecConfig(**data.get("codec", {}))
        data["sampler"] = SamplerConfig(**data.get("sampler", {}))
        if "pose_guider_channels" in data:
            data["pose_guider_channels"] = tuple(data["pose_guider_channels"])
        return cls(**data)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> DenoiserConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


SD_VAE = CodecConfig(kind="vae", repo="stabilityai/sd-vae-ft-mse", latent_channels=4,
                     downsample=8, scaling_factor=0.18215, fast_decoder_repo="madebyollin/taesd")

PRESETS: dict[str, DenoiserConfig] = {
    # Tests: seconds on a laptop CPU. 32×32 pixels, 8×8 = 64 tokens per frame.
    "tiny": DenoiserConfig(),
    # The bundled starter models: the teacher trains in minutes on one GPU, its 1-step student
    # renders at about 30 frames per second on a 2-core CPU. 64×64 pixels, 16×16 = 256 tokens
    # per frame.
    "mini": DenoiserConfig(height=64, width=64, patch_size=4, hidden_size=128, depth=4,
                           heads=4, pose_guider_channels=(16, 32), window=8, overlap=2),
    # One GPU in minutes, a CPU in about an hour: 128×128 pixels, 16×16 = 256 tokens per frame.
    "small": DenoiserConfig(height=128, width=128, patch_size=8, hidden_size=384, depth=8,
                            heads=6, pose_guider_channels=(32, 64, 128), window=8, overlap=2),
    # Workstation: 512×512 through an 8× VAE and 2×2 patches = 1,024 tokens per frame,
    # 16-frame windows, 12 heads × 128, about 1 B parameters.
    "base": DenoiserConfig(height=512, width=512, codec=SD_VAE, patch_size=2, hidden_size=1536,
                           depth=24, heads=12, pose_guider_channels=(32, 64, 128, 256),
                           window=16, overlap=4),
}


def preset(name: str, **changes: Any) -> DenoiserConfig:
    if name not in PRESETS:
        raise UsageError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].replace(**changes) if changes else PRESETS[name]
