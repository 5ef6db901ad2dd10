"""Fitting frames and keypoints to a model's frame size, and retargeting driving poses.

`fit_box` picks the largest centred crop with the model's aspect ratio (no distortion);
frames are cropped and resized with it, and keypoints get the same scale and offset.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from posecast.pose.keypoints import PARTS, UPPER_BODY, Keypoints


@dataclass(frozen=True)
class Box:
    """A crop (x, y, width, height) of a source frame, resized to (out_width, out_height)."""

    x: int
    y: int
    width: int
    height: int
    out_width: int
    out_height: int

    @property
    def scale(self) -> float:
        return self.out_width / self.width


def fit_box(width: int, height: int, out_width: int, out_height: int) -> Box:
    """The largest centred crop of a width × height frame with the output's aspect ratio."""
    aspect = out_width / out_height
    crop_w, crop_h = (height * aspect, height) if width / height > aspect else \
        (width, width / aspect)
    crop_w, crop_h = round(crop_w), round(crop_h)
    return Box((width - crop_w) // 2, (height - crop_h) // 2, crop_w, crop_h, out_width,
               out_height)


def crop_resize(rgb: np.ndarray, box: Box) -> np.ndarray:
    """(H, W, 3) uint8 → (out_height, out_width, 3) uint8 (area filter when shrinking)."""
    crop = rgb[box.y:box.y + box.height, box.x:box.x + box.width]
    interpolation = cv2.INTER_AREA if box.scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(crop, (box.out_width, box.out_height), interpolation=interpolation)


def transform_keypoints(keypoints: Keypoints, scale: float, offset: tuple[float, float],
                        width: int, height: int) -> Keypoints:
    """x' = scale·x + offset for every detected point; confidences and absences are kept."""
    parts = {}
    for part in PARTS:
        array = getattr(keypoints, part).copy()
        present = array[..., 2] > 0
        array[..., :2] = np.where(present[..., None], array[..., :2] * scale + offset, 0.0)
        parts[part] = array
    return replace(keypoints, **parts, width=width, height=height)


def fit_keypoints(keypoints: Keypoints, box: Box) -> Keypoints:
    """Keypoints in the coordinates of `crop_resize(…, box)`."""
    return transform_keypoints(keypoints, box.scale, (-box.x * box.scale, -box.y * box.scale),
                               box.out_width, box.out_height)


def retarget(driving: Keypoints, portrait: Keypoints, min_confidence: float = 0.5) -> Keypoints:
    """Move and scale a driving pose sequence onto the portrait's person.

    From the upper-body joints visible in both the portrait and the first driving frame:
    scale = ratio of their spreads around the centroid, offset = centroid difference. The same
    transform is applied to every frame, so the driving motion is kept as it was.
    """
    joints = list(UPPER_BODY)
    target, source = portrait.body[0, joints], driving.body[0, joints]
    common = (target[:, 2] > min_confidence) & (source[:, 2] > min_confidence)
    if common.sum() < 2:
        scale = portrait.width / driving.width
        return transform_keypoints(driving, scale, (0.0, 0.0), portrait.width, portrait.height)
    target_xy, source_xy = target[common, :2], source[common, :2]
    target_centre, source_centre = target_xy.mean(0), source_xy.mean(0)
    spread_t = np.sqrt(((target_xy - target_centre) ** 2).sum(-1).mean())
    spread_s = np.sqrt(((source_xy - source_centre) ** 2).sum(-1).mean())
    scale = float(spread_t / max(spread_s, 1e-6))
    offset = target_centre - scale * source_centre
    return transform_keypoints(driving, scale, (float(offset[0]), float(offset[1])),
                               portrait.width, portrait.height)


def portrait_box(keypoints: Keypoints, width: int, height: int, out_width: int,
                 out_height: int, face_heights: float = 3.2, face_at: float = 0.38) -> Box:
    """A crop of a portrait that keeps the face and upper body centred, for rendering.

    The crop is `face_heights` face heights tall (head, shoulders, upper chest), with the face
    centred horizontally and its centre `face_at` of the way down; it is shrunk to fit the
    image and shifted inside it, keeping the output's aspect ratio. Without a face mesh, the
    largest centred crop (fit_box).
    """
    face = keypoints.face[0]
    present = face[:, 2] > 0
    if present.sum() < 3:
        return fit_box(width, height, out_width, out_height)
    xy = face[present, :2]
    centre = (xy.min(0) + xy.max(0)) / 2
    face_height = float(np.ptp(xy[:, 1]))
    aspect = out_width / out_height
    crop_h = face_heights * face_height
    crop_h = min(crop_h, height, width / aspect)
    crop_w = crop_h * aspect
    x = int(round(np.clip(centre[0] - crop_w / 2, 0, width - crop_w)))
    y = int(round(np.clip(centre[1] - face_at * crop_h, 0, height - crop_h)))
    crop_w, crop_h = int(round(crop_w)), int(round(crop_h))
    return Box(x, y, min(crop_w, width - x), min(crop_h, height - y), out_width, out_height)
