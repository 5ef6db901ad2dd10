"""The paper's student on MimicMotion: SVD's UNet made causal (causal.py), k fixed noise levels
per chunk, streamed against a cache of past frames.

A video is made chunk after chunk (`chunk` frames). A chunk starts as noise at σ₀ = σ_max and
takes k steps at the fixed levels σ₀ > … > σ_{k−1} (Karras' spacing from σ_max towards σ_min,
the first k of k + 1): at σ_i the student's clean estimate D(x; σ_i) (SVD's EDM denoiser,
v-prediction) is re-noised with fresh noise to σ_{i+1}, and the last estimate is the chunk.
One more pass over the clean chunk at σ_min writes its keys, values and conv inputs into the
cache. The portrait conditions every frame as in the teacher: its CLIP token and its VAE
latent on the channels; there is no guidance (the student learns the guided teacher).

A student folder is a MimicMotion folder whose config.json also holds "student" (these
settings), plus `fast_decoder/` (diffusers' AutoencoderTiny for SD latents, e.g.
madebyollin/taesd) when it has one; without it frames decode with SVD's temporal VAE.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posecast.attention.plan import AttentionPlan
from posecast.devices import autocast
from posecast.diffusion.edm import edm_scalings, karras_levels
from posecast.errors import UsageError
from posecast.json_files import load_json_object
from posecast.mimicmotion.causal import CausalContext, StudentCache, make_causal
from posecast.mimicmotion.model import MimicMotionTeacher, load_teacher, read_config
from posecast.ownership import mark
from posecast.pose.framing import Box, fit_box
from posecast.pose.keypoints import Keypoints
from posecast.validation import as_tuple, build
from posecast.weights import check_module

FAST_DECODER = "fast_decoder"


@dataclass(frozen=True)
class StudentSettings:
    chunk: int = 4  # frames made together
    context_frames: int = 12  # past frames the cache holds (a multiple of chunk)
    steps: int = 4  # k noise levels per chunk
    attention: str = "input_aware"  # or "dense": SVD's per-frame spatial attention
    k_frames: int = 3  # pose-similar past frames a region attends to
    levels: tuple[int, ...] = (1, 2, 3)  # UNet levels whose spatial attention is joint
    backend: str = "auto"
    block_size: int = 128
    region_dilation: int = 1
    sigma_max: float = 700.0
    sigma_min: float = 0.002  # also the level of the cache pass
    rho: float = 7.0

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 8:
            raise UsageError(f"student steps {self.steps}: choose 1 to 8")
        if self.chunk < 1 or self.context_frames < 0 or self.context_frames % self.chunk:
            raise UsageError(f"student chunk {self.chunk} and context_frames "
                             f"{self.context_frames}: the chunk must divide the context")
        if self.attention not in ("dense", "input_aware"):
            raise UsageError(f"student attention '{self.attention}': dense or input_aware")

    @property
    def window(self) -> int:
        """Frames one chunk sees: the cached ones and its own."""
        return self.context_frames + self.chunk

    def sigmas(self) -> list[float]:
        """The k levels σ₀ = σ_max > … (Karras' ρ-spacing, the first k of k + 1 levels)."""
        return karras_levels(self.sigma_max, self.sigma_min, self.steps + 1, self.rho)[:-1]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StudentSettings:
        """From config.json's "student"; ConfigError names an unknown field."""
        return build(cls, values, "student.", convert={"levels": as_tuple})

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "levels": list(self.levels)}


@dataclass(frozen=True)
class _LevelGrid:
    """What ChunkPlanner reads of a config, for one UNet level's token grid."""

    token_grid: tuple[int, int]
    context_frames: int
    window: int
    k_frames: int
    region_dilation: int
    background_reach: int = 0


@dataclass
class Conditions:
    """The portrait's conditioning of every frame: CLIP token (B, 1, D), unscaled VAE latent
    (B, 4, h, w) and SVD's added time ids (B, 3)."""

    embeddings: torch.Tensor
    latent: torch.Tensor
    time_ids: torch.Tensor


