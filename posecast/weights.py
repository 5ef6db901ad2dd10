"""Weights in. Torch pickles are read only by the explicit import steps, and safely
(`load_torch_pickle`); loaded weights are checked before a model uses them: floating point
where the model is, and finite. `load_state_dict` casts any dtype silently and NaN weights
render an all-black video, so without this a damaged file "works" and exits 0.

The check runs on the tensors where they were loaded (on the GPU when loaded there): one
`isfinite` pass per tensor, queued without a host sync, and one sync at the end.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from posecast.errors import InputError


def check_state(state: Mapping[str, torch.Tensor], source: str | os.PathLike,
                expected: Mapping[str, torch.Tensor] | None = None) -> None:
    """Raise one line naming `source` and the first bad tensor of `state`: an integer or bool
    tensor where `expected` (the model's own state dict) holds a floating one (every tensor
    must float without `expected`), or a floating tensor with NaN or ±inf."""
    for name, tensor in state.items():
        reference = expected.get(name) if expected is not None else None
        must_float = reference is None or reference.is_floating_point()
        if must_float and not tensor.is_floating_point():
            dtype = str(tensor.dtype).removeprefix("torch.")
            raise InputError(f"{source}: tensor '{name}' is {dtype}, where the model needs "
                             "floating point; the weights file is damaged or not for this model")
    floating = [(name, tensor) for name, tensor in state.items() if tensor.is_floating_point()
                and tensor.numel()]
    if not floating:
        return
    # per device, one flag per tensor on that device, read back once
    for device in {tensor.device for _, tensor in floating}:
        named = [(name, tensor) for name, tensor in floating if tensor.device == device]
        finite = torch.stack([torch.isfinite(tensor).all() for _, tensor in named]).cpu()
        if not bool(finite.all()):
            name = named[int((~finite).nonzero()[0])][0]
            raise InputError(f"{source}: tensor '{name}' holds NaN or infinite values; the "
                             "weights file is damaged (or saved from a diverged training); "
                             "use another copy")


def first_non_finite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or ±inf, or None (a check
    before saving: a diverged training writes nothing)."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return name
    return None


def check_module(module: nn.Module, source: str | os.PathLike) -> None:
    """`check_state` for a module loaded by another library (diffusers, transformers):
    its parameters and floating buffers must be finite."""
    check_state(dict(module.state_dict()), source, expected=dict(module.state_dict()))


def load_torch_pickle(path: Path) -> dict[str, torch.Tensor]:
    """A plain tensor state dict from a torch pickle, or a one-line error (nothing executed:
    weights_only=True refuses globals other than tensors and containers)."""
    try:
        # memory-mapped where the file is torch.save's zip format (the 3 GB real one is)
        state = torch.load(path, map_location="cpu", weights_only=True,
                           mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        reason = (str(error).strip().splitlines() or ["refused"])[0][:160]
        raise InputError(f"{path}: not a plain tensor state dict; refused without running it "
                         f"({reason})") from None
    except Exception as error:  # garbage (a text file, a cut download) makes torch.load raise
        # whatever its parser trips on: KeyError, IndexError, struct.error, EOFError, …
        raise InputError(f"{path}: unreadable checkpoint ({type(error).__name__}); download it "
                         "again") from None
    if not isinstance(state, dict) or not all(
            isinstance(key, str) and isinstance(value, torch.Tensor)
            for key, value in state.items()):
        raise InputError(f"{path}: not a plain tensor state dict (names → tensors)")
    return state


def check_safetensors_header(path: Path) -> None:
    """A one-line error for weights that are not safetensors (cut short, overwritten): reading
    the header alone is cheap, and a model that cannot load must not be exported."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as weights:
            weights.keys()
    except Exception as error:  # SafetensorError, OSError: the file is not usable
        raise InputError(f"{path}: not a readable safetensors file ({error}); the model "
                         "cannot load, so it is not exported") from None
