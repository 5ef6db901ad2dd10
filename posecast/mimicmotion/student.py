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
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posecast.attention.plan import AttentionPlan
from posecast.diffusion.edm import edm_scalings, karras_levels
from posecast.errors import InputError, UsageError
from posecast.generate import autocast
from posecast.json_files import load_json_object
from posecast.mimicmotion.causal import CausalContext, StudentCache, make_causal
from posecast.mimicmotion.model import MimicMotionTeacher, load_teacher, read_config
from posecast.ownership import mark
from posecast.pose.keypoints import Keypoints
from posecast.student import ChunkPlanner
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
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise InputError(f"unknown student settings: {', '.join(unknown)}")
        if "levels" in values:
            values = {**values, "levels": tuple(values["levels"])}
        return cls(**values)

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

    @property
    def device(self) -> torch.device:
        return self.parts.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.network.parameters()).dtype

    @property
    def recipe(self):
        return self.parts.recipe

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

    def whole_plans(self, poses: list[Keypoints]) -> dict[int, AttentionPlan]:
        """Block-causal input-aware plans over whole sequences (one Keypoints per batch
        element): the masks a whole pass attends under."""
        from posecast.attention.mask import build_mask, past_frames, window_regions

        plans = {}
        if self.settings.attention != "input_aware":
            return plans
        for tokens, grid in self.level_grids().items():
            masks = [build_mask(window_regions(sequence, grid),
                                past_frames(sequence, self.settings.k_frames),
                                chunk=self.settings.chunk) for sequence in poses]
            plans[tokens] = AttentionPlan.for_windows(masks, self.settings.backend, self.device,
                                                      self.settings.block_size)
        return plans

    def whole_pass(self, x: torch.Tensor, sigma: float, conditions: Conditions,
                   pose_maps: torch.Tensor | None, poses: list[Keypoints] | None = None
                   ) -> torch.Tensor:
        """D(x; σ) of whole sequences at once, block-causal (what the cached chunks equal)."""
        context = self.context
        context.cache, context.commit = None, False
        context.first_frame = torch.zeros((), dtype=torch.long, device=x.device)
        context.plans = self.whole_plans(poses) if poses is not None else {}
        try:
            return self.denoise(x, sigma, conditions, pose_maps)
        finally:
            context.plans = {}


# pose_maps(start, end) → (B, end − start, 3, H, W) in [-1, 1] on the student's device
PoseMaps = Callable[[int, int], torch.Tensor]


