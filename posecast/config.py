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

from posecast.errors import ConfigError, UsageError
from posecast.json_files import load_json
from posecast.validation import (
    FLAG,
    TEXT_OR_NULL,
    Rule,
    as_tuple,
    build,
    check_fields,
    number,
    one_of,
    whole,
)

MAX_SIDE = 4096  # pixels a frame side (as `--size` allows)
MAX_TOKENS_PER_FRAME = 128 * 128  # more does not fit attention over a window in any memory
MAX_PARAMETERS = 20e9  # about 12·depth·hidden_size² (the blocks' weights)


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

    def __post_init__(self) -> None:
        check_fields(vars(self), CODEC_RULES)
        if self.kind == "vae" and self.repo is None:
            raise ConfigError("repo", "is null; a vae codec needs a Hub repo id (owner/name) "
                              "or a folder inside the model folder")


CODEC_RULES = {
    "kind": one_of("pixel", "vae"), "repo": TEXT_OR_NULL, "subfolder": TEXT_OR_NULL,
    "revision": TEXT_OR_NULL, "fast_decoder_repo": TEXT_OR_NULL,
    "latent_channels": whole(1, 64), "downsample": whole(1, 64),
    "scaling_factor": number(1e-6, 1e6)}


@dataclass(frozen=True)
class SamplerConfig:
    """Sampler defaults stored with a model (CLI flags override them)."""

    method: str = "euler"  # "euler" | "heun"
    steps: int = 25
    cfg: float = 2.0
    shift: float = 3.0  # timestep shift (SD3-style); > 1 spends more steps at high noise

    def __post_init__(self) -> None:
        check_fields(vars(self), SAMPLER_RULES)


