from __future__ import annotations

import numpy as np

from posecast.pose import Keypoints, Region, region_label_map, region_masks, token_regions
from posecast.pose.keypoints import (
    LEFT_ELBOW,
    LEFT_HIP,
    LEFT_SHOULDER,
    LEFT_WRIST,
    RIGHT_ELBOW,
    RIGHT_HIP,
    RIGHT_SHOULDER,
    RIGHT_WRIST,
)


def _square(centre, half, count):
    angles = np.linspace(0, 2 * np.pi, count, endpoint=False)
    return np.stack([centre[0] + half * np.cos(angles), centre[1] + half * np.sin(angles)], -1)


def hand_made(frames: int = 1, hand_at=(150.0, 250.0)) -> Keypoints:
    """A 200 × 400 (w × h) frame: face around (100, 60), shoulders at y 120, hips at y 300,
    the right arm hanging down, the left forearm raised to a hand at `hand_at`."""
    kp = Keypoints.empty(frames, width=200, height=400)
    body, face, left = kp.body.copy(), kp.face.copy(), kp.left_hand.copy()
    joints = {RIGHT_SHOULDER: (60, 120), LEFT_SHOULDER: (140, 120), RIGHT_ELBOW: (50, 200),
              LEFT_ELBOW: (160, 200), RIGHT_WRIST: (50, 280), LEFT_WRIST: hand_at,
              RIGHT_HIP: (70, 300), LEFT_HIP: (130, 300), 0: (100, 60)}
    for joint, xy in joints.items():
        body[:, joint] = (*xy, 0.99)
    face[:, :, :2] = _square((100, 60), 25, 478)
    face[:, :, 2] = 1.0
    left[:, :, :2] = _square(hand_at, 10, 21)
    left[:, :, 2] = 1.0
    return Keypoints(body, face, left, kp.right_hand, 25, 200, 400)


def test_region_masks_cover_the_parts():
    kp = hand_made()
    masks = region_masks(kp, 0, 400, 200, dilation=0.0)
    assert masks[Region.FACE][60, 100] and not masks[Region.FACE][100, 100]
    assert masks[Region.LEFT_HAND][250, 150] and not masks[Region.LEFT_HAND][200, 100]
    assert not masks[Region.RIGHT_HAND].any()  # no right-hand landmarks, wrist only
    assert masks[Region.ARMS][160, 55] and masks[Region.ARMS][240, 50]  # the hanging arm
    assert masks[Region.BODY][200, 100] and not masks[Region.BODY][380, 100]
    # the face region is exactly the landmark hull (radius 25) without dilation…
    assert masks[Region.FACE][60, 124] and not masks[Region.FACE][60, 128]
    # …and grows by the dilation margin (2 % of 400 px = 8 px)
    assert region_masks(kp, 0, 400, 200, dilation=0.02)[Region.FACE][60, 131]


def test_region_priority_and_background():
    labels = region_label_map(hand_made(), 0, 400, 200)
    assert labels[60, 100] == Region.FACE  # face over the torso's neck point
    assert labels[250, 150] == Region.LEFT_HAND  # hand over the arm
    assert labels[200, 160] == Region.ARMS
    assert labels[250, 100] == Region.BODY
    assert labels[390, 5] == Region.BACKGROUND


def test_torso_reaches_the_bottom_when_hips_are_out_of_frame():
    kp = hand_made()
    body = kp.body.copy()
    body[:, [LEFT_HIP, RIGHT_HIP], 2] = 0.0
    cropped = Keypoints(body, kp.face, kp.left_hand, kp.right_hand, 25, 200, 400)
    assert region_masks(cropped, 0, 400, 200)[Region.BODY][395, 100]


def test_token_rasterisation():
    kp = hand_made(frames=2)
    grid = token_regions(kp, 8, 4, supersample=4, dilation=0.0)  # 50 × 50 px tokens
    assert grid.shape == (2, 8, 4)
    np.testing.assert_array_equal(grid[0], grid[1])
    assert grid[0, 1, 2] == Region.FACE  # token (row 1, col 2) holds the face centre
    assert grid[0, 5, 3] == Region.LEFT_HAND  # any hand pixel wins the token
    assert grid[0, 7, 0] == Region.BACKGROUND
    grown = token_regions(kp, 8, 4, dilation=0.0, dilate_tokens=1)[0]
    assert (grown >= grid[0]).all() and grown[2, 2] == Region.FACE


# Boxes in the pixels of a 16 × 32 (w × h) raster, inclusive (x0, y0, x1, y1): 8 × 4 tokens of
# 4 × 4 pixels. Edges fall inside tokens and on their borders; the hand overlaps the torso.
BOXES = {Region.FACE: (5, 2, 9, 6), Region.LEFT_HAND: (12, 17, 13, 21),
         Region.BODY: (3, 8, 12, 31)}


def boxed_keypoints(scale: float = 4.0) -> Keypoints:
    """Keypoints whose face and left hand are the corners of their boxes and whose torso is
    shoulders and hips at the corners of its box (no elbows, so no arms), in a frame `scale`
    times the raster's size."""
    kp = Keypoints.empty(1, width=int(16 * scale), height=int(32 * scale))
    body, face, left = kp.body.copy(), kp.face.copy(), kp.left_hand.copy()

    def corners(region):
        x0, y0, x1, y1 = BOXES[region]
        return scale * np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], np.float32)

    face[0, :4] = np.c_[corners(Region.FACE), np.ones(4)]
    left[0, :4] = np.c_[corners(Region.LEFT_HAND), np.ones(4)]
    for joint, xy in zip((LEFT_SHOULDER, RIGHT_SHOULDER, RIGHT_HIP, LEFT_HIP),
                         corners(Region.BODY), strict=True):
        body[0, joint] = (*xy, 1.0)
    return Keypoints(body, face, left, kp.right_hand, 25, kp.width, kp.height)


def test_token_rasterisation_matches_an_independent_box_oracle():
    """The oracle works on tokens directly: a token holds a region when the region's pixel
    interval overlaps the token's interval on both axes, and takes the highest-priority such
    region; `dilate_tokens` then takes the maximum over the (2k + 1)² tokens around."""
    supersample, rows, cols = 4, 8, 4
    oracle = np.zeros((rows, cols), np.uint8)
    for row in range(rows):
        for col in range(cols):
            top, left = row * supersample, col * supersample
            for region, (x0, y0, x1, y1) in BOXES.items():
                if x0 < left + supersample and x1 >= left and y0 < top + supersample \
                        and y1 >= top:
                    oracle[row, col] = max(oracle[row, col], region)
    assert set(np.unique(oracle)) == {0, 1, 3, 5}  # every case present
    grid = token_regions(boxed_keypoints(), rows, cols, supersample, dilation=0.0)
    np.testing.assert_array_equal(grid[0], oracle)

    grown = np.zeros_like(oracle)
    for row in range(rows):
        for col in range(cols):
            grown[row, col] = oracle[max(row - 1, 0):row + 2, max(col - 1, 0):col + 2].max()
    np.testing.assert_array_equal(
        token_regions(boxed_keypoints(), rows, cols, supersample, dilation=0.0,
                      dilate_tokens=1)[0], grown)
