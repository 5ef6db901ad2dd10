"""EDM (Karras et al. 2022), as Stable Video Diffusion and so MimicMotion use it.

x_σ = x_0 + σ·ε; the network F sees c_in·x_σ at time c_noise, and the clean prediction is
D(x_σ) = c_skip·x_σ + c_out·F (SVD's v-prediction: c_out = −σ/√(σ² + 1)). Noise levels are
spaced on Karras' ρ-scale: uniform steps in σ^(1/ρ), ρ = 7.
"""

from __future__ import annotations

import numpy as np
import torch

RHO = 7.0


def edm_scalings(sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(c_in, c_skip, c_out, c_noise) at noise level σ: the network sees c_in·x at time
    c_noise, and D(x) = c_skip·x + c_out·F is the clean prediction SVD's sampler steps with."""
    return (1 / (sigma**2 + 1).sqrt(), 1 / (sigma**2 + 1), -sigma / (sigma**2 + 1).sqrt(),
            0.25 * sigma.log())


def karras_interpolate(t, start: float, end: float, rho: float = RHO):
    """The level a fraction t ∈ [0, 1] of the way from σ `start` to σ `end` on Karras'
    ρ-scale: (start^(1/ρ) + t·(end^(1/ρ) − start^(1/ρ)))^ρ. t: a number, an array or a
    tensor (the result is of its kind)."""
    first, last = start ** (1 / rho), end ** (1 / rho)
    return (first + t * (last - first)) ** rho


def karras_levels(start: float, end: float, count: int, rho: float = RHO) -> list[float]:
    """`count` levels from σ `start` to σ `end`, both included, evenly on Karras' ρ-scale."""
    return karras_interpolate(np.linspace(0.0, 1.0, count), start, end, rho).tolist()
