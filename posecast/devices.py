"""Which torch device a command or a Pipeline runs on ("auto", "cpu", "cuda[:N]")."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from posecast.errors import UsageError

if TYPE_CHECKING:
    import torch


def pick_device(name: str) -> torch.device:
    import torch  # here, not at the top: `--help` and completion must not wait for torch

    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine (torch "
                             f"{torch.__version__}); use --device cpu or install a CUDA build")
        device = torch.device(name)
    elif name == "cpu":
        device = torch.device("cpu")
    else:
        raise UsageError(f"--device {name}: use auto, cpu or cuda[:N]")
    logging.getLogger(__name__).info(
        "device %s: %s (torch %s, %s)", name, device, torch.__version__,
        torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"{torch.get_num_threads()} CPU threads")
    return device


def autocast(device: torch.device):
    """bf16 autocast on CUDA, nothing elsewhere (the CPU runs fp32)."""
    import torch

    return torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda")
