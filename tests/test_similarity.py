from __future__ import annotations

import numpy as np

from posecast.pose import Keypoints, most_similar_past_frames, pose_distance_matrix, rigid_residual
from posecast.pose.keypoints import LEFT_WRIST, UPPER_BODY


def _rotate(points, angle, shift):
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]]) + shift


def test_rigid_copy_scores_zero_and_a_moved_hand_does_not():
    rng = np.random.default_rng(1)
    pose = rng.uniform(0, 300, (13, 2))
    assert rigid_residual(pose, _rotate(pose, 0.7, (40, -25))) < 1e-6
    moved = pose.copy()
    moved[9] += (60, 0)
    assert rigid_residual(pose, moved) > 5.0


def test_closed_form_matches_a_brute_force_search():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 50, (10, 2)), rng.normal(0, 50, (10, 2))
    best = min(
        np.sqrt(np.mean(np.sum((_rotate(b - b.mean(0), angle, 0) - (a - a.mean(0))) ** 2, -1)))
        for angle in np.linspace(-np.pi, np.pi, 20001)
    )
    assert abs(rigid_residual(a, b) - best) < 1e-3


def _sequence(poses, visible=None):
    kp = Keypoints.empty(len(poses), 400, 400)
    body = kp.body.copy()
    body[:, list(UPPER_BODY), :2] = poses
    body[:, list(UPPER_BODY), 2] = 1.0 if visible is None else visible
    return Keypoints(body, kp.face, kp.left_hand, kp.right_hand, 25, 400, 400)


def test_distance_matrix_and_past_frame_selection():
    rng = np.random.default_rng(3)
    base = rng.uniform(100, 300, (13, 2))
    wave = base.copy()
    wave[UPPER_BODY.index(LEFT_WRIST)] += (0, -80)  # hand raised
    frames = [base, wave, _rotate(base, 0.3, (10, 5)), _rotate(wave, -0.2, (0, 7)), base]
    kp = _sequence(np.stack(frames))
    distances = pose_distance_matrix(kp)
    np.testing.assert_allclose(distances, distances.T, atol=1e-9)
    np.testing.assert_allclose(np.diag(distances), 0, atol=1e-6)
    chosen = most_similar_past_frames(distances, k=2)
    assert chosen[0].tolist() == [-1, -1]  # nothing before the first frame
    assert chosen[1].tolist() == [0, -1]
    assert chosen[3, 0] == 1  # the raised hand matches the earlier raised hand
    assert set(chosen[4].tolist()) == {0, 2}  # rest pose matches rest poses only
    assert (chosen < np.arange(5)[:, None]).all()  # causal


def test_frames_without_common_joints_are_never_chosen():
    rng = np.random.default_rng(4)
    poses = rng.uniform(100, 300, (3, 13, 2))
    visible = np.ones((3, 13))
    visible[0] = 0.0  # nobody in frame 0
    distances = pose_distance_matrix(_sequence(poses, visible))
    assert np.isinf(distances[1, 0]) and np.isfinite(distances[2, 1])
    assert most_similar_past_frames(distances, k=2)[2].tolist() == [1, -1]
