"""Parsing shared option values: devices and sizes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from posecast.errors import UsageError

if TYPE_CHECKING:
    import torch


def pick_device(name: str) -> torch.device:
    import torch  # here, not at the top: `--help` and completion must not wait for torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine (torch "
                             f"{torch.__version__}); use --device cpu or install a CUDA build")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise UsageError(f"--device {name}: use auto, cpu or cuda[:N]")


MAX_SIDE = 4096  # pixels; larger frames would not fit any GPU's memory at these models' sizes


def parse_size(text: str, multiple: int) -> tuple[int, int]:
    """'WxH' → (height, width), both positive multiples of `multiple`."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size {text}: write it as WIDTHxHEIGHT, e.g. 512x512") from None
    if max(width, height) > MAX_SIDE:
        raise UsageError(f"--size {text}: at most {MAX_SIDE} pixels a side")
    if width <= 0 or height <= 0 or width % multiple or height % multiple:
        raise UsageError(f"--size {text}: width and height must be positive multiples of "
                         f"{multiple} for this model")
    return height, width
