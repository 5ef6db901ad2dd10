"""Rectified flow, end to end.

x_t = (1 − t)·x_0 + t·ε with t ∈ [0, 1] (t = 1 is pure noise); the model predicts the velocity
v = ε − x_0, so dx/dt = v and sampling integrates from t = 1 down to t = 0. A timestep shift
s > 1 (SD3) spends more of the steps at high noise: t' = s·t / (1 + (s − 1)·t).

Every sampler has one signature: sampler(velocity, noise, timesteps) → x_0, where
velocity(x, t) returns v for a batch x at a scalar time t, and timesteps runs from 1 to 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Velocity = Callable[[torch.Tensor, float], torch.Tensor]


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * t / (1 + (shift - 1) * t)


def sampling_timesteps(steps: int, shift: float) -> torch.Tensor:
    """(steps + 1,) times from 1 to 0, shifted."""
    return shift_time(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift)


def add_noise(clean: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t for per-sample times t (B,)."""
    t = t.view(-1, *([1] * (clean.dim() - 1))).to(clean.dtype)
    return (1 - t) * clean + t * noise


def sample_training_times(batch: int, shift: float, generator: torch.Generator | None = None,
                          device: torch.device | str = "cpu") -> torch.Tensor:
    """Training times: logit-normal (SD3), then shifted like the sampler's."""
    normal = torch.randn(batch, generator=generator, device="cpu").to(device)
    return shift_time(torch.sigmoid(normal), shift)


def euler(velocity: Velocity, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    x = noise
    for t, t_next in zip(timesteps[:-1].tolist(), timesteps[1:].tolist(), strict=True):
        x = x + (t_next - t) * velocity(x, t)
    return x


def heun(velocity: Velocity, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Second order (Heun's method); the last step, which ends at t = 0, is an Euler step."""
    x = noise
    for t, t_next in zip(timesteps[:-1].tolist(), timesteps[1:].tolist(), strict=True):
        v = velocity(x, t)
        x_euler = x + (t_next - t) * v
        last = t_next <= 0
        x = x_euler if last else x + (t_next - t) * 0.5 * (v + velocity(x_euler, t_next))
    return x


SAMPLERS = {"euler": euler, "heun": heun}


def guided(velocity_fn: Callable[[torch.Tensor, float, bool], torch.Tensor],
           cfg: float) -> Velocity:
    """Classifier-free guidance over the pose + reference conditions.

    velocity_fn(x, t, conditional) runs the model with or without its conditions. With cfg = 1
    only the conditional pass runs; otherwise v = v_uncond + cfg·(v_cond − v_uncond).
    """
    if cfg == 1.0:
        return lambda x, t: velocity_fn(x, t, True)

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        conditional = velocity_fn(x, t, True)
        unconditional = velocity_fn(x, t, False)
        return unconditional + cfg * (conditional - unconditional)

    return velocity