SAMPLER_RULES = {"method": one_of("euler", "heun"), "steps": whole(1, 1000),
                 "cfg": number(0, 100), "shift": number(0.01, 100)}


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
        check_fields(vars(self), DENOISER_RULES)
        for name, kind in (("codec", CodecConfig), ("sampler", SamplerConfig)):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(name, f"is not a {kind.__name__}")
        latent_h, latent_w = self.latent_size
        if self.height % self.codec.downsample or self.width % self.codec.downsample:
            raise ConfigError("height", f"and width ({self.width}x{self.height}) must be "
                              f"multiples of the codec's downsampling {self.codec.downsample}")
        if latent_h % self.patch_size or latent_w % self.patch_size:
            raise ConfigError("patch_size", f"{self.patch_size} does not divide the latent size "
                              f"{latent_w}x{latent_h}")
        rows, cols = self.token_grid
        if rows * cols > MAX_TOKENS_PER_FRAME:
            raise ConfigError("height", f"and width ({self.width}x{self.height}) make "
                              f"{rows * cols} tokens per frame; allowed: at most "
                              f"{MAX_TOKENS_PER_FRAME} (a smaller frame or a larger patch_size)")
        if self.hidden_size % self.heads or (self.hidden_size // self.heads) % 2:
            raise ConfigError("heads", f"is {self.heads}; hidden_size ({self.hidden_size}) / "
                              "heads must be an even whole number (RoPE pairs)")
        parameters = 12 * self.depth * self.hidden_size ** 2
        if parameters > MAX_PARAMETERS:
            raise ConfigError("depth", f"{self.depth} with hidden_size {self.hidden_size} makes "
                              f"about {parameters:.3g} parameters; allowed: at most "
                              f"{MAX_PARAMETERS:.3g}")
        factor = self.codec.downsample * self.patch_size
        if 2 ** len(self.pose_guider_channels) != factor:
            raise ConfigError("pose_guider_channels", f"has {len(self.pose_guider_channels)} "
                              f"entries; the pose guider needs log2({factor}) stride-2 layers, "
                              "one per entry")
        if not self.overlap < self.window:
            raise ConfigError("overlap", f"is {self.overlap}; it must be smaller than window "
                              f"({self.window})")
        if self.chunk and self.window % self.chunk:
            raise ConfigError("window", f"is {self.window}; a student's window must be a whole "
                              f"number of chunks ({self.chunk})")
        if self.chunk and self.reference_frame:
            raise ConfigError("reference_frame", "is true; a causal student takes the reference "
                              "by channels only (reference_frame must be false)")

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
        """From JSON; ConfigError names the first unknown, mistyped or out-of-range field."""
        return build(cls, data, convert={
            "codec": lambda codec: build(CodecConfig, codec, "codec."),
            "sampler": lambda sampler: build(SamplerConfig, sampler, "sampler."),
            "pose_guider_channels": as_tuple})

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> DenoiserConfig:
        return cls.from_dict(load_json(path))  # from_dict names a wrong type


DENOISER_RULES: dict[str, Rule] = {
    "height": whole(1, MAX_SIDE), "width": whole(1, MAX_SIDE), "patch_size": whole(1, 64),
    "hidden_size": whole(8, 16384), "depth": whole(1, 512), "heads": whole(1, 256),
    "mlp_ratio": number(0.25, 16),
    "pose_guider_channels": Rule(tuple, 1, 4096, item=int, max_items=8),
    "reference_frame": FLAG, "attention": one_of("dense", "input_aware"),
    "attention_backend": one_of("auto", "dense", "gather", "flex", "xformers"),
    "k_frames": whole(0, 64), "block_size": whole(1, 4096), "region_dilation": whole(0, 64),
    "background_reach": whole(0, 1024), "chunk": whole(0, 256), "window": whole(1, 1024),
    "overlap": whole(0, 1023), "fps": number(1, 240), "condition_dropout": number(0, 1),
}


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


MAX_STEPS = 10**9
MAX_SEED = 2**63 - 1  # what torch.Generator.manual_seed takes
RATE = number(0, 1)  # learning rates, decays

# α per region of the region-weighted losses (RegionWeights, TrainConfig.region_alphas)
REGION_RULES: dict[str, Rule] = {region: number(0, 1000)
                                 for region in ("face", "lips", "hands", "arms")}

# posecast/dit/train.py TrainConfig
TRAIN_RULES: dict[str, Rule] = {
    "max_steps": whole(1, MAX_STEPS), "batch_size": whole(1, 4096), "learning_rate": RATE,
    "weight_decay": RATE, "ema_decay": RATE, "checkpoint_every": whole(1, MAX_STEPS),
    "gradient_checkpointing": FLAG, "grad_clip": number(1e-6, 1e6), "seed": whole(0, MAX_SEED),
    "fsdp": FLAG}

# posecast/train/distill.py DistillConfig (`posecast distill --config FILE`)
DISTILL_RULES: dict[str, Rule] = {
    "student_steps": whole(1, 8), "chunk": whole(1, 256), "window": whole(1, 1024, optional=True),
    "k_frames": whole(0, 64), "attention": one_of("input_aware", "dense"),
    "max_steps": whole(0, MAX_STEPS), "region_steps": whole(0, MAX_STEPS),
    "batch_size": whole(1, 4096), "grad_accumulation": whole(1, 4096),
    "learning_rate": RATE, "critic_learning_rate": RATE, "critic_updates": whole(1, 100),
    "grad_clip": number(1e-6, 1e6), "gradient_checkpointing": FLAG,
    "init_steps": whole(0, MAX_STEPS), "init_learning_rate": RATE,
    "ode_pairs": whole(0, 100_000), "ode_steps": whole(1, 1000),
    "teacher_cfg": number(0, 100, optional=True), "dmd_min_time": number(0, 1),
    "dmd_max_time": number(0, 1), "region_loss_weight": number(0, 1000),
    "ssim_weight": number(0, 1000), "edge_weight": number(0, 1000),
    "region_ode_weight": number(0, 10000),
    "perceptual": Rule(tuple, item=str, max_items=16),
    "checkpoint_every": whole(1, MAX_STEPS), "sample_every": whole(0, MAX_STEPS),
    "seed": whole(0, MAX_SEED), "fsdp": FLAG,
}


def preset(name: str, **changes: Any) -> DenoiserConfig:
    if name not in PRESETS:
        raise UsageError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].replace(**changes) if changes else PRESETS[name]


def parse_size(text: str, multiple: int) -> tuple[int, int]:
    """'WxH' → (height, width), both positive multiples of `multiple` (--size)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size {text}: write it as WIDTHxHEIGHT, e.g. 512x512") from None
    if max(width, height) > MAX_SIDE:
        raise UsageError(f"--size {text}: at most {MAX_SIDE} pixels a side")
    if width <= 0 or height <= 0 or width % multiple or height % multiple:
        raise UsageError(f"--size {text}: width and height must be positive multiples of "
                         f"{multiple} for this model")
    return height, width
