"""Pose similarity between frames: the residual of the best 2-D rigid alignment (Procrustes).

For frames q and k, S(q, k) = min over rotations R and translations t of the RMS distance
between R·p_k + t and p_q over the upper-body joints visible in both. In 2-D the optimum is
closed form: with both point sets centred (weighted), a = Σ w (p_k · p_q) and
b = Σ w (p_k × p_q), the best angle is atan2(b, a) and the minimal squared error is
Σ w (|p_k|² + |p_q|²) − 2·sqrt(a² + b²). Smaller is more similar; units are pixels.
"""

from __future__ import annotations

import numpy as np

from posecast.pose.keypoints import UPPER_BODY, Keypoints


def rigid_residual(reference: np.ndarray, moving: np.ndarray,
                   weights: np.ndarray | None = None) -> float:
    """RMS distance (pixels) after the best rotation + translation of `moving` onto
    `reference`; both (N, 2), `weights` (N,) ≥ 0 (1 for all by default)."""
    weights = np.ones(len(reference)) if weights is None else weights
    matrix = _residual_matrix(reference[None], moving[None], weights[None], weights[None])
    return float(matrix[0, 0])


def _residual_matrix(points_q: np.ndarray, points_k: np.ndarray, weights_q: np.ndarray,
                     weights_k: np.ndarray) -> np.ndarray:
    """(Q, K) residuals between every frame of (Q, N, 2) and every frame of (K, N, 2).

    A joint counts for a pair when it is visible in both (weight = product of weights).
    Pairs sharing fewer than two joints cannot be aligned and get +inf.
    """
    p_q, p_k = points_q.astype(np.float64), points_k.astype(np.float64)
    w = weights_q[:, None, :] * weights_k[None, :, :]  # (Q, K, N)
    total = w.sum(-1)  # (Q, K)
    safe_total = np.maximum(total, 1e-12)
    centre_q = np.einsum("qkn,qnd->qkd", w, p_q) / safe_total[..., None]  # (Q, K, 2)
    centre_k = np.einsum("qkn,knd->qkd", w, p_k) / safe_total[..., None]
    c_q = p_q[:, None] - centre_q[:, :, None]  # (Q, K, N, 2)
    c_k = p_k[None, :] - centre_k[:, :, None]
    dot = np.einsum("qkn,qknd,qknd->qk", w, c_k, c_q)
    cross = np.einsum("qkn,qkn->qk", w, c_k[..., 0] * c_q[..., 1] - c_k[..., 1] * c_q[..., 0])
    squares = np.einsum("qkn,qknd->qk", w, c_q**2 + c_k**2)
    error = np.maximum(squares - 2.0 * np.hypot(dot, cross), 0.0) / safe_total
    residual = np.sqrt(error)
    residual[(w > 0).sum(-1) < 2] = np.inf
    return residual


def pose_distance_matrix(keypoints: Keypoints, joints: tuple[int, ...] = UPPER_BODY,
                         min_confidence: float = 0.5) -> np.ndarray:
    """(T, T) rigid-alignment residuals between all frames (symmetric, zero diagonal)."""
    body = keypoints.body[:, list(joints)]
    visible = (body[..., 2] > min_confidence).astype(np.float64)
    return _residual_matrix(body[..., :2], body[..., :2], visible, visible)


def most_similar_past_frames(distances: np.ndarray, k: int) -> np.ndarray:
    """(T, k) indices of each frame's k most similar earlier frames, nearest first.

    Only past frames are candidates (the mask stays causal); rows with fewer than k earlier
    frames, or with earlier frames that cannot be aligned, are padded with -1.
    """
    frames = distances.shape[0]
    chosen = np.full((frames, k), -1, np.int64)
    for t in range(1, frames):
        past = distances[t, :t]
        order = np.argsort(past, kind="stable")[:k]
        order = order[np.isfinite(past[order])]
        chosen[t, : len(order)] = order
    return chosen
