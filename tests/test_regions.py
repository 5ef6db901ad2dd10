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
    # each token is the max-priority label of its pixels, checked against a full-size map
    labels = region_label_map(kp, 0, 32, 16, dilation=0.0)
    np.testing.assert_array_equal(grid[0], labels.reshape(8, 4, 4, 4).max(axis=(1, 3)))
    grown = token_regions(kp, 8, 4, dilation=0.0, dilate_tokens=1)[0]
    assert (grown >= grid[0]).all() and grown[2, 2] == Region.FACE
