"""The method's geometry and timing checked against oracles built in the tests themselves:
frame counts as literals, retargeting on a hand-made similarity, pose maps pixel by pixel
against the OpenPose/DWPose tables written out here, the input-aware mask from the method's
rule, the streaming caches past their wrap against whole passes under masks built here, and
the audio features' frame timing on a hand-made burst (issue 31)."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from conftest import cli_json

from posecast.pose.keypoints import Keypoints
from posecast.pose.regions import Region

# ------------------------------------------------------------------------ frame counts


@pytest.mark.parametrize("seconds,fps,frames", [
    (0.2, 25.0, 5),  # exactly 5 frames of 40 ms
    (0.2001, 25.0, 6),  # just past a frame boundary: one more frame covers the rest
    (0.19, 25.0, 5),  # just before one
    (0.04, 25.0, 1), (0.0401, 25.0, 2), (0.01, 25.0, 1), (0.0, 25.0, 1),
    (0.28, 25.0, 7),  # 0.28 × 25 is 7.000000000000001 in floating point
    (0.07, 100.0, 7),  # 7.000000000000001 again
    (2.3, 30.0, 69), (1 / 3, 30.0, 10), (7.0, 25.0, 175), (0.5, 24.0, 12), (0.51, 24.0, 13),
])
def test_frame_count_is_the_literal_number_of_frames_covering_the_audio(seconds, fps, frames):
    from posecast.motion import frame_count

    assert frame_count(seconds, fps) == frames


def test_motion_writes_one_pose_per_frame_of_the_audio(run_cli, tmp_path, portrait_path):
    """0.28 s of audio at 25 fps is 7 frames (not 8: 0.28 × 25 = 7.000000000000001), in the
    keypoint file and in the JSON summary; 0.21 s needs 6 (the 6th covers 0.20–0.21 s)."""
    from posecast.media import AudioClip

    for samples, frames in ((4480, 7), (3360, 6)):  # 16 kHz: 0.28 s and 0.21 s
        audio = tmp_path / f"{samples}.wav"
        AudioClip(np.zeros(samples, np.float32), 16_000).save_wav(audio)
        out = tmp_path / f"{samples}.npz"
        result = run_cli("motion", audio, portrait_path, "-o", out, "--json")
        assert result.code == 0, result.stderr
        assert cli_json(result.stdout, "motion")["frames"] == frames
        assert len(Keypoints.load(out)) == frames


# ------------------------------------------------------------------------ retargeting

def _person(points: dict[int, tuple[float, float]], width: int, height: int,
            frames: int = 1) -> Keypoints:
    kp = Keypoints.empty(frames, width, height)
    body = kp.body.copy()
    for joint, xy in points.items():
        body[:, joint] = (*xy, 0.9)
    return Keypoints(body, kp.face, kp.left_hand, kp.right_hand, 25.0, width, height)


# a driving person in a 640 × 480 video (nose, shoulders, elbows, hips)
DRIVING = {0: (320.0, 100.0), 11: (380.0, 200.0), 12: (260.0, 200.0), 13: (400.0, 300.0),
           14: (240.0, 300.0), 23: (360.0, 400.0), 24: (280.0, 400.0)}


def test_retarget_maps_the_driving_person_onto_the_portrait():
    """The portrait is the driving person scaled by 0.5 and moved by (−40, 30) into a
    300 × 200 frame: the first driving frame lands exactly on the portrait's joints, and a
    later frame (the right elbow raised by 60 px, a point absent from the portrait) lands at
    0.5 · p + (−40, 30); undetected points stay undetected."""
    from posecast.pose.framing import retarget

    scale, offset = 0.5, np.array([-40.0, 30.0])
    portrait = _person({j: tuple(scale * np.array(xy) + offset) for j, xy in DRIVING.items()},
                       300, 200)
    driving = _person(DRIVING, 640, 480, frames=2)
    body = driving.body.copy()
    body[1, 14, 1] -= 60  # the right elbow raised
    body[1, 16] = (230.0, 150.0, 0.9)  # a right wrist, seen in frame 1 only
    driving = Keypoints(body, driving.face, driving.left_hand, driving.right_hand, 25.0,
                        640, 480)
    moved = retarget(driving, portrait)
    assert (moved.width, moved.height) == (300, 200)
    for joint, (x, y) in DRIVING.items():
        np.testing.assert_allclose(moved.body[0, joint, :2], scale * np.array([x, y]) + offset,
                                   atol=1e-3)
    np.testing.assert_allclose(moved.body[1, 14, :2], [0.5 * 240 - 40, 0.5 * 240 + 30],
                               atol=1e-3)
    np.testing.assert_allclose(moved.body[1, 16, :2], [0.5 * 230 - 40, 0.5 * 150 + 30],
                               atol=1e-3)
    assert (moved.body[0, 16] == 0).all() and (moved.face == 0).all()


def test_retarget_fits_the_joints_both_frames_show():
    """Joints hidden in the portrait do not count: with the hips missing there and moved
    far off in the driving video, the fit still comes from the joints both show (scale 2,
    offset (10, −20) in a frame larger than the driving one)."""
    from posecast.pose.framing import retarget

    upper = {j: xy for j, xy in DRIVING.items() if j not in (23, 24)}
    portrait = _person({j: (2 * x + 10, 2 * y - 20) for j, (x, y) in upper.items()},
                       1400, 1000)
    driving_points = dict(DRIVING)
    driving_points[23], driving_points[24] = (600.0, 470.0), (10.0, 470.0)
    moved = retarget(_person(driving_points, 640, 480), portrait)
    for joint, (x, y) in driving_points.items():
        np.testing.assert_allclose(moved.body[0, joint, :2], [2 * x + 10, 2 * y - 20],
                                   atol=1e-3)


# ------------------------------------------------------------------------ DWPose maps

# OpenPose-18's limbs (1-based joint numbers) and colours as DWPose/MimicMotion write them, in
# the order they are drawn; the colours are BGR (its canvas is converted BGR → RGB at the end).
OPENPOSE_LIMBS_1 = [[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11],
                    [2, 12], [12, 13], [13, 14], [2, 1], [1, 15], [15, 17], [1, 16], [16, 18]]
OPENPOSE_COLOURS_BGR = [[255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0],
                        [170, 255, 0], [85, 255, 0], [0, 255, 0], [0, 255, 85], [0, 255, 170],
                        [0, 255, 255], [0, 170, 255], [0, 85, 255], [0, 0, 255], [85, 0, 255],
                        [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85]]
# OpenPose-18 joint names, and the mediapipe body index of each (the neck has none)
OPENPOSE_JOINTS = ["nose", "neck", "right_shoulder", "right_elbow", "right_wrist",
                   "left_shoulder", "left_elbow", "left_wrist", "right_hip", "right_knee",
                   "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye",
                   "left_eye", "right_ear", "left_ear"]
MEDIAPIPE_INDEX = {"nose": 0, "left_eye": 2, "right_eye": 5, "left_ear": 7, "right_ear": 8,
                   "left_shoulder": 11, "right_shoulder": 12, "left_elbow": 13,
                   "right_elbow": 14, "left_wrist": 15, "right_wrist": 16, "left_hip": 23,
                   "right_hip": 24, "left_knee": 25, "right_knee": 26, "left_ankle": 27,
                   "right_ankle": 28}
# a spread-out person on a 2160 × 3240 (w × h) frame, where DWPose's canvas is the frame
# itself (its shorter side is 2,160 px): every limb is a separate stroke, at least 100 px from
# any other limb's midpoint
SPREAD = {"nose": (1080, 400), "neck": (1080, 800), "right_shoulder": (680, 800),
          "left_shoulder": (1480, 800), "right_elbow": (480, 1300), "right_wrist": (380, 1900),
          "left_elbow": (1680, 1300), "left_wrist": (1780, 1900), "right_hip": (880, 1700),
          "right_knee": (780, 2400), "right_ankle": (740, 3000), "left_hip": (1280, 1700),
          "left_knee": (1380, 2400), "left_ankle": (1420, 3000), "right_eye": (960, 280),
          "left_eye": (1200, 280), "right_ear": (700, 360), "left_ear": (1460, 360)}
HAND_WRIST = (330.0, 2600.0)  # a left hand fanned out below the right wrist, off the legs


def _spread_keypoints(width: int, height: int, factor: float = 1.0, shift=(0.0, 0.0),
                      hand: bool = True) -> Keypoints:
    """SPREAD scaled by `factor` and moved by `shift` into a width × height frame, as mediapipe
    keypoints (the neck is where DWPose puts it: the shoulders' midpoint), with a left hand
    whose five fingers fan out downwards from HAND_WRIST."""
    kp = Keypoints.empty(1, width, height)
    body, left = kp.body.copy(), kp.left_hand.copy()
    for name, index in MEDIAPIPE_INDEX.items():
        body[0, index] = (*(factor * np.array(SPREAD[name]) + shift), 1.0)
    if hand:
        wrist = np.array(HAND_WRIST)
        points = [wrist]
        for finger in range(5):  # joints 1 + 4·finger … 4 + 4·finger along a ray
            angle = np.deg2rad(-150 + 30 * finger)
            points += [wrist + (100 + 80 * step) * np.array([np.cos(angle), -np.sin(angle)])
                       for step in range(4)]
        left[0] = np.c_[np.round(factor * np.array(points) + shift), np.ones(21)]
    return Keypoints(body, kp.face, left, kp.right_hand, 25.0, width, height)


def test_dwpose_draws_every_limb_and_joint_in_openposes_colour_at_its_place():
    """On a 2160 × 3240 frame (DWPose's canvas at its own size, no resampling), the middle
    and quarter points of every one of the 17 limbs have its OpenPose colour (the BGR table
    read as RGB) dimmed to 60 %, every joint's centre its undimmed colour, limbs are 9 px
    across, and every hand bone's midpoint has its hue i / 20 (also BGR, so reversed)."""
    from posecast.pose.dwpose import draw_dwpose

    width, height = 2160, 3240
    keypoints = _spread_keypoints(width, height)
    image = draw_dwpose(keypoints, height, width)[0].astype(int)
    assert image.shape == (height, width, 3)
    joints = {name: np.array(SPREAD[name], float) for name in OPENPOSE_JOINTS}
    for i, (a, b) in enumerate(OPENPOSE_LIMBS_1):
        start, end = joints[OPENPOSE_JOINTS[a - 1]], joints[OPENPOSE_JOINTS[b - 1]]
        rgb = OPENPOSE_COLOURS_BGR[i][::-1]
        expected = [c * 6 // 10 for c in rgb]  # DWPose: (canvas · 0.6).astype(uint8)
        for along in (0.25, 0.5, 0.75):  # on the limb's axis, ≥ 40 px from either joint
            x, y = start + along * (end - start)
            got = image[int(y), int(x)].tolist()
            assert got == expected, (i, OPENPOSE_JOINTS[a - 1], OPENPOSE_JOINTS[b - 1], along)
    for i, name in enumerate(OPENPOSE_JOINTS):
        x, y = joints[name]
        assert image[int(y), int(x)].tolist() == OPENPOSE_COLOURS_BGR[i][::-1], name
    # limbs are ellipses 2 × 4 px wide across (stickwidth 4): the vertical neck → nose limb
    # covers x = 1080 ± 4 at y = 600, and nothing is drawn 6 px beside its axis
    assert image[600, [1077, 1083]].tolist() == [[153, 0, 0]] * 2
    assert image[600, [1074, 1086]].max() == 0
    hand = keypoints.left_hand[0, :, :2]
    bones = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
             (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18),
             (18, 19), (19, 20)]
    for i, (a, b) in enumerate(bones):
        x, y = np.round((hand[a] + hand[b]) / 2).astype(int)
        bgr = np.array(colorsys.hsv_to_rgb(i / 20, 1.0, 1.0)) * 255
        patch = image[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3)  # the 2-px line crosses it
        assert (np.abs(patch - bgr[::-1]).max(1) <= 1).any(), (i, patch, bgr[::-1])


def test_dwpose_maps_of_a_small_wide_frame_keep_their_places():
    """The same person in a 480 × 270 (w × h) frame: DWPose draws at 8× (short side 2,160)
    and shrinks to the frame, so each limb's colour is found at its midpoint in the frame's
    own pixels (the 1-px-wide, dimmed stroke: its hue, not its exact level)."""
    from posecast.pose.dwpose import draw_dwpose

    factor, shift = 270 / 3240, np.array([160.0, 0.0])  # the person fills the height
    keypoints = _spread_keypoints(480, 270, factor, shift, hand=False)
    image = draw_dwpose(keypoints, 270, 480)[0].astype(float)
    assert image.shape == (270, 480, 3)
    for i, (a, b) in enumerate(OPENPOSE_LIMBS_1):
        middle = (np.array(SPREAD[OPENPOSE_JOINTS[a - 1]]) + SPREAD[OPENPOSE_JOINTS[b - 1]]) \
            / 2 * factor + shift
        x, y = int(round(middle[0])), int(round(middle[1]))
        patch = image[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3)
        brightest = patch[patch.sum(1).argmax()]
        rgb = np.array(OPENPOSE_COLOURS_BGR[i][::-1], float)
        assert brightest.sum() > 30, i
        cosine = brightest @ rgb / (np.linalg.norm(brightest) * np.linalg.norm(rgb))
        assert cosine > 0.97, (i, brightest, rgb)  # neighbours in the table: < 0.95


# ------------------------------------------------------------------------ posecast's maps

# posecast's own pose-map convention, written out: the parts of mediapipe's body skeleton, by
# anatomy (mediapipe's left is the person's left: the image's right side), and their colours
POSECAST_PARTS = {
    "torso": ((11, 12), (11, 23), (12, 24), (23, 24)),
    "left_arm": ((11, 13), (13, 15), (15, 17), (15, 19), (15, 21), (17, 19)),
    "right_arm": ((12, 14), (14, 16), (16, 18), (16, 20), (16, 22), (18, 20)),
    "legs": ((23, 25), (25, 27), (24, 26), (26, 28)),
}
POSECAST_RGB = {"torso": (200, 200, 200), "left_arm": (255, 140, 0),
                "right_arm": (0, 140, 255), "legs": (110, 110, 110),
                "left_hand": (255, 0, 255), "right_hand": (150, 60, 255)}
# body joints on a 200 × 400 (w × h) canvas: every stroke apart from the others
CANVAS_JOINTS = {11: (130, 70), 12: (70, 70), 13: (165, 120), 14: (35, 120), 15: (170, 180),
                 16: (30, 180), 17: (190, 230), 18: (10, 230), 19: (150, 240), 20: (50, 240),
                 21: (135, 200), 22: (65, 200), 23: (120, 290), 24: (80, 290), 25: (125, 340),
                 26: (75, 340), 27: (128, 390), 28: (72, 390)}
CANVAS_HANDS = {"left_hand": (170, 25), "right_hand": (30, 25)}  # centres of 12-px rings


def _segment_distance(point, a, b) -> float:
    point, a, b = (np.asarray(v, float) for v in (point, a, b))
    along = np.clip((point - a) @ (b - a) / ((b - a) @ (b - a)), 0, 1)
    return float(np.linalg.norm(point - a - along * (b - a)))


def test_posecast_pose_maps_draw_every_limb_in_its_parts_colour_at_its_place():
    """Keypoints of a 500 × 300 (w × h) frame drawn on a 200 × 400 canvas (x scaled by 0.4,
    y by 4/3): every body edge's midpoint has its part's colour, the hands' rings theirs;
    joints shared by two parts take the part drawn later (torso, then arms, then legs);
    elsewhere the canvas stays black."""
    from posecast.pose.draw import render_pose_maps

    width, height, frame_w, frame_h = 200, 400, 500, 300
    to_frame = np.array([frame_w / width, frame_h / height])
    kp = Keypoints.empty(1, frame_w, frame_h)
    body, hands = kp.body.copy(), {"left_hand": kp.left_hand.copy(),
                                   "right_hand": kp.right_hand.copy()}
    for joint, xy in CANVAS_JOINTS.items():
        body[0, joint] = (*(np.array(xy) * to_frame), 0.9)
    angles = np.linspace(0, 2 * np.pi, 21, endpoint=False)
    for hand, centre in CANVAS_HANDS.items():
        ring = np.array(centre) + 12 * np.c_[np.cos(angles), np.sin(angles)]
        hands[hand][0] = np.c_[ring * to_frame, np.ones(21)]
    maps = render_pose_maps(Keypoints(body, kp.face, hands["left_hand"], hands["right_hand"],
                                      25.0, frame_w, frame_h), height, width)
    assert maps.shape == (1, height, width, 3)
    image = maps[0]
    thickness = 2  # round(400 / 200): limbs are 4 px wide, joints 4 px in radius
    edges = [(part, edge) for part, part_edges in POSECAST_PARTS.items() for edge in part_edges]
    for part, (a, b) in edges:
        middle = (np.array(CANVAS_JOINTS[a]) + CANVAS_JOINTS[b]) / 2
        others = [_segment_distance(middle, CANVAS_JOINTS[c], CANVAS_JOINTS[d])
                  for other, (c, d) in edges if other != part]
        joints = [np.linalg.norm(middle - CANVAS_JOINTS[j]) for j in CANVAS_JOINTS]
        assert min(others) > 2 * thickness and min(joints) > 2 * thickness + 1  # construction
        x, y = np.round(middle).astype(int)
        assert tuple(image[y, x]) == POSECAST_RGB[part], (part, a, b, image[y, x])
    for joint, part in {11: "left_arm", 12: "right_arm", 15: "left_arm", 16: "right_arm",
                        23: "legs", 24: "legs"}.items():
        x, y = CANVAS_JOINTS[joint]
        assert tuple(image[y, x]) == POSECAST_RGB[part], (joint, part)
    for hand, (x, y) in CANVAS_HANDS.items():
        ring = image[y - 13:y + 14, x - 13:x + 14].reshape(-1, 3)
        colours = {tuple(c) for c in ring} - {(0, 0, 0)}
        assert colours == {POSECAST_RGB[hand]}, (hand, colours)
    assert image[5, 100].max() == 0 and image[395, 5].max() == 0 and image[230, 100].max() == 0


# ------------------------------------------------------------------------ attention masks

BACKGROUND = int(Region.BACKGROUND)


def _rule_mask(labels: np.ndarray, similar: list[list[int]], reference: np.ndarray | None = None,
               chunk: int = 0, reach: int = 0) -> np.ndarray:
    """The method's mask, token pair by token pair. labels (T, n) token regions; similar[t]:
    frame t's chosen past frames; tokens ordered (reference,) frame 0, frame 1, …. A frame's
    token sees every token of its own frame; a token of another, earlier frame when that
    frame is one of its chosen ones and both tokens are in the same non-background region,
    or (background) when that frame is at most `reach` back; the reference frame's tokens of
    its own non-background region; never a frame of a later chunk. The reference's tokens see
    the reference only."""
    frames, n = labels.shape
    frame_of = np.repeat(np.arange(frames), n)
    region_of = labels.ravel()
    if reference is not None:  # frame −1
        frame_of = np.concatenate([np.full(reference.size, -1), frame_of])
        region_of = np.concatenate([reference.ravel(), region_of])
    tq, tk = frame_of[:, None], frame_of[None, :]
    rq, rk = region_of[:, None], region_of[None, :]
    same_region = (rq == rk) & (rq != BACKGROUND)
    chosen = np.zeros((frames + 1, frames + 1), bool)  # [t_q, t_k], −1 (the reference) last
    for t, frames_chosen in enumerate(similar):
        chosen[t, frames_chosen] = True
    earlier = (tk < tq) & (tk >= 0)
    later_chunk = (tk // chunk > tq // chunk) if chunk else np.zeros_like(earlier)
    mask = (tq == tk) & (tq >= 0)
    mask |= earlier & ~later_chunk & chosen[tq, tk] & same_region
    mask |= earlier & ~later_chunk & (rq == BACKGROUND) & (rk == BACKGROUND) & (tq - tk <= reach)
    mask |= (tk == -1) & ((tq == -1) | same_region)
    return mask


@pytest.mark.parametrize("chunk,reference,reach", [(0, True, 1), (2, False, 0), (3, True, 2)])
def test_the_mask_of_hand_made_regions_is_the_methods_rule(chunk, reference, reach):
    """Five frames of 3 × 5 tokens (rows × columns) with every region present, hand-picked
    similar past frames (−1: none): build_mask equals the rule written out token by token."""
    from posecast.attention.mask import build_mask

    rng = np.random.default_rng(7)
    regions = rng.integers(0, len(Region), (5, 3, 5))
    past = np.array([[-1, -1], [0, -1], [0, -1], [2, 0], [1, 3]])
    reference_regions = rng.integers(0, len(Region), (3, 5)) if reference else None
    mask = build_mask(regions, past, reference_regions, chunk, background_reach=reach)
    similar = [[k for k in row if k >= 0] for row in past]
    expected = _rule_mask(regions.reshape(5, -1), similar, reference_regions, chunk, reach)
    np.testing.assert_array_equal(mask.token_mask().numpy(), expected)
    assert 0.1 < expected.mean() < 0.9


def _figure(width: int, height: int, arm_up: bool, shift: float) -> Keypoints:
    """One frame of a person on a width × height frame: a ring of face landmarks, shoulders,
    elbows, wrists and hips; `arm_up` raises the left forearm; `shift` moves it all right."""
    joints = {0: (24, 7), 12: (17, 13), 11: (31, 13), 14: (13, 20), 13: (35, 20),
              16: (12, 28), 15: (37, 10) if arm_up else (36, 28), 24: (19, 31), 23: (29, 31)}
    kp = Keypoints.empty(1, width, height)
    body, face = kp.body.copy(), kp.face.copy()
    for joint, (x, y) in joints.items():
        body[0, joint] = (x * width / 48 + shift, y * height / 32, 0.9)
    angles = np.linspace(0, 2 * np.pi, 478, endpoint=False)
    face[0, :, 0] = body[0, 0, 0] + 4 * np.cos(angles) * width / 48
    face[0, :, 1] = body[0, 0, 1] + 4 * np.sin(angles) * height / 32
    face[0, :, 2] = 1.0
    return Keypoints(body, face, kp.left_hand, kp.right_hand, 25.0, width, height)


@pytest.mark.parametrize("chunk,reference,dilation", [(0, True, 1), (2, False, 0)])
def test_a_windows_mask_follows_the_poses_on_a_wide_frame(chunk, reference, dilation):
    """A 48 × 32 (w × h) frame of 12 × 8 tokens; frames: arm down, arm up, arm down moved
    right, arm up moved right. With K = 1 the rigid copies are each other's most similar past
    frames (residual 0): frame 2 picks frame 0, frame 3 frame 1, by construction. The
    window's mask (regions from the poses) is the rule's, for a teacher with the portrait as
    reference frame and for a block-causal student."""
    from posecast.attention.mask import mask_for_window
    from posecast.config import preset
    from posecast.pose.regions import token_regions

    poses = Keypoints.concatenate([_figure(48, 32, up, shift) for up, shift in
                                   ((False, 0.0), (True, 0.0), (False, 4.0), (True, 4.0))])
    portrait = _figure(48, 32, False, -3.0)
    config = preset("tiny", height=32, width=48, attention="input_aware", k_frames=1,
                    reference_frame=reference, chunk=chunk, window=4, region_dilation=dilation)
    assert config.token_grid == (8, 12)
    labels = token_regions(poses, 8, 12, dilate_tokens=dilation).reshape(4, -1)
    reference_labels = token_regions(portrait, 8, 12, dilate_tokens=dilation)[0] \
        if reference else None
    assert {Region.FACE, Region.ARMS, Region.BODY, BACKGROUND} <= set(labels.ravel())
    mask = mask_for_window(poses, config, portrait if reference else None)
    expected = _rule_mask(labels, [[], [0], [0], [1]], reference_labels, chunk)
    np.testing.assert_array_equal(mask.token_mask().numpy(), expected)


# ------------------------------------------------------------------------ caches past their wrap

@pytest.fixture
def one_thread():
    """Small tensors on a shared CPU: one thread is 5–10× faster than two spinning OpenMP
    threads that other processes keep descheduling."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _streaming_rule_mask(poses: Keypoints, grid: tuple[int, int], dilation: int, chunk: int,
                         window: int, k: int) -> np.ndarray:
    """(T·n, T·n) what a streamed student's frames see, by the rule: frame t of the chunk
    ending at e sees only frames of [e − window, e) (what the ring holds, and its chunk), and
    of those the K most similar earlier ones (by the rigid-alignment residual) region by
    region."""
    from posecast.pose.regions import token_regions
    from posecast.pose.similarity import pose_distance_matrix

    frames = len(poses)
    labels = token_regions(poses, *grid, dilate_tokens=dilation).reshape(frames, -1)
    distances = pose_distance_matrix(poses)
    full = _rule_mask(labels, [[] for _ in range(frames)], chunk=chunk)  # own frames only
    n = labels.shape[1]
    for t in range(frames):
        end = (t // chunk + 1) * chunk
        candidates = [f for f in range(max(0, end - window), t) if np.isfinite(distances[t, f])]
        similar = sorted(candidates, key=lambda f: distances[t, f])[:k]
        rows = slice(t * n, (t + 1) * n)
        full[rows] |= _rule_mask(labels, [similar if s == t else [] for s in range(frames)],
                                 chunk=chunk)[rows]
    return full


def _wide_poses(frames: int, width: int, height: int, seed: int) -> Keypoints:
    """Moving synthetic poses squeezed into a width × height frame."""
    from synthetic import synthetic_clip

    _, square = synthetic_clip(width, frames, 25.0, np.random.default_rng(seed))
    factor = np.array([1.0, height / width, 1.0], np.float32)
    return Keypoints(square.body * factor, square.face * factor, square.left_hand * factor,
                     square.right_hand * factor, 25.0, width, height)


def test_an_input_aware_student_streams_past_its_ring_as_a_whole_pass_under_the_rule(
        one_thread):
    """A DiT student on 40 × 24 frames (10 × 6 tokens), chunks of 2 frames, 4 frames of
    cache (ring slots 0–1 and 2–3), K = 2: the last of 4 chunks reads a wrapped ring (frames
    4, 5, 2, 3), and every chunk's clean estimate (at test_student.T) equals one pass over all
    8 frames under the streaming rule's token mask built here (each chunk sees its window
    only), with the dense and gather backends (eager flex takes 5 s here; it is checked on the
    streaming masks in test_attention)."""
    from test_student import _chunk_by_chunk, _full_estimate, _random_model

    from posecast.config import preset

    config = preset("tiny", attention="input_aware", chunk=2, window=6, k_frames=2,
                    height=24, width=40, block_size=64)
    model = _random_model(config)
    poses = _wide_poses(8, 40, 24, seed=2)
    g = torch.Generator().manual_seed(1)
    x, maps = torch.randn(1, 8, 3, 24, 40, generator=g), torch.rand(1, 8, 3, 24, 40,
                                                                    generator=g)
    reference = torch.randn(1, 3, 24, 40, generator=g)
    rule = _streaming_rule_mask(poses, config.token_grid, config.region_dilation, 2, 6, 2)
    with torch.no_grad():
        whole = _full_estimate(model, x, reference, maps, torch.from_numpy(rule))
    for backend in ("dense", "gather"):
        model.config = config.replace(attention_backend=backend)
        checked = []

        def check(start, end, out, checked=checked):
            torch.testing.assert_close(out, whole[:, start:end], atol=1e-5, rtol=1e-5)
            checked.append(start)

        _chunk_by_chunk(model, x, reference, maps, poses, check)
        assert checked == [0, 2, 4, 6], backend


def test_a_mimicmotion_student_streams_past_its_ring_as_a_whole_pass_under_the_rule(
        one_thread):
    """The MimicMotion student (input-aware, gather) on 96 × 64 (w × h) frames: joint
    attention at latent levels 0 (12 × 8 tokens) and 1 (6 × 4), chunks of 2 frames, 4 cached
    frames, K = 1. Eight frames wrap the ring (the last chunk reads frames 4, 5, 2, 3 from
    slots 0–3); the cached chunks equal one whole pass whose joint attentions use the
    streaming rule's masks built here and whose temporal attentions see the same frame
    windows (the student's own whole pass is not the oracle: its masks span every frame)."""
    from test_mimicmotion import _unet_config

    from posecast.attention.mask import InputAwareMask
    from posecast.attention.plan import AttentionPlan
    from posecast.mimicmotion.model import MimicMotion, MimicMotionTeacher, Recipe
    from posecast.mimicmotion.student import (
        Conditions,
        MimicMotionStudent,
        StudentSettings,
    )
    from posecast.streaming.rollout import Rollout

    torch.manual_seed(4)
    network = MimicMotion(_unet_config()).eval()
    with torch.no_grad():
        network.pose_net.final_proj.weight.normal_(0, 0.2)  # the pose matters
    parts = MimicMotionTeacher(network, None, None, (0, 0, 0), (1, 1, 1), {},
                               Recipe(height=64, width=96))
    settings = StudentSettings(chunk=2, context_frames=4, steps=2, attention="input_aware",
                               levels=(0, 1), k_frames=1, backend="gather", sigma_min=5.0)
    student = MimicMotionStudent(parts, settings)
    frames, window = 8, 6
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, frames, 4, 8, 12, generator=g)
    conditions = Conditions(torch.randn(1, 1, 32, generator=g),
                            torch.randn(1, 4, 8, 12, generator=g),
                            torch.tensor([[6., 127., 0.]]))
    maps = torch.rand(1, frames, 3, 64, 96, generator=g) * 2 - 1
    poses = _wide_poses(frames, 96, 64, seed=1)

    plans = {}
    for rows, cols in ((8, 12), (4, 6)):
        rule = torch.from_numpy(_streaming_rule_mask(poses, (rows, cols),
                                                     settings.region_dilation, 2, window, 1))
        tokens = rule.shape[0]  # one group per token: the table is the token mask
        table = torch.zeros(tokens + 1, tokens + 1, dtype=torch.bool)
        table[:-1, :-1] = rule
        every = torch.arange(tokens)
        plans[rows * cols] = AttentionPlan.for_windows([InputAwareMask(every, every, table)],
                                                       "dense", torch.device("cpu"))
    chunk_of = torch.arange(frames) // 2
    window_start = (chunk_of + 1) * 2 - window
    temporal = (chunk_of[None, :] <= chunk_of[:, None]) & \
        (torch.arange(frames)[None, :] >= window_start[:, None])  # (query, key) frames
    context = student.context
    context.whole_pass_mask = lambda count, device: temporal[:count, :count].to(device)
    with torch.no_grad():
        context.cache, context.commit, context.plans = None, False, plans
        context.first_frame = torch.zeros((), dtype=torch.long)
        whole = student.denoise(x, 5.0, conditions, maps)
        context.plans = {}
        del context.whole_pass_mask
        stream = Rollout(student, conditions, lambda s, e: maps[:, s:e],
                         lambda s, e: [poses[s:e]])
        streamed = torch.cat([stream.regress(x[:, s:s + 2], 5.0, x[:, s:s + 2])
                              for s in range(0, frames, 2)], dim=1)
    assert stream.cache.valid.all() and stream.next_frame == frames
    torch.testing.assert_close(streamed, whole, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------ audio timing

@pytest.mark.parametrize("fps,onset,rise", [(10.0, 0.535, 5), (25.0, 0.49, 12)])
def test_a_loud_burst_starts_at_the_video_frame_that_covers_it(fps, onset, rise):
    """Digital silence, then a 200 Hz tone from `onset` s on (16 kHz, 2 s). Video frame i
    describes the audio around τ = (i + 0.5) / fps; loudness is measured over 25-ms windows
    centred every 10 ms and interpolated linearly, so frame i reads the two windows centred
    within 10 ms of τ. A window is silent (loudness exactly 0) while it ends before the onset,
    c + 12.5 ms ≤ onset, and at full loudness (1: at most 6 dB below the peak) once its last
    quarter holds the tone, c + 12.5 ms − 6.25 ms ≥ onset. So frame i is 0 while
    τ + 10 ms + 12.5 ms ≤ onset and 1 once τ − 10 ms + 6.25 ms ≥ onset; the onsets put the
    rise between frames rise − 1 and rise with at least 6 ms to spare on both sides."""
    from posecast.media import AudioClip
    from posecast.motion import speech_features

    rate = 16_000
    t = np.arange(2 * rate) / rate
    samples = np.where(t >= onset, 0.5 * np.sin(2 * np.pi * 200 * t), 0.0).astype(np.float32)
    centres = (np.arange(2 * int(fps)) + 0.5) / fps
    assert centres[rise - 1] + 0.010 + 0.0125 <= onset - 0.006  # construction: silent …
    assert centres[rise] - 0.010 + 0.00625 >= onset + 0.006  # … then loud, with margins
    loudness = speech_features(AudioClip(samples, rate), fps, 2 * int(fps)).loudness
    assert (loudness[:rise] == 0).all(), loudness[:rise + 1]
    assert (loudness[rise:] > 0.999).all(), loudness[rise - 1:rise + 2]


def test_the_loudness_curve_is_the_rms_of_centred_windows_read_at_frame_centres():
    """The same kind of burst (onset off the 10-ms grid, at 0.4912 s) read at 200 frames per
    second, against the definition written out here: the RMS of 400 samples centred on every
    160th sample (zeros beyond the clip), in dB mapped from [peak − 45, peak − 6] to [0, 1],
    interpolated linearly at the frame centres (i + 0.5) / fps. Its rise spans one analysis
    step, and the window ending 1.3 ms into the burst reads it at −13 dB (0.83): a shift of
    a few milliseconds or a shorter window anywhere in the chain changes the curve."""
    from posecast.media import AudioClip
    from posecast.motion import speech_features

    rate, fps, onset = 16_000, 200.0, 0.4912
    t = np.arange(rate) / rate
    samples = np.where(t >= onset, 0.5 * np.sin(2 * np.pi * 200 * t), 0.0).astype(np.float32)
    padded = np.pad(samples.astype(np.float64), 200)
    centres = np.arange(1 + len(samples) // 160) * 160  # sample j·160 is padded[j·160 + 200]
    rms = np.sqrt([np.mean(padded[c:c + 400] ** 2) for c in centres])
    decibels = 20 * np.log10(np.maximum(rms, 1e-10))
    level = np.clip((decibels - (decibels.max() - 45)) / 39, 0, 1)
    expected = np.interp((np.arange(200) + 0.5) / fps, centres / rate, level)
    assert ((expected > 0.05) & (expected < 0.95)).sum() >= 2  # the rise is sampled
    loudness = speech_features(AudioClip(samples, rate), fps, 200).loudness
    np.testing.assert_allclose(loudness, expected, atol=1e-3)


def _standing(width: int = 576, height: int = 1024) -> np.ndarray:
    """(33, 3) mediapipe body of a person standing, every joint sure (0.9)."""
    body = np.zeros((33, 3), np.float32)
    points = {0: (288, 200), 2: (275, 190), 5: (301, 190), 7: (260, 200), 8: (316, 200),
              11: (348, 320), 12: (228, 320), 13: (370, 450), 14: (206, 450), 15: (380, 560),
              16: (196, 560), 23: (320, 600), 24: (256, 600), 25: (322, 780), 26: (254, 780),
              27: (324, 950), 28: (252, 950)}
    for index, (x, y) in points.items():
        body[index] = (x, y, 0.9)
    return body


def _keypoints(bodies: np.ndarray, width: int, height: int):
    empty = Keypoints.empty(len(bodies), width, height)
    return Keypoints(body=bodies.astype(np.float32), face=empty.face, left_hand=empty.left_hand,
                     right_hand=empty.right_hand, width=width, height=height, fps=empty.fps)


def test_whole_video_alignment_is_mimicmotions_least_squares_fit():
    """Issue 34 (item 5): MimicMotion fits one scale and offset for the whole driving video: the
    least-squares line from the driving y of the head, torso and leg joints (those the portrait
    shows above 0.3) to the portrait's, over every frame, and the x offset that centres the x
    residuals. Checked against that line worked out by hand (sums, not np.polyfit), on frames
    that move, with a portrait joint below 0.3 whose driving twin is far off."""
    from posecast.pose.dwpose import whole_video_alignment

    portrait_body = _standing()
    portrait_body[27, 2] = 0.2  # the left ankle: below 0.3, so out of the fit
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(4):  # the person at half size, shifted, swaying a little
        body = _standing().copy()
        body[:, :2] = body[:, :2] * 0.5 + (40, 30) + rng.normal(0, 3, (33, 2))
        body[27, :2] = (5000, -900)  # far off: must not matter
        frames.append(body)
    driving = _keypoints(np.stack(frames), 400, 700)
    aligned = whole_video_alignment(driving, _keypoints(portrait_body[None], 576, 1024))

    # the fit by hand, over the mediapipe twins of the OpenPose joints it uses
    joints = [0, 12, 11, 24, 26, 28, 23, 25, 5, 2, 8, 7]  # nose … ears, the left ankle left out
    driving_xy = np.concatenate([f[joints, :2] for f in frames]).astype(float)
    target_xy = np.tile(portrait_body[joints, :2], (len(frames), 1)).astype(float)
    neck = lambda body: body[[11, 12], :2].mean(axis=0)  # noqa: E731 (OpenPose's neck)
    driving_xy = np.concatenate([driving_xy, [neck(f) for f in frames]])
    target_xy = np.concatenate([target_xy, [neck(portrait_body)] * len(frames)])
    dy, ty = driving_xy[:, 1], target_xy[:, 1]
    scale = ((dy - dy.mean()) * (ty - ty.mean())).sum() / ((dy - dy.mean()) ** 2).sum()
    offset = (np.mean(target_xy[:, 0] - scale * driving_xy[:, 0]), ty.mean() - scale * dy.mean())
    expected = frames[2][:, :2] * scale + offset
    assert scale == pytest.approx(2.0, rel=0.02)  # it undoes the half size
    assert np.allclose(aligned.body[2, :, :2][frames[2][:, 2] > 0],
                       expected[frames[2][:, 2] > 0], atol=1e-2)
    assert (aligned.width, aligned.height) == (576, 1024)


def test_whole_video_alignment_puts_a_scaled_copy_back_exactly():
    from posecast.pose.dwpose import whole_video_alignment

    portrait = _standing()
    copy = portrait.copy()
    copy[:, :2] = (portrait[:, :2] - (100, 50)) / 1.6  # the same pose, smaller and shifted
    aligned = whole_video_alignment(_keypoints(np.stack([copy, copy]), 576, 1024),
                                    _keypoints(portrait[None], 576, 1024))
    assert np.allclose(aligned.body[:, :, :2], portrait[None, :, :2], atol=1e-3)
