"""A learned motion model: log-mel audio → keypoint offsets from the portrait's keypoints.

Input per video frame: 40 log-mel bands (25 ms windows every 10 ms) sampled at 4
instants inside the frame, normalised per clip (mean and variance), so (T, 160). A small temporal
convolution network (kernel 5, then dilated residual blocks reaching ±0.5 s at 25 fps) maps
it to (T, 553 × 2) offsets of every keypoint (33 body, 478 face, 2 × 21 hand points) in the
portrait's face frame (x along the eyes, y down the face), in face heights. Offsets are
learned against each training clip's most closed-mouthed frame, the stand-in for a portrait.

Trained by `posecast train-motion` on clips with audio and keypoints; saved as a folder with
`config.json` (kind "posecast-motion") and `model.safetensors`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from posecast.errors import InputError, UsageError
from posecast.hub import resolve_folder
from posecast.json_files import load_json_object
from posecast.media import AudioClip, load_audio
from posecast.motion.features import (
    FFT_SIZE,
    HOP,
    SAMPLE_RATE,
    analysis_frames,
    frame_blocks,
    power_spectrum,
    resample_audio,
)
from posecast.motion.procedural import FaceFrame, has_face_mesh
from posecast.motion.spectral import mel_filters
from posecast.ownership import mark
from posecast.paths import atomic_output
from posecast.pose.face_mesh import mouth_opening
from posecast.pose.keypoints import PART_SIZES, PARTS, Keypoints, resample
from posecast.weights import check_state

KIND = "posecast-motion"
POINTS = sum(PART_SIZES.values())  # 553, in PARTS order


@dataclass(frozen=True)
class MotionConfig:
    mels: int = 40
    substeps: int = 4  # mel samples per video frame
    hidden: int = 128
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    fps: float = 25.0  # of the training clips; other rates are resampled to it


class MelInputs:
    """The network's inputs for any range of a clip's video frames: 40 log-mel bands
    (HTK mel scale 60–7,600 Hz, unnormalised triangles, natural log of power + 1e-6)
    sampled at `substeps` instants inside each frame, normalised by the whole clip's mean and
    standard deviation per band. The statistics take one pass over the audio in blocks; a
    range's spectra are computed when asked for, so memory is bounded by the range."""

    def __init__(self, clip: AudioClip, fps: float, config: MotionConfig) -> None:
        self.samples, self.fps, self.config = resample_audio(clip), fps, config
        self.basis = mel_filters(SAMPLE_RATE, FFT_SIZE, config.mels, low=60, high=7600,
                                 htk=True, equal_area=False)
        self.count = analysis_frames(self.samples)
        total, squares = np.zeros(config.mels), np.zeros(config.mels)
        for first, last in frame_blocks(self.samples):
            log_mel = self.log_mel(first, last)
            total += log_mel.sum(0)
            squares += (log_mel ** 2).sum(0)
        self.mean = total / self.count
        self.std = np.sqrt(np.maximum(squares / self.count - self.mean ** 2, 0))

    def log_mel(self, first: int, last: int) -> np.ndarray:
        """(last − first, mels) float64 log-mel of analysis frames first … last − 1."""
        power = power_spectrum(self.samples, first, last).astype(np.float64)
        return np.log(self.basis @ power + 1e-6).T

    def __call__(self, first: int, last: int) -> np.ndarray:
        """(last − first, mels × substeps) float32 for video frames first … last − 1."""
        substeps = self.config.substeps
        times = (np.arange(first, last)[:, None] + (np.arange(substeps) + 0.5)[None]
                 / substeps) / self.fps
        positions = np.clip(times * SAMPLE_RATE / HOP, 0, self.count - 1)
        low = np.floor(positions).astype(int)
        high = np.minimum(low + 1, self.count - 1)
        start = int(low.min())
        log_mel = self.log_mel(start, int(high.max()) + 1)
        weight = (positions - low)[..., None]
        sampled = log_mel[low - start] * (1 - weight) + log_mel[high - start] * weight
        sampled = (sampled - self.mean) / (self.std + 1e-3)  # (frames, substeps, mels)
        return sampled.reshape(last - first, -1).astype(np.float32)


def stacked_points(keypoints: Keypoints) -> np.ndarray:
    """(T, 553, 3) all parts in PARTS order."""
    return np.concatenate([getattr(keypoints, part) for part in PARTS], axis=1)


