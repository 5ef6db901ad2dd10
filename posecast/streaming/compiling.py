"""Compiling a streaming student's network (either family): when `render` does it by default,
how, and the one-line warning when it fails (rendering then goes on eagerly)."""

from __future__ import annotations

import torch


def compiles_by_default(attention: str, backend: str, device: torch.device) -> bool:
    """Whether `render` (and `bench render`, timing what render does) compiles a student's
    chunk step when neither --compile nor --no-compile is given, in either family: on CUDA,
    when it compiles to fixed graphs, with dense attention or input-aware with flex
    (gather's and xformers' per-group host plans would recompile chunk after chunk)."""
    from posecast.attention.backends import resolve_backend

    return device.type == "cuda" and \
        (attention != "input_aware" or resolve_backend(backend, device) == "flex")


def compile_student(model: torch.nn.Module):
    """The model's forward compiled whole (fullgraph: no graph breaks) for fixed shapes; on
    CUDA captured as CUDA graphs (mode "reduce-overhead"), so a steady chunk step is a few
    graph replays with no host work inside."""
    mode = "reduce-overhead" if next(model.parameters()).is_cuda else None
    return torch.compile(model, fullgraph=True, dynamic=False, mode=mode)


def compile_failure(error: Exception) -> str:
    """The one-line warning when compiling a student fails (either family then renders
    eagerly)."""
    first_line = (str(error).strip().splitlines() or [""])[0][:200]
    return (f"warning: compiling the student failed ({type(error).__name__}: {first_line}); "
            "rendering uncompiled (--no-compile skips the attempt)")
