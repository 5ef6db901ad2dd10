"""Which torch device a command or a Pipeline runs on ("auto", "cpu", "cuda[:N]")."""

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


def autocast(device: torch.device):
    """bf16 autocast on CUDA, nothing elsewhere (the CPU runs fp32)."""
    import torch

    return torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda")
