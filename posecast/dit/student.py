"""posecast's DiT as a causal few-step student: the flow-matching side of the streaming rollout
(posecast/streaming/rollout.py).

A chunk takes k steps at the fixed times t_0 = 1 > t_1 > … > t_{k−1} (config.sampler: steps,
shift; t_k = 0): at t_i the student predicts the clean chunk x̂₀ = x − t_i·v, which is re-noised
with fresh noise to t_{i+1} (x = (1 − t_{i+1})·x̂₀ + t_{i+1}·ε); the last prediction is the
chunk. The cache pass over the clean chunk runs at t = 0 and stores its keys and values in the
KV cache (models/kv_cache.py), which holds the last config.context_frames frames.
"""

from __future__ import annotations

import os
from operator import attrgetter

import numpy as np
import torch

from posecast.attention.plan import AttentionPlan
from posecast.devices import autocast
from posecast.diffusion.flow import sampling_timesteps
from posecast.dit.codecs import make_codec
from posecast.dit.denoiser import Denoiser
from posecast.dit.kv_cache import KVCache
from posecast.dit.pretrained import from_pretrained
from posecast.errors import UsageError
from posecast.pose.draw import render_pose_maps
from posecast.pose.framing import Box, portrait_box
from posecast.pose.keypoints import Keypoints


def student_timesteps(model: Denoiser, steps: int | None = None) -> list[float]:
    """(k + 1) times from 1 to 0; k = `steps` or the model's own."""
    sampler = model.config.sampler
    return sampling_timesteps(steps or sampler.steps, sampler.shift).tolist()


def compute_dtype(model: Denoiser, device: torch.device) -> torch.dtype:
    """The dtype activations (and so the KV cache) have: bf16 under CUDA autocast."""
    return torch.bfloat16 if device.type == "cuda" else next(model.parameters()).dtype


class DitStudent:
    """A DiT student (config.chunk > 0) as a StudentBackend: levels are flow-matching times,
    the network predicts the velocity, the cache is a KVCache of keys and values per layer, and
    input-aware attention has one token grid. `codec` is needed to render (conditions from a
    portrait, decoding); training passes the portrait's latent as the conditions itself."""

    commit_level = 0.0

    def __init__(self, model: Denoiser, timesteps: list[float] | None = None,
                 codec=None, device: torch.device | None = None) -> None:
        config = model.config
        if not config.is_student:
            raise ValueError("a causal student needs config.chunk > 0")
        self.model, self.network, self.codec = model, model, codec
        self.timesteps = student_timesteps(model) if timesteps is None else timesteps
        self.device = next(model.parameters()).device if device is None else device

    config = property(attrgetter("model.config"))
    chunk = property(attrgetter("config.chunk"))
    context_frames = property(attrgetter("config.context_frames"))
    attention_backend = property(attrgetter("config.attention_backend"))
    block_size = property(attrgetter("config.block_size"))
    height = property(attrgetter("config.height"))
    width = property(attrgetter("config.width"))
    attention_layers = property(attrgetter("config.depth"))

    def levels(self) -> list[float]:
        return self.timesteps[:-1]

    def noisy(self, clean, level: float, noise: torch.Tensor) -> torch.Tensor:
        return (1 - level) * clean + level * noise

    def grids(self) -> dict:
        config = self.config
        rows, cols = config.token_grid
        return {rows * cols: config} if config.attention == "input_aware" else {}

    def batch_size(self, conditions: torch.Tensor) -> int:
        return conditions.shape[0]

    def new_cache(self, batch: int) -> KVCache:
        config, device = self.config, self.device
        rows, cols = config.token_grid
        return KVCache(config.context_frames, rows * cols, config.depth, batch, config.heads,
                       config.hidden_size // config.heads, device,
                       compute_dtype(self.model, device), chunk_frames=config.chunk,
                       in_place=not self.model.training)

    def layout(self, cache: KVCache, plans: dict[int, AttentionPlan], frames: int):
        """The input-aware plan, or for a dense student the cache's key-validity mask."""
        if plans:
            return next(iter(plans.values()))
        if cache.capacity == 0:
            return None
        return cache.key_validity(frames * cache.tokens_per_frame)

    def predict(self, x, level, conditions, pose_maps, cache, layout, position, commit):
        """x − t·v; `conditions`: the portrait's latent (B, C, h, w)."""
        times = torch.full((x.shape[0],), level, device=x.device)
        with autocast(x.device):
            velocity = self.network(x, times, conditions, pose_maps, layout=layout, cache=cache,
                                    commit=commit, first_frame=position)
        return None if commit else x - level * velocity.float()

    def latent_shape(self) -> tuple[int, int, int]:
        return (self.config.codec.latent_channels, *self.config.latent_size)

    def conditions(self, reference: np.ndarray) -> torch.Tensor:
        pixels = torch.from_numpy(reference).permute(2, 0, 1)[None].float() / 127.5 - 1
        with torch.no_grad():
            return self.codec.encode(pixels.to(self.device))

    def draw_poses(self, poses: Keypoints) -> np.ndarray:
        return render_pose_maps(poses, self.height, self.width)

    def pose_input(self, drawn: torch.Tensor) -> torch.Tensor:
        return drawn.float() / 255.0

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(latents)

    def frame(self, image: np.ndarray, keypoints: Keypoints) -> Box:
        """A crop that keeps the face and upper body centred."""
        return portrait_box(keypoints, image.shape[1], image.shape[0], self.width, self.height)


def load_student(folder: str | os.PathLike, device: torch.device,
                 size: tuple[int, int] | None = None, steps: int | None = None) -> DitStudent:
    """A DiT student folder to render: bf16 on CUDA, the codec's fast decoder."""
    network = from_pretrained(folder, device=device)
    if not network.config.is_student:
        raise UsageError(f"{folder}: this model is a teacher (bidirectional, many steps), not "
                         "a distilled student; make one with `posecast distill`, or render "
                         "with `posecast teacher`")
    if size is not None:
        network.config = network.config.replace(height=size[0], width=size[1])
    if device.type == "cuda":
        network = network.to(torch.bfloat16)
    codec = make_codec(network.config.codec, device, fast_decode=True)
    return DitStudent(network, student_timesteps(network, steps), codec)
