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
         `posecast import lpips` makes it from the published weights: torchvision's VGG16
         (vgg16-397923af.pth, keys `features.<i>.weight|bias`; its classifier is not used)
         and LPIPS v0.1's linear heads (lpips/weights/v0.1/vgg.pth of the `lpips` package,
         keys `lin<j>.model.1.weight`, or `.model.0.` when saved without dropout).
A face-identity term (the paper's, on the face) has no plug-in yet.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from posecast.errors import InputError, PosecastError, UsageError
from posecast.hub import resolve_folder
from posecast.ownership import require_new_folder
from posecast.paths import atomic_folder
from posecast.pose.keypoints import Keypoints
from posecast.pose.regions import Region, region_masks
from posecast.weights import check_state

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
    """`source`: a folder, or a Hub repo id with an optional @REVISION."""
    repo, _, revision = source.partition("@")
    if not revision or Path(source).expanduser().exists():
        repo, revision = source, None
    folder = resolve_folder(repo, revision, allow_patterns=[LPIPS_FILE], kind="LPIPS weights")
    path = folder / LPIPS_FILE
    if not path.is_file():
        raise PosecastError(f"{source}: no {LPIPS_FILE} in that folder")
    network = LpipsNetwork()
    try:
        state = load_file(path)
        check_state(state, path, network.state_dict())
        network.load_state_dict(state)
    except (RuntimeError, OSError, SafetensorError) as error:
        raise PosecastError(f"{path}: not LPIPS VGG16 weights ({str(error).splitlines()[0]})"
                            ) from None
    return network.to(device).eval().requires_grad_(False)


PLUGINS = {"lpips": (_load_lpips, body_mask)}
LPIPS_CARD = """# LPIPS (VGG16) for posecast's perceptual plug-in

Converted by `posecast import lpips` from the published weights: torchvision's ImageNet VGG16
(features only; BSD-3-Clause code, weights trained on ImageNet) and LPIPS v0.1's linear heads
(Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR
2018; BSD-2-Clause). Their licences apply to this copy.

Use: `posecast distill … --perceptual lpips=THIS_FOLDER:WEIGHT`.
"""


def lpips_state_from_published(vgg: dict[str, torch.Tensor], lin: dict[str, torch.Tensor],
                               vgg_name: str = "the VGG16 weights",
                               lin_name: str = "the LPIPS weights") -> dict[str, torch.Tensor]:
    """torchvision's vgg16 state dict and LPIPS' linear layers → LpipsNetwork's state dict
    (float32), checking every key and shape; a one-line error names the first mismatch."""
    with torch.device("meta"):  # shapes only
        expected = LpipsNetwork().state_dict()
    unexpected = sorted(key for key in vgg if key.startswith("features.")
                        and key not in expected)
    if unexpected:
        raise InputError(f"{vgg_name}: '{unexpected[0]}' is not a convolution of VGG16; give "
                         "torchvision's vgg16 weights (not vgg16_bn or another network)")
    state = {}
    for key, target in expected.items():
        if key.startswith("features."):
            source, names = vgg, [key]
        else:  # heads.<j>.weight ← lin<j>.model.1.weight (after a dropout) or .model.0.
            tap = key.split(".")[1]
            source, names = lin, [f"lin{tap}.model.1.weight", f"lin{tap}.model.0.weight"]
        found = next((name for name in names if name in source), None)
        where = vgg_name if source is vgg else lin_name
        if found is None:
            raise InputError(f"{where}: lacks '{names[0]}'; is it "
                             + ("torchvision's vgg16?" if source is vgg
                                else "LPIPS v0.1's vgg.pth (its linear heads)?"))
        if source[found].shape != target.shape:
            raise InputError(f"{where}: '{found}' has shape {tuple(source[found].shape)} where "
                             f"LPIPS' VGG16 has {tuple(target.shape)}")
        state[key] = source[found].float().contiguous()
    return state


def import_lpips(vgg_path: str | os.PathLike, lin_path: str | os.PathLike,
                 out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the plug-in's folder `out` (LPIPS_FILE and a card) from the published .pth files,
    read with torch.load(weights_only=True); `out` appears whole or not at all."""
    from safetensors.torch import save_file

    from posecast.weights import load_torch_pickle

    out = Path(out)
    require_new_folder(out, overwrite, "LPIPS weights folder", (LPIPS_FILE,))
    state = lpips_state_from_published(load_torch_pickle(Path(vgg_path)),
                                       load_torch_pickle(Path(lin_path)), str(vgg_path),
                                       str(lin_path))
    with atomic_folder(out, "import") as staging:
        save_file(state, staging / LPIPS_FILE, metadata={"format": "pt"})
        (staging / "README.md").write_text(LPIPS_CARD)
    return out


def parse_term(spec: str) -> tuple[str, str, float]:
    """'name=source[:weight]' → (name, source, weight); weight defaults to 1; a Hub source
    may name its revision, owner/name@REVISION."""
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
