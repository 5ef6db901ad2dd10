"""Pose maps drawn the way MimicMotion was trained on them (DWPose renders), from mediapipe
keypoints.

MimicMotion saw OpenPose-18 bodies (limbs as filled ellipses in fixed colours, dimmed to 60 %,
joints as dots), 21-point hands (bones in rainbow hues, red joints) and 68 white face dots,
drawn on a black canvas whose shorter side is 2,160 px and then resized to the frame. posecast's
keypoints come from mediapipe, so they are mapped first: OpenPose's 18 body points from
mediapipe's 33 (the neck is the shoulders' midpoint), the hands as they are (both use the same
21-point layout), and 68 face points picked from the 478-point mesh in the iBUG-68 layout (jaw,
brows, nose, eyes, lips). Colours are given as RGB here.
"""

from __future__ import annotations

import colorsys
import math

import cv2
import numpy as np

from posecast.pose.framing import transform_keypoints
from posecast.pose.keypoints import Keypoints

# OpenPose-18 order → mediapipe body index (neck, −1, is the shoulders' midpoint)
OPENPOSE_FROM_MEDIAPIPE = (0, -1, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
# the 17 limbs drawn (OpenPose indices), and the 18 colours (limb i and joint i share one)
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
         (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
COLOURS = ((0, 0, 255), (0, 85, 255), (0, 170, 255), (0, 255, 255), (0, 255, 170),
           (0, 255, 85), (0, 255, 0), (85, 255, 0), (170, 255, 0), (255, 255, 0),
           (255, 170, 0), (255, 85, 0), (255, 0, 0), (255, 0, 85), (255, 0, 170),
           (255, 0, 255), (170, 0, 255), (85, 0, 255))
HAND_BONES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
              (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18),
              (18, 19), (19, 20))
# iBUG-68 face layout from mediapipe's mesh: jaw 17, brows 5 + 5, nose 4 + 5, eyes 6 + 6,
# outer lips 12, inner lips 8 (image-left side first, as in the 68-point layout)
FACE_68 = (234, 93, 132, 58, 172, 136, 150, 176, 152, 400, 379, 365, 397, 288, 361, 323, 454,
           70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
           168, 6, 197, 195, 98, 97, 2, 326, 327,
           33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
           61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
           78, 81, 13, 311, 308, 402, 14, 178)
CANVAS_SHORT_SIDE = 2160  # DWPose draws at this size, so strokes keep their thickness
BODY_THRESHOLD = 0.3  # joints, and limbs whose ends, are not this sure are not drawn
LIMB_DIMMING = 0.6  # limbs (not joints) are drawn at 60 % of their colour


def openpose_body(body: np.ndarray) -> np.ndarray:
    """(33, 3) mediapipe points → (18, 3) OpenPose-18 (x, y, confidence); the neck, the
    shoulders' midpoint, is sure (1) where both shoulders are above BODY_THRESHOLD and absent
    (0) otherwise, as DWPose scores it."""
    out = body[[max(i, 0) for i in OPENPOSE_FROM_MEDIAPIPE]].copy()
    shoulders = body[[11, 12]]
    out[1, :2] = shoulders[:, :2].mean(axis=0)
    out[1, 2] = float((shoulders[:, 2] > BODY_THRESHOLD).all())
    return out


# OpenPose joints MimicMotion fits a driving video to its portrait with: nose, neck, shoulders,
# hips, knees, ankles, eyes and ears (not the arms, which move)
ALIGNMENT_JOINTS = (0, 1, 2, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17)


def whole_video_alignment(driving: Keypoints, portrait: Keypoints) -> Keypoints | None:
    """MimicMotion's way of putting driving poses on the portrait's person: one scale s and
    offset for the whole video. s and the y offset are the least-squares line through (a
    driving joint's y, the portrait's same joint's y) over every frame, for the
    ALIGNMENT_JOINTS the portrait shows above BODY_THRESHOLD; the x offset is the mean of
    portrait x − s · driving x. (Tencent fits in coordinates normalised by each image's size
    with the x scale tied to y's by the aspect ratios, which is this same uniform scale in
    pixels.) Driving joints that were not found are left out of the fit, where the reference
    would fit their placeholders. None: too few joints to fit."""
    reference = openpose_body(portrait.body[0])
    joints = [j for j in ALIGNMENT_JOINTS if reference[j, 2] > BODY_THRESHOLD]
    found = np.stack([openpose_body(body) for body in driving.body])[:, joints]  # (T, J, 3)
    seen = found[..., 2] > 0
    heights = found[..., 1][seen]
    if len(joints) < 2 or heights.size < 2 or heights.max() == heights.min():
        return None
    target = np.broadcast_to(reference[joints], found.shape)[seen]
    scale, offset_y = np.polyfit(heights, target[:, 1], 1)
    offset_x = float(np.mean(target[:, 0] - scale * found[..., 0][seen]))
    return transform_keypoints(driving, float(scale), (offset_x, float(offset_y)),
                               portrait.width, portrait.height)


def _scaled(points: np.ndarray, scale: float) -> np.ndarray:
    return points[:, :2] * scale


def draw_frame(body: np.ndarray, face: np.ndarray, left_hand: np.ndarray,
               right_hand: np.ndarray, height: int, width: int) -> np.ndarray:
    """One (H, W, 3) uint8 RGB pose map from one frame's mediapipe points (pixels)."""
    scale = CANVAS_SHORT_SIDE / min(height, width)
    canvas = np.zeros((round(height * scale), round(width * scale), 3), np.uint8)
    stick = 4
    points = openpose_body(body)
    xy, confidence = _scaled(points, scale), points[:, 2]
    for index, (a, b) in enumerate(LIMBS):
        if min(confidence[a], confidence[b]) < BODY_THRESHOLD:
            continue
        (x0, y0), (x1, y1) = xy[a], xy[b]
        length = math.hypot(x1 - x0, y1 - y0)
        angle = math.degrees(math.atan2(y0 - y1, x0 - x1))
        polygon = cv2.ellipse2Poly((int((x0 + x1) / 2), int((y0 + y1) / 2)),
                                   (int(length / 2), stick), int(angle), 0, 360, 1)
        strength = confidence[a] * confidence[b]
        # DWPose dims the whole limb canvas to 60 % afterwards; the fill overwrites (no
        # blending), so dimming each colour is the same, without a pass over 25 MB per frame
        colour = [int(int(c * strength) * LIMB_DIMMING) for c in COLOURS[index]]
        cv2.fillConvexPoly(canvas, polygon, colour)
    for index in range(18):
        if confidence[index] <= BODY_THRESHOLD:  # DWPose drops these joints altogether
            continue
        x, y = xy[index]
        cv2.circle(canvas, (int(x), int(y)), 4,
                   [int(c * confidence[index]) for c in COLOURS[index]], thickness=-1)
    for hand in (left_hand, right_hand):
        if hand[:, 2].max() <= 0:
            continue
        hand_xy = _scaled(hand, scale)
        for index, (a, b) in enumerate(HAND_BONES):
            strength = hand[a, 2] * hand[b, 2]
            if strength <= 0:
                continue
            # DWPose's hue, which it draws into a BGR canvas: reversed here for RGB
            colour = np.array(colorsys.hsv_to_rgb(index / len(HAND_BONES), 1.0, 1.0)[::-1])
            cv2.line(canvas, tuple(int(v) for v in hand_xy[a]), tuple(int(v) for v in hand_xy[b]),
                     (colour * int(strength * 255)).tolist(), thickness=2)
        for (x, y), sure in zip(hand_xy, hand[:, 2], strict=True):
            if sure > 0:
                cv2.circle(canvas, (int(x), int(y)), 4, (int(sure * 255), 0, 0), thickness=-1)
    if face[:, 2].max() > 0:
        for x, y in _scaled(face[list(FACE_68)], scale):
            level = int(face[0, 2] * 255)
            cv2.circle(canvas, (int(x), int(y)), 3, (level, level, level), thickness=-1)
    return cv2.resize(canvas, (width, height))


def draw_dwpose(keypoints: Keypoints, height: int, width: int) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB pose maps of keypoints given in the frame's pixels."""
    return np.stack([draw_frame(keypoints.body[t], keypoints.face[t], keypoints.left_hand[t],
                                keypoints.right_hand[t], height, width)
                     for t in range(len(keypoints))])
