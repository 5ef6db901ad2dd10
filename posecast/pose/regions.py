"""Body regions from keypoints: pixel masks per part and their rasterisation to a token grid.

Regions are convex hulls of the face and hand landmarks, thick polylines through shoulder,
elbow and wrist, and the torso polygon, each grown by a margin (`dilation`, a fraction of
the frame's longer side). Overlaps resolve by priority face > hands > arms > body >
background; the enum values are that priority, so a max over labels resolves it.
"""

from __future__ import annotations

from enum import IntEnum

import cv2
import numpy as np

from posecast.pose.face_mesh import LIP_OUTLINE
from posecast.pose.keypoints import (
    LEFT_ELBOW,
    LEFT_HIP,
    LEFT_SHOULDER,
    LEFT_WRIST,
    NOSE,
    RIGHT_ELBOW,
    RIGHT_HIP,
    RIGHT_SHOULDER,
    RIGHT_WRIST,
    Keypoints,
)


class Region(IntEnum):
    """Token/pixel labels; a larger value wins where regions overlap."""

    BACKGROUND = 0
    BODY = 1
    ARMS = 2
    LEFT_HAND = 3
    RIGHT_HAND = 4
    FACE = 5


HEAD_POINTS = tuple(range(0, 11))  # body points on the head (nose, eyes, ears, mouth)
HAND_POINTS_IN_BODY = {"left_hand": (15, 17, 19, 21), "right_hand": (16, 18, 20, 22)}
_HAND_REGION = {"left_hand": Region.LEFT_HAND, "right_hand": Region.RIGHT_HAND}


def fill_hull(mask: np.ndarray, points: np.ndarray, grow: float) -> None:
    """Fill the convex hull of (N, 2) `points`, grown by `grow` pixels, into `mask` (in place).

    Fewer than two points outline nothing (a lone wrist says nothing about the hand's extent).
    """
    if len(points) < 2:
        return
    hull = cv2.convexHull(np.round(points).astype(np.int32).reshape(-1, 1, 2))
    cv2.fillConvexPoly(mask, hull, 1)
    if grow >= 0.5:
        cv2.polylines(mask, [hull], True, 1, thickness=int(round(2 * grow)) + 1)


def _span(points: np.ndarray) -> float:
    """The larger side of the bounding box of (N, 2) points (0 for fewer than two)."""
    return float(np.ptp(points, axis=0).max()) if len(points) >= 2 else 0.0


def pixel_scale(keypoints: Keypoints, height: int, width: int) -> np.ndarray:
    """(2,) float32 (x, y) factors from the keypoints' frame to a (height, width) picture."""
    return np.array([width / keypoints.width, height / keypoints.height], np.float32)


def region_masks(keypoints: Keypoints, frame: int, height: int, width: int,
                 dilation: float = 0.02, min_confidence: float = 0.5) -> dict[Region, np.ndarray]:
    """Each region's own (height, width) bool mask for one frame (overlaps not yet resolved).

    Keypoints are scaled from their frame size to (height, width). A face or hand without its
    landmark set falls back to the body model's points on the head or hand, grown by half its
    size; shoulders without hips (a portrait crop) extend the torso to the bottom edge.
    """
    scale = pixel_scale(keypoints, height, width)
    grow = dilation * max(height, width)
    body = keypoints.body[frame]
    body_xy, body_ok = body[:, :2] * scale, body[:, 2] > min_confidence
    masks = {region: np.zeros((height, width), np.uint8) for region in Region
             if region != Region.BACKGROUND}

    face = keypoints.face[frame]
    if (face[:, 2] > 0).any():
        fill_hull(masks[Region.FACE], face[face[:, 2] > 0, :2] * scale, grow)
    else:
        head = body_xy[list(HEAD_POINTS)][body_ok[list(HEAD_POINTS)]]
        fill_hull(masks[Region.FACE], head, grow + 0.5 * _span(head))

    for part, region in _HAND_REGION.items():
        hand = getattr(keypoints, part)[frame]
        if (hand[:, 2] > 0).any():
            fill_hull(masks[region], hand[hand[:, 2] > 0, :2] * scale, grow)
        else:
            index = list(HAND_POINTS_IN_BODY[part])
            points = body_xy[index][body_ok[index]]
            fill_hull(masks[region], points, grow + 0.5 * _span(points))

    shoulders_ok = body_ok[LEFT_SHOULDER] and body_ok[RIGHT_SHOULDER]
    shoulder_width = (float(np.linalg.norm(body_xy[LEFT_SHOULDER] - body_xy[RIGHT_SHOULDER]))
                      if shoulders_ok else 0.0)
    arm_thickness = max(2, int(round(0.35 * shoulder_width + 2 * grow)))
    for chain in ((LEFT_SHOULDER, LEFT_ELBOW, LEFT_WRIST),
                  (RIGHT_SHOULDER, RIGHT_ELBOW, RIGHT_WRIST)):
        for a, b in zip(chain[:-1], chain[1:], strict=True):
            if body_ok[a] and body_ok[b]:
                cv2.line(masks[Region.ARMS], tuple(np.round(body_xy[a]).astype(int)),
                         tuple(np.round(body_xy[b]).astype(int)), 1, arm_thickness)

    if shoulders_ok:
        torso = [body_xy[LEFT_SHOULDER], body_xy[RIGHT_SHOULDER]]
        for shoulder, hip in ((LEFT_SHOULDER, LEFT_HIP), (RIGHT_SHOULDER, RIGHT_HIP)):
            torso.append(body_xy[hip] if body_ok[hip] else
                         np.array([body_xy[shoulder][0], height - 1], np.float32))
        if body_ok[NOSE]:  # covers the neck; the face region wins over the head itself
            torso.append(body_xy[NOSE])
        fill_hull(masks[Region.BODY], np.stack(torso), grow)
    return {region: mask.astype(bool) for region, mask in masks.items()}


