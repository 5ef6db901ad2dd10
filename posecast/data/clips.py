"""A folder of talking clips as training windows: frames, a reference frame, pose maps.

Keypoints come from the folder's cache (`.posecast-keypoints/`, one `.npz` per clip), which is
filled with mediapipe for clips that lack one. Clips are fitted to the model's frame (centred
crop + resize) and held in memory as uint8, so this suits the small and medium datasets the
project trains on (a 128×128 clip of 10 s is 12 MB).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from posecast.errors import InputError, UsageError
from posecast.media import iter_video_frames, probe_video
from posecast.pose.cache import KEYPOINT_CACHE
from posecast.pose.draw import render_pose_maps
from posecast.pose.extract import extract_folder, find_clips
from posecast.pose.framing import crop_resize, fit_box, fit_keypoints
from posecast.pose.keypoints import Keypoints


@dataclass
class Clip:
    frames: torch.Tensor  # (T, 3, H, W) uint8
    pose_maps: torch.Tensor  # (T, 3, H, W) uint8
    keypoints: Keypoints  # fitted to (H, W)
    path: Path
    region_bits: torch.Tensor | None = None  # (T, H, W) uint8, train.region_loss.REGION_BITS


class ClipDataset:
    def __init__(self, folder: str | os.PathLike, height: int, width: int, min_frames: int = 1,
                 on_clip=None, with_region_bits: bool = False) -> None:
        """`with_region_bits` also draws every frame's region masks once, for a region-weighted
        loss (batches then carry "region_bits")."""
        folder = Path(folder)
        if not folder.is_dir():
            raise UsageError(f"{folder}: no such dataset folder")
        if not find_clips(folder):
            raise UsageError(f"{folder}: no video clips found; a dataset is a folder of clips")
        self.clips: list[Clip] = []
        for result in extract_folder(folder, folder / KEYPOINT_CACHE, smooth=True):  # cached: kept
            if result.status == "failed":
                if on_clip is not None:
                    on_clip(f"skipped {result.clip}: {result.message}")
                continue
            clip = self._load(result.clip, Keypoints.load(result.output), height, width,
                              with_region_bits)
            if len(clip.keypoints) >= min_frames:
                self.clips.append(clip)
        if not self.clips:
            raise InputError(f"{folder}: no usable clips (each needs keypoints and at least "
                             f"{min_frames} frames)")

    @staticmethod
    def _load(path: Path, keypoints: Keypoints, height: int, width: int,
              with_region_bits: bool = False) -> Clip:
        info = probe_video(path)
        box = fit_box(info.width, info.height, width, height)
        frames = [crop_resize(rgb, box) for rgb in iter_video_frames(path, info)]
        count = min(len(frames), len(keypoints))
        fitted = fit_keypoints(keypoints[:count], box)
        video = torch.from_numpy(np.stack(frames[:count])).permute(0, 3, 1, 2).contiguous()
        maps = torch.from_numpy(render_pose_maps(fitted, height, width)).permute(0, 3, 1, 2)
        bits = None
        if with_region_bits:
            from posecast.pose.regions import region_bits

            bits = torch.from_numpy(region_bits(fitted, height, width))
        return Clip(video, maps.contiguous(), fitted, path, bits)

    def sample(self, batch: int, window: int,
               generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Random windows: frames (B, W, 3, H, W) and reference (B, 3, H, W) in [-1, 1],
        pose_maps (B, W, 3, H, W) in [0, 1], and the windows' and references' Keypoints
        (lists of B, for input-aware masks); with region bits, region_bits (B, W, H, W) uint8.
        Short clips repeat their last frame."""
        frames, references, maps, poses, reference_poses, bits = [], [], [], [], [], []
        for _ in range(batch):
            clip = self.clips[int(torch.randint(len(self.clips), (1,), generator=generator))]
            length = clip.frames.shape[0]
            start = int(torch.randint(max(1, length - window + 1), (1,), generator=generator))
            index = torch.arange(start, start + window).clamp(max=length - 1)
            reference = int(torch.randint(length, (1,), generator=generator))
            frames.append(clip.frames[index])
            maps.append(clip.pose_maps[index])
            if clip.region_bits is not None:
                bits.append(clip.region_bits[index])
            references.append(clip.frames[reference])
            poses.append(Keypoints.concatenate([clip.keypoints[i] for i in index.tolist()]))
            reference_poses.append(clip.keypoints[reference])
        to_unit = lambda x: torch.stack(x).float() / 127.5 - 1.0  # noqa: E731
        batch = {"frames": to_unit(frames), "reference": to_unit(references),
                 "pose_maps": torch.stack(maps).float() / 255.0, "poses": poses,
                 "reference_poses": reference_poses}
        if bits:
            batch["region_bits"] = torch.stack(bits)
        return batch