def to_face_frame(points: np.ndarray, reference: FaceFrame) -> np.ndarray:
    """Pixel offsets (..., 2) → (along the eyes, down the face) in face heights."""
    return np.stack([points @ reference.right, points @ reference.down], -1) \
        / reference.face_height


class MotionNetwork(nn.Module):
    def __init__(self, config: MotionConfig) -> None:
        super().__init__()
        width = config.hidden
        self.input = nn.Conv1d(config.mels * config.substeps, width, 5, padding=2)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.GELU(), nn.Conv1d(width, width, 3, padding=d, dilation=d),
                          nn.GELU(), nn.Conv1d(width, width, 1)) for d in config.dilations)
        self.head = nn.Conv1d(width, POINTS * 2, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # frames on each side an output frame depends on: the input kernel's 2, then d per
        # dilated block (kernel 3)
        self.reach = 2 + sum(config.dilations)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """audio (B, T, mels × substeps) → offsets (B, T, 553, 2)."""
        x = self.input(audio.transpose(1, 2))
        for block in self.blocks:
            x = x + block(x)
        out = self.head(F.gelu(x)).transpose(1, 2)
        return out.reshape(*out.shape[:2], POINTS, 2)


class LearnedMotion:
    name = "learned"

    def __init__(self, network: MotionNetwork, config: MotionConfig,
                 device: str | torch.device = "cpu") -> None:
        self.network, self.config, self.device = network.to(device).eval(), config, device

    @classmethod
    def from_pretrained(cls, path_or_repo: str | os.PathLike,
                        device: str | torch.device = "cpu",
                        revision: str | None = None) -> LearnedMotion:
        folder = resolve_folder(path_or_repo, revision, kind="motion model")
        config_path, weights = folder / "config.json", folder / "model.safetensors"
        try:
            data = load_json_object(config_path)
            if data.pop("kind", None) != KIND:
                raise ValueError("not a motion model")
            data["dilations"] = tuple(data["dilations"])
            config = MotionConfig(**data)
            network = MotionNetwork(config)
            state = load_file(weights)
            check_state(state, weights, network.state_dict())
            network.load_state_dict(state)
        except (OSError, ValueError, TypeError, KeyError, RuntimeError, SafetensorError) as error:
            raise InputError(f"{path_or_repo}: not a posecast motion model folder (config.json "
                             f"of kind {KIND} + model.safetensors): "
                             f"{str(error).splitlines()[0]}") from None
        return cls(network, config, device)

    def save(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        mark(folder, "model")
        state = {k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}
        with atomic_output(folder / "model.safetensors") as tmp:
            save_file(state, tmp)
        with atomic_output(folder / "config.json") as tmp:
            tmp.write_text(json.dumps({"kind": KIND, **dataclasses.asdict(self.config)},
                                      indent=2) + "\n")

    def generate(self, clip: AudioClip, portrait: Keypoints, fps: float, frames: int,
                 seed: int = 0) -> Keypoints:
        """The portrait's keypoints plus the predicted offsets (deterministic; `seed` is
        accepted for the common interface)."""
        return Keypoints.concatenate(list(self.stream(clip, portrait, fps, frames, seed,
                                                      chunk=frames)))

    def stream(self, clip: AudioClip, portrait: Keypoints, fps: float, frames: int,
               seed: int = 0, chunk: int = 250) -> Iterator[Keypoints]:
        """The same poses `chunk` frames at a time: each chunk's network pass sees its
        frames plus the network's reach on either side, so chunks join exactly. The portrait
        is checked and the clip's statistics measured now (errors surface here)."""
        if not has_face_mesh(portrait):
            raise InputError("the learned motion model needs the portrait's face mesh")
        return self._chunks(MelInputs(clip, fps, self.config), portrait, fps, frames, chunk)

    def _chunks(self, inputs: MelInputs, portrait: Keypoints, fps: float, frames: int,
                chunk: int) -> Iterator[Keypoints]:
        reach = self.network.reach
        geometry = FaceFrame.of(portrait.face[0])
        base = stacked_points(portrait)[0].astype(np.float64)  # (553, 3)
        present = base[:, 2] > 0
        for start in range(0, frames, chunk):
            end = min(start + chunk, frames)
            first, last = max(0, start - reach), min(frames, end + reach)
            with torch.no_grad():
                window = torch.from_numpy(inputs(first, last))[None].to(self.device)
                offsets = self.network(window)[0, start - first:end - first].cpu().numpy()
            pixels = (offsets[..., :1] * geometry.right + offsets[..., 1:] * geometry.down) \
                * geometry.face_height  # (n, 553, 2)
            moved = np.repeat(base[None], end - start, axis=0)
            moved[:, present, :2] += pixels[:, present]
            parts = np.split(moved.astype(np.float32), np.cumsum(list(PART_SIZES.values()))[:-1], 1)
            yield replace(portrait, **dict(zip(PARTS, parts, strict=True)), fps=fps)


@dataclass
class MotionClip:
    inputs: np.ndarray  # (T, features)
    targets: np.ndarray  # (T, 553, 2) face-frame offsets from the neutral frame
    valid: np.ndarray  # (T, 553) bool


def load_motion_clips(folder: str | os.PathLike, config: MotionConfig,
                      on_message: Callable[[str], None] | None = None) -> list[MotionClip]:
    """Every clip of a dataset folder with its audio and a face mesh in every frame."""
    from posecast.pose.cache import KEYPOINT_CACHE
    from posecast.pose.extract import extract_folder

    say = on_message or (lambda text: None)
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such dataset folder")
    clips = []
    for result in extract_folder(folder, folder / KEYPOINT_CACHE, smooth=True):
        path = result.clip
        if result.status == "failed":
            say(f"skipped {path}: {result.message}")
            continue
        keypoints = Keypoints.load(result.output)
        if not (keypoints.face[:, :468, 2] > 0).all():
            say(f"skipped {path.name}: the face is not found in every frame")
            continue
        try:
            clip = load_audio(path)
        except InputError as error:
            say(f"skipped {path.name}: {error}")
            continue
        if keypoints.fps != config.fps:
            keypoints = resample(keypoints, config.fps,
                                 int(len(keypoints) * config.fps / keypoints.fps))
        frames = min(len(keypoints), int(clip.duration * keypoints.fps))
        keypoints = keypoints[:frames]
        neutral = int(np.argmin([mouth_opening(face) for face in keypoints.face]))
        geometry = FaceFrame.of(keypoints.face[neutral])
        points = stacked_points(keypoints)
        valid = (points[..., 2] > 0) & (points[neutral:neutral + 1, :, 2] > 0)
        targets = to_face_frame(points[..., :2] - points[neutral:neutral + 1, :, :2], geometry)
        clips.append(MotionClip(MelInputs(clip, config.fps, config)(0, frames),
                                np.where(valid[..., None], targets, 0).astype(np.float32),
                                valid))
    if not clips:
        raise InputError(f"{folder}: no clip with audio and a face in every frame")
    return clips


def train_motion(dataset: str | os.PathLike, out: str | os.PathLike, max_steps: int = 2000,
                 batch_size: int = 8, window: int = 100, learning_rate: float = 1e-3,
                 seed: int = 0, device: str | torch.device = "cpu",
                 on_step: Callable[[int, float], None] | None = None,
                 on_message: Callable[[str], None] | None = None,
                 config: MotionConfig | None = None) -> Path:
    """Fit the network on random `window`-frame stretches; writes the model folder `out`
    and `out/train_log.jsonl`."""
    config = config or MotionConfig()
    clips = load_motion_clips(dataset, config, on_message)
    torch.manual_seed(seed)
    network = MotionNetwork(config).to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max_steps)
    generator = np.random.default_rng(seed)
    out = Path(out)
    mark(out, "run")
    with (out / "train_log.jsonl").open("w") as log:
        for step in range(1, max_steps + 1):
            started = time.perf_counter()
            inputs, targets, valid = [], [], []
            for _ in range(batch_size):
                clip = clips[generator.integers(len(clips))]
                length = min(window, len(clip.inputs))
                start = generator.integers(len(clip.inputs) - length + 1)
                pad = window - length
                inputs.append(np.pad(clip.inputs[start:start + length], ((0, pad), (0, 0))))
                targets.append(np.pad(clip.targets[start:start + length],
                                      ((0, pad), (0, 0), (0, 0))))
                valid.append(np.pad(clip.valid[start:start + length], ((0, pad), (0, 0))))
            inputs, targets, valid = (torch.from_numpy(np.stack(x)).to(device)
                                      for x in (inputs, targets, valid))
            prediction = network(inputs)
            weight = valid[..., None].float()
            loss = ((prediction - targets) ** 2 * weight).sum() / weight.sum().clamp_min(1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            log.write(json.dumps({"step": step, "loss": loss.item(), "seconds":
                                  time.perf_counter() - started}) + "\n")
            if on_step is not None:
                on_step(step, loss.item())
    LearnedMotion(network.cpu(), config).save(out)
    return out
