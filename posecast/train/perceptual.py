"""Optional perceptual terms of the region loss, as plug-ins with pretrained weights.

A term is named on the command line as `name=folder_or_repo[:weight]`; its weights are found
through hub.py (a local folder, the HF cache, or a download) and must be safetensors. When a
term cannot be loaded (offline, missing, wrong files) training goes on without it after a
one-line warning.

Plug-ins:
  lpips  LPIPS-style distance (VGG16 features, unit-normalised per channel, squared
         differences weighted by learned 1×1 heads) averaged over the hands, arms and body.
         The folder holds `lpips_vgg16.safetensors` with keys `features.<i>.weight|bias` for
         the 13 convolutions of VGG16 (torchvision numbering 0, 2, 5, …, 28) and
         `heads.<j>.weight` (1, C_j, 1, 1) for the five taps (relu1_2 … relu5_3).
A face-identity term (the paper's, on the face) has no plug-in yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from posecast.errors import PosecastError, UsageError
from posecast.hub import resolve_folder
from posecast.pose.keypoints import Keypoints
from posecast.pose.regions import Region, region_masks

VGG16_LAYOUT = (64, 64, "pool", 128, 128, "pool", 256, 256, 256, "pool", 512, 512, 512, "pool",
                512, 512, 512)
LPIPS_TAPS = (3, 8, 15, 22, 29)  # torchvision indices of relu1_2, relu2_2, relu3_3, …
LPIPS_FILE = "lpips_vgg16.safetensors"
# ImageNet statistics in [-1, 1] units (LPIPS' input scaling)
_SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
_SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)


class LpipsNetwork(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers, previous = [], 3
        for entry in VGG16_LAYOUT:
            if entry == "pool":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(previous, entry, 3, padding=1), nn.ReLU()]
                previous = entry
        self.features = nn.Sequential(*layers)
        tap_channels = (64, 128, 256, 512, 512)
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in tap_channels)

    def distance_map(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) in [-1, 1] → per-pixel distance (N, 1, H, W)."""
        size = x.shape[-2:]
        both = (torch.cat([x, y]) - _SHIFT.to(x)) / _SCALE.to(x)
        total = 0
        head = iter(self.heads)
        for index, layer in enumerate(self.features):
            both = layer(both)
            if index in LPIPS_TAPS:
                a, b = (f / (f.norm(dim=1, keepdim=True) + 1e-10) for f in both.chunk(2))
                total = total + F.interpolate(next(head)((a - b) ** 2), size=size,
                                              mode="bilinear", align_corners=False)
            if index == LPIPS_TAPS[-1]:
                break
        return total


def body_mask(poses: list[Keypoints], height: int, width: int) -> torch.Tensor:
    """(B·T, 1, H, W) float: hands, arms and body of every frame of every window."""
    masks = []
    for window in poses:
        for t in range(len(window)):
            regions = region_masks(window, t, height, width)
            masks.append(regions[Region.LEFT_HAND] | regions[Region.RIGHT_HAND]
                         | regions[Region.ARMS] | regions[Region.BODY])
    return torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))


@dataclass
class PerceptualTerm:
    name: str
    weight: float
    network: nn.Module
    mask: Callable[[list[Keypoints], int, int], torch.Tensor]

    def __call__(self, frames: torch.Tensor, target: torch.Tensor,
                 poses: list[Keypoints]) -> torch.Tensor:
        """Mean distance inside the term's regions (frames (N, 3, H, W) against target)."""
        mask = self.mask(poses, frames.shape[-2], frames.shape[-1]).to(frames)
        distance = self.network.distance_map(frames, target)
        return (distance * mask).sum() / mask.sum().clamp_min(1.0)


def _load_lpips(source: str, device: torch.device) -> nn.Module:
    folder = resolve_folder(source, allow_patterns=[LPIPS_FILE], kind="LPIPS weights")
    path = folder / LPIPS_FILE
    if not path.is_file():
        raise PosecastError(f"{source}: no {LPIPS_FILE} in that folder")
    network = LpipsNetwork()
    try:
        network.load_state_dict(load_file(path))
    except (RuntimeError, OSError, SafetensorError) as error:
        raise PosecastError(f"{path}: not LPIPS VGG16 weights ({str(error).splitlines()[0]})"
                            ) from None
    return network.to(device).eval().requires_grad_(False)


PLUGINS = {"lpips": (_load_lpips, body_mask)}


def parse_term(spec: str) -> tuple[str, str, float]:
    """'name=source[:weight]' → (name, source, weight); weight defaults to 1."""
    name, _, rest = spec.partition("=")
    if name not in PLUGINS or not rest:
        raise UsageError(f"perceptual term '{spec}': write name=folder_or_repo[:weight] with a "
                         f"name among {', '.join(PLUGINS)}")
    source, _, weight = rest.rpartition(":") if ":" in rest else (rest, "", "1")
    try:
        return name, source, float(weight)
    except ValueError:
        raise UsageError(f"perceptual term '{spec}': the weight must be a number") from None


def load_perceptual_terms(specs: tuple[str, ...], device: torch.device,
                          on_message: Callable[[str], None] | None = None
                          ) -> list[PerceptualTerm]:
    terms = []
    for spec in specs:
        name, source, weight = parse_term(spec)
        loader, mask = PLUGINS[name]
        try:
            terms.append(PerceptualTerm(name, weight, loader(source, device), mask))
        except PosecastError as error:
            if on_message is not None:
                on_message(f"warning: perceptual term {name} skipped: {error}")
    return terms