class StudentStream:
    """One video (per batch element) chunk after chunk against the cache; every shape is
    fixed from the first chunk on (preallocated ring, masks over a whole window with EMPTY
    slots, one plan per level refilled in place). A renderer passes the same `cache` and
    `plans` (by tokens per frame) to every video's stream, so addresses never change either."""

    def __init__(self, student: MimicMotionStudent, conditions: Conditions,
                 pose_maps: PoseMaps, poses: Callable[[int, int], list[Keypoints]] | None,
                 cache: StudentCache | None = None,
                 plans: dict[int, AttentionPlan] | None = None) -> None:
        settings = student.settings
        if settings.attention == "input_aware" and poses is None:
            raise ValueError("an input-aware student needs the poses")
        self.student, self.conditions = student, conditions
        self.pose_maps, self.poses = pose_maps, poses
        device = student.device
        self.cache = cache or StudentCache(settings.context_frames, settings.chunk, device,
                                           in_place=not torch.is_grad_enabled())
        self.cache.reset()
        batch = conditions.latent.shape[0]
        self.grids = student.level_grids() if settings.attention == "input_aware" else {}
        self.planners = {tokens: ChunkPlanner(grid, batch) for tokens, grid in self.grids.items()}
        self.plans: dict[int, AttentionPlan] = {} if plans is None else plans
        self._ahead: tuple[int, dict[int, list]] | None = None  # (start, masks by level)
        self.position = torch.zeros((), dtype=torch.long, device=device)
        self.next_frame = 0

    def _masks(self, start: int, end: int) -> dict[int, tuple]:
        """The chunk's masks and token order per level, from the planners' rings as they are
        (every earlier chunk committed)."""
        window_poses = self.poses(max(0, end - self.student.settings.window), end)
        return {tokens: planner.masks(start, end, window_poses)
                for tokens, planner in self.planners.items()}

    def prepare(self) -> None:
        """The next chunk's masks and plans now, after this chunk's commit: host work done
        while the device still runs this chunk's passes. Refilling the plans in place is safe
        then: their copies are queued on the device after the passes that read them."""
        if self.planners:
            start = self.next_frame
            masks = self._masks(start, start + self.student.settings.chunk)
            self._ahead = (start, self._refill(masks))

    def _refill(self, made: dict[int, tuple]) -> dict[int, list]:
        """The plans refilled with `made` (masks and order per level); returns the masks."""
        settings, masks_by_level = self.student.settings, {}
        for tokens, (masks, order) in made.items():
            if tokens in self.plans and not torch.is_grad_enabled():
                self.plans[tokens].update(masks, order)
            else:  # a plan autograd saw is never refilled
                self.plans[tokens] = AttentionPlan(masks, settings.backend, self.student.device,
                                                   settings.block_size, order)
            masks_by_level[tokens] = masks
        return masks_by_level

    def _set_plans(self, start: int, end: int) -> dict[int, list]:
        """Point the context's plans at this chunk's masks (made ahead by `prepare`, or now);
        returns the masks per level."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == start:
            masks_by_level = ahead[1]
        else:
            masks_by_level = self._refill(self._masks(start, end))
        self.student.context.plans = self.plans
        return masks_by_level

    def _pass(self, x: torch.Tensor, sigma: float, start: int, commit: bool) -> torch.Tensor:
        context = self.student.context
        context.cache, context.commit, context.first_frame = self.cache, commit, self.position
        try:
            return self.student.denoise(x, sigma, self.conditions,
                                        self.pose_maps(start, start + x.shape[1]))
        finally:
            context.cache, context.commit = None, False

    def _commit(self, clean: torch.Tensor, start: int, masks: dict[int, list]) -> None:
        """The clean chunk's pass at σ_min, writing the cache (oldest frames overwritten)."""
        settings = self.student.settings
        if settings.context_frames:
            self.cache.point_at(start % settings.context_frames)
            with torch.no_grad():
                self._pass(clean.detach(), settings.sigma_min, start, commit=True)
            self.cache.filled()
            for tokens, planner in self.planners.items():
                planner.commit(start, start + clean.shape[1], masks[tokens])

    def _advance(self, end: int) -> None:
        self.position.add_(end - self.next_frame)
        self.next_frame = end

    def chunk(self, noise: torch.Tensor, renoise: Callable[[], torch.Tensor],
              commit: bool = True, exit_step: int | None = None) -> torch.Tensor:
        """The next chunk's clean latents (B, c, 4, h, w) from unit `noise`; `renoise()` draws
        the fresh unit noise between steps; `commit=False` skips the cache pass (the video's
        last chunk). `exit_step` i < k stops after step i and returns its estimate with
        gradients (training); None runs all k steps."""
        sigmas = self.student.settings.sigmas()
        last = len(sigmas) - 1 if exit_step is None else exit_step
        start, end = self.next_frame, self.next_frame + noise.shape[1]
        masks = self._set_plans(start, end)
        x = noise * sigmas[0]
        for i in range(last + 1):
            if i < last:
                with torch.no_grad():
                    clean = self._pass(x, sigmas[i], start, commit=False)
                x = clean + sigmas[i + 1] * renoise()
            else:
                clean = self._pass(x, sigmas[i], start, commit=False)
        if commit:
            self._commit(clean, start, masks)
        self._advance(end)
        return clean

    def regress(self, x: torch.Tensor, sigma: float, clean: torch.Tensor) -> torch.Tensor:
        """Teacher forcing (ODE-pair initialisation): the student's estimate of the next chunk
        from `x` at σ (with gradients), then the given `clean` chunk, not the estimate,
        committed as the context of the chunks after it."""
        start, end = self.next_frame, self.next_frame + x.shape[1]
        masks = self._set_plans(start, end)
        prediction = self._pass(x, sigma, start, commit=False)
        self._commit(clean, start, masks)
        self._advance(end)
        return prediction


