"""Drawing keypoints: per-frame pose maps (the denoiser's conditioning) and previews.

Each part has its own colour so the pose guider can tell them apart: torso, each arm, legs,
face outline, eyes, eyebrows, lips and each hand. Face and hand topologies are mediapipe's own
connection tables, copied once into posecast/assets/mesh_topology.json (so drawing needs no
mediapipe; a test checks the copy against mediapipe); the body skeleton is posecast's.
"""

from __future__ import annotations

import functools
import json

import cv2
import numpy as np

from posecast.assets import MESH_TOPOLOGY
from posecast.pose.keypoints import Keypoints

# RGB colours, one per drawn part.
COLOURS = {
    "torso": (200, 200, 200),
    "left_arm": (255, 140, 0),
    "right_arm": (0, 140, 255),
    "legs": (110, 110, 110),
    "face_oval": (0, 200, 0),
    "eyes": (0, 255, 255),
    "eyebrows": (255, 255, 0),
    "nose": (0, 120, 60),
    "lips": (255, 0, 0),
    "left_hand": (255, 0, 255),
    "right_hand": (150, 60, 255),
}

BODY_LIMBS = {
    "torso": [(11, 12), (11, 23), (12, 24), (23, 24)],
    "left_arm": [(11, 13), (13, 15), (15, 17), (15, 19), (15, 21), (17, 19)],
    "right_arm": [(12, 14), (14, 16), (16, 18), (16, 20), (16, 22), (18, 20)],
    "legs": [(23, 25), (25, 27), (24, 26), (26, 28)],
}


@functools.lru_cache(maxsize=1)
def mesh_topology() -> dict[str, list[tuple[int, int]]]:
    """Face and hand edges (point index pairs) per drawn part: face_oval, eyes (with irises),
    eyebrows, nose, lips, left_hand, right_hand."""
    table = json.loads(MESH_TOPOLOGY.read_text())
    return {part: [tuple(edge) for edge in edges] for part, edges in table.items()}


def _edges(canvas: np.ndarray, points: np.ndarray, edges, colour, thickness: int,
           min_confidence: float, line_type: int) -> None:
    # rounded once for all points (as plain ints: cv2 wants them, and it is the fast path)
    pixels = [tuple(point) for point in np.round(points[:, :2]).astype(np.int64).tolist()]
    visible = (points[:, 2] > min_confidence).tolist()
    for a, b in edges:
        if visible[a] and visible[b]:
            cv2.line(canvas, pixels[a], pixels[b], colour, thickness, line_type)


def draw_pose(canvas: np.ndarray, keypoints: Keypoints, frame: int = 0,
              min_confidence: float = 0.5, thickness: int | None = None,
              antialias: bool = True) -> np.ndarray:
    """Draw frame `frame` of `keypoints` onto a copy of `canvas` (H, W, 3) uint8 RGB.

    Keypoints are scaled from their own frame size to the canvas size, so the same function
    draws previews at full size and conditioning maps at model size. Without `antialias`
    every drawn pixel has exactly its part's colour (what the pose guider should see).
    """
    line_type = cv2.LINE_AA if antialias else cv2.LINE_8
    canvas = np.ascontiguousarray(canvas, dtype=np.uint8).copy()
    height, width = canvas.shape[:2]
    scale = np.array([width / keypoints.width, height / keypoints.height, 1.0], np.float32)
    if thickness is None:
        thickness = max(1, round(max(height, width) / 200))
    fine = max(1, thickness // 2)
    body = keypoints.body[frame] * scale
    for limb, edges in BODY_LIMBS.items():
        _edges(canvas, body, edges, COLOURS[limb], thickness * 2, min_confidence, line_type)
        for joint in sorted({j for edge in edges for j in edge}):
            if body[joint, 2] > min_confidence:
                centre = (int(round(body[joint, 0])), int(round(body[joint, 1])))
                cv2.circle(canvas, centre, thickness * 2, COLOURS[limb], -1, line_type)
    topology = mesh_topology()
    face = keypoints.face[frame] * scale
    for part in ("face_oval", "eyes", "eyebrows", "nose", "lips"):
        _edges(canvas, face, topology[part], COLOURS[part], fine, 0.0, line_type)
    for hand in ("left_hand", "right_hand"):
        _edges(canvas, getattr(keypoints, hand)[frame] * scale, topology[hand], COLOURS[hand],
               thickness, 0.0, line_type)
    return canvas


def render_pose_maps(keypoints: Keypoints, height: int, width: int) -> np.ndarray:
    """(T, height, width, 3) uint8: every frame's pose drawn on black, the model's condition."""
    blank = np.zeros((height, width, 3), np.uint8)
    return np.stack([draw_pose(blank, keypoints, t, antialias=False)
                     for t in range(len(keypoints))])