def region_label_map(keypoints: Keypoints, frame: int, height: int, width: int,
                     dilation: float = 0.02, min_confidence: float = 0.5) -> np.ndarray:
    """(height, width) uint8 Region labels for one frame, overlaps resolved by priority."""
    labels = np.zeros((height, width), np.uint8)
    for region, mask in region_masks(keypoints, frame, height, width, dilation,
                                     min_confidence).items():
        np.maximum(labels, mask.astype(np.uint8) * np.uint8(region), out=labels)
    return labels


def token_regions(keypoints: Keypoints, grid_height: int, grid_width: int, supersample: int = 4,
                  dilation: float = 0.02, dilate_tokens: int = 0,
                  min_confidence: float = 0.5) -> np.ndarray:
    """(T, grid_height, grid_width) uint8 Region label of every token of every frame.

    Regions are drawn at `supersample` pixels per token side; a token takes the
    highest-priority region that touches any of its pixels, then `dilate_tokens` grows every
    region by that many tokens (again by priority).
    """
    size = (grid_height * supersample, grid_width * supersample)
    kernel = np.ones((2 * dilate_tokens + 1, 2 * dilate_tokens + 1), np.uint8)
    grids = []
    for t in range(len(keypoints)):
        labels = region_label_map(keypoints, t, *size, dilation=dilation,
                                  min_confidence=min_confidence)
        grid = labels.reshape(grid_height, supersample, grid_width, supersample).max(axis=(1, 3))
        if dilate_tokens:
            grid = cv2.dilate(grid, kernel)  # a max filter: higher priority grows over lower
        grids.append(grid)
    return np.stack(grids).astype(np.uint8)


def lip_mask(keypoints: Keypoints, frame: int, height: int, width: int) -> np.ndarray:
    """(height, width) bool hull of the outer lip landmarks (empty without a face mesh)."""
    mask = np.zeros((height, width), np.uint8)
    face = keypoints.face[frame, list(LIP_OUTLINE)]
    if (face[:, 2] > 0).all():
        fill_hull(mask, face[:, :2] * pixel_scale(keypoints, height, width),
                  grow=0.01 * max(height, width))
    return mask.astype(bool)


# one bit per weighted region, so a clip's masks can be kept as one uint8 per pixel
REGION_BITS = {"face": 1, "lips": 2, "hands": 4, "arms": 8}


def region_bits(keypoints: Keypoints, height: int, width: int) -> np.ndarray:
    """(T, height, width) uint8: for every pixel of every frame, the REGION_BITS of the
    weighted regions that cover it."""
    bits = np.zeros((len(keypoints), height, width), np.uint8)
    for t in range(len(keypoints)):
        masks = region_masks(keypoints, t, height, width)
        covered = {"face": masks[Region.FACE], "lips": lip_mask(keypoints, t, height, width),
                   "hands": masks[Region.LEFT_HAND] | masks[Region.RIGHT_HAND],
                   "arms": masks[Region.ARMS]}
        for name, mask in covered.items():
            bits[t][mask] |= REGION_BITS[name]
    return bits