def chunk_latents(student: MimicMotionStudent, conditions: Conditions, poses: Keypoints,
                  seed: int = 0, cache: StudentCache | None = None,
                  plans: dict[int, AttentionPlan] | None = None
                  ) -> Iterator[tuple[int, torch.Tensor]]:
    """The student's video of `poses` (Keypoints in frame pixels) chunk by chunk: (first
    frame, latents (1, c, 4, h, w)). The last chunk is filled up by holding the last pose
    (callers drop its frames past the end). `cache` and `plans`: a renderer's, reused."""
    from posecast.pose.dwpose import draw_dwpose
    from posecast.render import ChunkPoseMaps, hold_to_length

    settings, recipe, device = student.settings, student.recipe, student.device
    chunk = settings.chunk
    padded = hold_to_length(poses, math.ceil(len(poses) / chunk) * chunk)
    pose_maps = ChunkPoseMaps(  # (1, n, 3, H, W) in [-1, 1]
        lambda start, end: draw_dwpose(padded[start:end], recipe.height, recipe.width),
        device, lambda drawn: (drawn.float() / 127.5 - 1.0).to(student.dtype))
    stream = StudentStream(student, conditions, pose_maps, lambda s, e: [padded[s:e]], cache,
                           plans)
    generator = torch.Generator(device).manual_seed(seed)
    shape = (1, chunk, 4, *student.latent_size())
    for start in range(0, len(padded), chunk):
        end = start + chunk
        with torch.no_grad():  # not around the yield: the caller's grad mode stays its own
            noise = torch.randn(shape, generator=generator, device=device)
            latents = stream.chunk(noise, lambda: torch.randn(shape, generator=generator,
                                                              device=device),
                                   commit=end < len(padded))
            if end < len(padded):  # the next chunk's host work, done while the device works
                pose_maps(end, end + chunk)
                stream.prepare()
        yield start, latents


def compile_network(student: MimicMotionStudent, cache: StudentCache,
                    plans: dict[int, AttentionPlan]) -> torch.nn.Module:
    """Compile the student's network for streaming (whole, fullgraph, fixed shapes; CUDA
    graphs on CUDA), after an eager warm-up has allocated `cache` and `plans` at their final
    shapes: on CUDA their tensors are marked static, so the graphs read and write them in
    place instead of copying them in at every replay. Returns the eager network, to fall
    back to (`student.network = eager`) when compiling fails."""
    from posecast.render import compile_student

    eager = student.network
    if student.device.type == "cuda":
        cache.mark_static()
        for plan in plans.values():
            plan.mark_static()
    student.network = compile_student(eager)
    return eager


def is_student_folder(folder: Path) -> bool:
    try:
        return "student" in load_json_object(folder / "config.json")
    except (OSError, ValueError, TypeError):
        return False


def load_student(folder: str | os.PathLike, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> MimicMotionStudent:
    """A student folder (see the module's docstring) on `device`."""
    folder = Path(folder)
    config = read_config(folder)
    if "student" not in config:
        raise UsageError(f"{folder}: this MimicMotion model is a teacher (many steps, whole "
                         "windows), not a causal student; render it with `posecast teacher`")
    settings = StudentSettings.from_dict(config["student"])
    parts = load_teacher(folder, device, dtype)
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


def decode(student: MimicMotionStudent, latents: torch.Tensor) -> torch.Tensor:
    """(T, 4, h, w) scaled latents → (T, 3, H, W) in [-1, 1], with the fast decoder when the
    folder has one (per frame), else SVD's temporal VAE over the chunk."""
    vae = student.parts.vae
    with torch.no_grad():
        if student.fast_decoder is not None:  # AutoencoderTiny takes the scaled latents
            return student.fast_decoder.decode(latents.to(student.dtype)).sample.float()
        scaled = (latents / vae.config.scaling_factor).to(next(vae.parameters()).dtype)
        return vae.decode(scaled, num_frames=scaled.shape[0]).sample.float()