class MimicMotionStudent:
    """A causal MimicMotion network with its SVD components and settings."""

    def __init__(self, parts: MimicMotionTeacher, settings: StudentSettings,
                 fast_decoder=None) -> None:
        self.parts, self.settings, self.fast_decoder = parts, settings, fast_decoder
        self.network = parts.network
        self.context = CausalContext(settings.chunk, settings.context_frames)
        make_causal(self.network, self.context, joint=settings.attention == "input_aware")
        self._scalings_at: dict[tuple[float, torch.device], tuple[torch.Tensor, ...]] = {}

    device = property(attrgetter("parts.device"))

    # ---------------------------------------------- the streaming backend (EDM, per-level plans)

    chunk = property(attrgetter("settings.chunk"))
    context_frames = property(attrgetter("settings.context_frames"))
    commit_level = property(attrgetter("settings.sigma_min"))
    attention_backend = property(attrgetter("settings.backend"))
    block_size = property(attrgetter("settings.block_size"))
    height = property(attrgetter("recipe.height"))
    width = property(attrgetter("recipe.width"))

    @property
    def attention_layers(self) -> int:
        """The UNet's spatial attention layers (compiled network or not)."""
        network = getattr(self.network, "_orig_mod", self.network)
        return sum(1 for name, _ in network.named_modules() if name.endswith(".attn1"))

    def levels(self) -> list[float]:
        return self.settings.sigmas()

    def noisy(self, clean, level: float, noise: torch.Tensor) -> torch.Tensor:
        return clean + level * noise

    def grids(self) -> dict[int, _LevelGrid]:
        return self.level_grids() if self.settings.attention == "input_aware" else {}

    def batch_size(self, conditions: Conditions) -> int:
        return conditions.latent.shape[0]

    def new_cache(self, batch: int) -> StudentCache:
        return StudentCache(self.settings.context_frames, self.settings.chunk, self.device,
                            in_place=not torch.is_grad_enabled())

    def layout(self, cache: StudentCache, plans: dict[int, AttentionPlan], frames: int
               ) -> dict[int, AttentionPlan]:
        return plans  # the context reads each joint level's plan by its tokens per frame

    def predict(self, x, level, conditions, pose_maps, cache, layout, position, commit):
        """D(x; σ) of the chunk against the cache; `layout`: the plans by tokens per frame."""
        context = self.context
        context.cache, context.commit, context.first_frame = cache, commit, position
        context.plans = layout
        try:
            return self.denoise(x, level, conditions, pose_maps)
        finally:
            context.cache, context.commit = None, False

    def latent_shape(self) -> tuple[int, int, int]:
        return (4, *self.latent_size())

    def draw_poses(self, poses: Keypoints) -> np.ndarray:
        from posecast.pose.dwpose import draw_dwpose

        return draw_dwpose(poses, self.height, self.width)

    def pose_input(self, drawn: torch.Tensor) -> torch.Tensor:
        return (drawn.float() / 127.5 - 1.0).to(self.dtype)

    def frame(self, image: np.ndarray, keypoints: Keypoints) -> Box:
        """The whole portrait fitted to the frame, as the teacher frames it."""
        return fit_box(image.shape[1], image.shape[0], self.width, self.height)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(T, 4, h, w) scaled latents → (T, 3, H, W) in [-1, 1], with the fast decoder when
        the folder has one (per frame), else SVD's temporal VAE over the chunk."""
        vae = self.parts.vae
        with torch.no_grad():
            if self.fast_decoder is not None:  # AutoencoderTiny takes the scaled latents
                return self.fast_decoder.decode(latents.to(self.dtype)).sample.float()
            scaled = (latents / vae.config.scaling_factor).to(next(vae.parameters()).dtype)
            return vae.decode(scaled, num_frames=scaled.shape[0]).sample.float()

    # ------------------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return next(self.network.parameters()).dtype

    recipe = property(attrgetter("parts.recipe"))

    def latent_size(self) -> tuple[int, int]:
        return self.recipe.height // 8, self.recipe.width // 8

    def level_grids(self) -> dict[int, _LevelGrid]:
        """Each joint level's grid, by tokens per frame."""
        height, width = self.latent_size()
        grids = {}
        for level in self.settings.levels:
            rows, cols = -(-height // 2**level), -(-width // 2**level)
            grids[rows * cols] = _LevelGrid((rows, cols), self.settings.context_frames,
                                            self.settings.window, self.settings.k_frames,
                                            self.settings.region_dilation)
        return grids

    def conditions(self, reference: np.ndarray) -> Conditions:
        """Of a portrait (H, W, 3) uint8 at the recipe's size."""
        from posecast.mimicmotion.sampling import clip_embedding

        recipe, vae = self.recipe, self.parts.vae
        image = torch.from_numpy(reference).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            embeddings = clip_embedding(self.parts, image).to(self.dtype)
            pixels = (image * 2.0 - 1.0).to(self.device, next(vae.parameters()).dtype)
            latent = vae.encode(pixels).latent_dist.mode().to(self.dtype)
        time_ids = torch.tensor([[recipe.fps - 1, recipe.motion_bucket_id,
                                  recipe.noise_aug_strength]], device=self.device,
                                dtype=self.dtype)
        return Conditions(embeddings, latent, time_ids)

    def denoise(self, x: torch.Tensor, sigma: float, conditions: Conditions,
                pose_maps: torch.Tensor | None) -> torch.Tensor:
        """D(x; σ) (B, T, 4, h, w): the clean estimate of x at noise level σ, for the frames the
        context is set up for (whole pass or cached chunk); pose_maps (B, T, 3, H, W) in
        [-1, 1]."""
        frames = x.shape[1]
        c_in, c_skip, c_out, c_noise = self._scalings(sigma, x.device)
        latent = conditions.latent[:, None].expand(-1, frames, -1, -1, -1)
        sample = torch.cat([(c_in * x).to(self.dtype), latent], dim=2)
        with autocast(x.device):  # training's fp32 weights: bf16 compute on CUDA
            out = self.network(sample, c_noise.to(self.dtype), conditions.embeddings,
                               conditions.time_ids, pose_maps)
        return (c_skip * x + c_out * out.float()).to(x.dtype)

    def _scalings(self, sigma: float, device: torch.device) -> tuple[torch.Tensor, ...]:
        """EDM's scalings at σ as device tensors, made once per level (the student's levels
        are fixed): a pass copies nothing from the host (a copy would block the stream)."""
        key = (sigma, device)
        if key not in self._scalings_at:
            if len(self._scalings_at) > 64:  # levels from elsewhere (a sweep): keep it small
                self._scalings_at.clear()
            level = torch.tensor(sigma, device=device, dtype=torch.float32)
            self._scalings_at[key] = edm_scalings(level)
        return self._scalings_at[key]


def is_student_folder(folder: Path) -> bool:
    try:
        return "student" in load_json_object(folder / "config.json")
    except (OSError, ValueError, TypeError):
        return False


def load_student(folder: str | os.PathLike, device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None, size: tuple[int, int] | None = None,
                 steps: int | None = None) -> MimicMotionStudent:
    """A student folder (see the module's docstring) on `device`, in `dtype` (default bf16 on
    CUDA, else fp32), rendering `size` (height, width) frames in `steps` steps when given."""
    folder, device = Path(folder), torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = read_config(folder)
    if "student" not in config:
        raise UsageError(f"{folder}: this MimicMotion model is a teacher (many steps, whole "
                         "windows), not a causal student; render it with `posecast teacher`")
    settings = StudentSettings.from_dict(config["student"])
    if steps is not None:
        settings = dataclasses.replace(settings, steps=steps)
    parts = load_teacher(folder, device, dtype)
    if size is not None:
        parts.recipe = parts.recipe.replace(height=size[0], width=size[1])
    fast_decoder = None
    if (folder / FAST_DECODER / "config.json").is_file():
        from diffusers import AutoencoderTiny

        fast_decoder = AutoencoderTiny.from_pretrained(folder / FAST_DECODER)
        fast_decoder.to(device, dtype).eval().requires_grad_(False)
        check_module(fast_decoder, folder / FAST_DECODER)
    return MimicMotionStudent(parts, settings, fast_decoder)


def init_student(teacher: str | os.PathLike, out: str | os.PathLike,
                 settings: StudentSettings, fast_decoder: str | os.PathLike | None = None
                 ) -> Path:
    """A student folder initialised from a MimicMotion teacher folder (its weights, VAE, CLIP
    and scheduler), with an AutoencoderTiny folder as its fast decoder when given."""
    import shutil

    teacher, out = Path(teacher), Path(out)
    config = read_config(teacher)
    if "student" in config:
        raise UsageError(f"{teacher}: this is a student folder; give the teacher it came from")
    mark(out, "run")
    for entry in teacher.iterdir():
        if entry.name in ("config.json", FAST_DECODER) or entry.name.startswith("."):
            continue
        target = out / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, dirs_exist_ok=True)
        else:
            shutil.copy2(entry, target)
    (out / "config.json").write_text(json.dumps({**config, "student": settings.to_dict()},
                                                indent=2))
    if fast_decoder is not None:
        shutil.copytree(fast_decoder, out / FAST_DECODER, dirs_exist_ok=True)
    return out
