"""The input-aware region loss: where the keypoints say the face, lips, hands and arms are,
errors count more.

m_r is region r's pixel mask from the frame's keypoints (pose/regions.py, kept as REGION_BITS:
lips are the hull of the face mesh's lip landmarks), α_r its weight. Two uses:
- the weight map w = 1 + α_face·m_face + α_lips·m_lips + α_hands·m_hands + α_arms·m_arms
  scales the DMD gradient per latent pixel (and the teacher's loss, dit/train.py);
- the reconstruction loss on decoded frames against the real clip is the whole frame's error
  plus α_r times each region's own mean error (L1 + λ_ssim·(1 − SSIM)), plus an optional
  edge term on the steps between neighbouring pixels (see `edge_error`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from posecast.pose.keypoints import Keypoints
from posecast.pose.regions import REGION_BITS, region_bits


@dataclass(frozen=True)
class RegionWeights:
    """α per region (0 turns a region off); defaults favour the hands and the mouth, where
    the paper's teacher and student fail first."""

    face: float = 1.0
    lips: float = 1.0
    hands: float = 2.0
    arms: float = 0.5


def batch_region_bits(poses: list[Keypoints], height: int, width: int) -> torch.Tensor:
    """(B, T, height, width) uint8 REGION_BITS for a batch of windows."""
    return torch.stack([torch.from_numpy(region_bits(window, height, width)) for window in poses])


def weights_from_bits(bits: torch.Tensor, alphas: RegionWeights) -> torch.Tensor:
    """Region bits (..., H, W) uint8 → weights 1 + Σ α_r·m_r, (..., 1, H, W) float32."""
    weights = torch.ones(bits.shape, dtype=torch.float32, device=bits.device)
    for name, bit in REGION_BITS.items():
        alpha = getattr(alphas, name)
        if alpha:
            weights += alpha * (bits & bit).bool()
    return weights.unsqueeze(-3)


def to_latent_grid(weights: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """Pixel weights (B, T, 1, H, W) → (B, T, 1, h, w), averaged over each latent pixel's
    footprint (identity for the pixel codec)."""
    if weights.shape[-2:] == latent_size:
        return weights
    pooled = F.adaptive_avg_pool2d(weights.flatten(0, 1), latent_size)
    return pooled.unflatten(0, weights.shape[:2])


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x**2 / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # (1, 1, size, size)


def ssim_map(x: torch.Tensor, y: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Per-pixel SSIM of images (N, 3, H, W) in [-1, 1] (data range 2), averaged over
    channels: (N, 1, H, W). Gaussian window (σ 1.5), edges reflected."""
    channels = x.shape[1]
    kernel = _gaussian_window(min(window, x.shape[-1], x.shape[-2]) // 2 * 2 + 1)
    kernel = kernel.to(x).expand(channels, 1, -1, -1)
    pad = kernel.shape[-1] // 2

    def blur(image):
        return F.conv2d(F.pad(image, (pad,) * 4, mode="reflect"), kernel, groups=channels)

    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    covariance = blur(x * y) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * covariance + c2)) / \
        ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim.mean(1, keepdim=True)


def edge_error(frames: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean |∇frames − ∇target| over every pair of horizontally or vertically neighbouring
    pixels of images (N, 3, H, W). The per-pixel error does not care whether two neighbours
    err alike or apart; this term does, so it charges the steps a patch-wise head draws at
    its patch borders (a grid) where the real frame has none."""
    def steps(image):
        return image.diff(dim=-1), image.diff(dim=-2)  # (N, 3, H, W − 1), (N, 3, H − 1, W)

    (out_x, out_y), (real_x, real_y) = steps(frames), steps(target)
    return ((out_x - real_x).abs().mean() + (out_y - real_y).abs().mean()) / 2


def region_reconstruction_loss(frames: torch.Tensor, target: torch.Tensor, bits: torch.Tensor,
                               alphas: RegionWeights, ssim_weight: float = 0.5,
                               edge_weight: float = 0.0) -> torch.Tensor:
    """METHOD.md's Σ_r λ_r·L_r on frames (N, 3, H, W) against the real ones: the error
    e = L1 + ssim_weight·(1 − SSIM) per pixel, as a mean over the whole frame plus α_r times
    its mean inside each region r (bits (N, H, W), REGION_BITS) that the batch shows. Each
    region is its own mean, so the lips (about 20 of 4,096 pixels at 64×64) count as much as
    α_lips says, not as little as their area. With edge_weight, + edge_weight·`edge_error` over
    the whole frame. 0 for a perfect match."""
    error = (frames - target).abs().mean(1, keepdim=True)  # (N, 1, H, W)
    if ssim_weight:
        error = error + ssim_weight * (1 - ssim_map(frames, target))
    loss = error.mean()
    bits = bits.to(frames.device).unsqueeze(1)  # (N, 1, H, W)
    for name, bit in REGION_BITS.items():
        alpha = getattr(alphas, name)
        inside = (bits & bit).bool()
        if alpha and inside.any():
            loss = loss + alpha * error[inside].mean()
    if edge_weight:
        loss = loss + edge_weight * edge_error(frames, target)
    return loss
