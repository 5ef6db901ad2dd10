"""`posecast import mimicmotion`: MimicMotion's public checkpoint and SVD's components → a
posecast model folder (safetensors only) that works offline afterwards.

The checkpoint (`MimicMotion_1-1.pth`, 3.05 GB) is a torch pickle of an fp16 state dict with
keys unet.* (SVD's UNet under diffusers' names) and pose_net.*; it is read once here with
`torch.load(weights_only=True)`, which refuses any pickle that would run code. It holds no VAE
or CLIP weights: those, the UNet's config, CLIP's preprocessing and the scheduler come from
SVD img2vid-xt-1-1 (a gated repo: accept its licence on the Hub and set HF_TOKEN).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from posecast.errors import InputError
from posecast.hub import resolve_file, resolve_folder
from posecast.json_files import load_json_object
from posecast.mimicmotion.model import COMPONENTS, FAMILY, MimicMotion, Recipe, missing_component
from posecast.ownership import require_new_folder
from posecast.paths import atomic_folder
from posecast.weights import load_torch_pickle

DEFAULT_SVD = "stabilityai/stable-video-diffusion-img2vid-xt-1-1"
DEFAULT_CHECKPOINT = "tencent/MimicMotion:MimicMotion_1-1.pth"
# what an SVD snapshot needs to hold for the import (fp16 weights where the repo has them)
SVD_FILES = ["unet/config.json", "vae/config.json", "vae/*.fp16.safetensors",
             "image_encoder/config.json", "image_encoder/*.fp16.safetensors",
             "feature_extractor/*", "scheduler/*"]
LICENCES = (
    "MimicMotion's weights (tencent/MimicMotion) are licensed for academic, research and "
    "education use only; read the licence on its Hub page before any other use.\n"
    "Stable Video Diffusion 1.1 (stabilityai/stable-video-diffusion-img2vid-xt-1-1) is under "
    "Stability AI's own licence; its Hub repo is gated: accept the licence there.\n"
    "posecast (Apache-2.0) ships neither; this folder holds copies converted on your machine.")


def check_state(state: dict[str, torch.Tensor], unet_config: dict, path: Path) -> None:
    """Every key and shape of MimicMotion (the UNet of `unet_config` + PoseNet), none more."""
    with torch.device("meta"):
        expected = {key: tuple(value.shape) for key, value in
                    MimicMotion(unet_config).state_dict().items()}
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise InputError(f"{path}: '{unexpected[0]}' is neither in SVD's UNet nor in the pose "
                         f"network ({len(unexpected)} such keys); is it a MimicMotion "
                         "checkpoint for this SVD model?")
    missing = sorted(set(expected) - set(state))
    if missing:
        raise InputError(f"{path}: lacks '{missing[0]}' ({len(missing)} keys missing); is it a "
                         "whole MimicMotion checkpoint?")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise InputError(f"{path}: '{key}' has shape {tuple(state[key].shape)} where the "
                             f"UNet config wants {shape}")


def _copy_component(source: Path, target: Path, name: str) -> None:
    """Re-save a weighted component in safetensors (its fp16 variant where the repo has one)
    or copy a config-only one."""
    if name == "vae":
        from diffusers import AutoencoderKLTemporalDecoder as loader
    elif name == "image_encoder":
        from transformers import CLIPVisionModelWithProjection as loader
    else:
        shutil.copytree(source / name, target / name)
        return
    variant = "fp16" if any((source / name).glob("*.fp16.safetensors")) else None
    try:
        model = loader.from_pretrained(source / name, variant=variant)
    except (OSError, ValueError) as error:
        raise InputError(f"{source / name}: unreadable SVD component ({error})") from None
    model.save_pretrained(target / name, safe_serialization=True)


def model_card(svd: str, checkpoint: str, revision: str | None) -> str:
    return (f"# MimicMotion teacher (posecast model folder)\n\n"
            f"Imported by `posecast import mimicmotion` from `{checkpoint}` and the SVD "
            f"components of `{svd}`" + (f" (revision {revision})" if revision else "") + ".\n"
            "Family `mimicmotion`: SVD's spatio-temporal UNet with MimicMotion's pose network; "
            "sampling recipe in config.json.\n\n## Licences\n\n" + LICENCES + "\n")


def import_mimicmotion(out: str | os.PathLike, svd: str = DEFAULT_SVD,
                       checkpoint: str = DEFAULT_CHECKPOINT, revision: str | None = None,
                       overwrite: bool = False,
                       on_message: Callable[[str], None] | None = None) -> Path:
    """Write the model folder `out`; it appears whole or not at all."""
    say = on_message or (lambda text: None)
    out = Path(out)
    require_new_folder(out, overwrite, "MimicMotion model folder", ("config.json",))
    say("fetching SVD's components (config, VAE, CLIP image encoder, scheduler)")
    svd_folder = resolve_folder(svd, revision, allow_patterns=SVD_FILES, kind="SVD model")
    missing = missing_component(svd_folder)
    if missing is None and not (svd_folder / "unet" / "config.json").is_file():
        missing = "unet/config.json"
    if missing:
        raise InputError(f"{svd}: the SVD model lacks {missing}; give {DEFAULT_SVD} or a folder "
                         "laid out like it (unet/config.json, vae/, image_encoder/, "
                         "feature_extractor/, scheduler/)")
    unet_config = load_json_object(svd_folder / "unet" / "config.json")
    say("fetching the MimicMotion checkpoint")
    path = resolve_file(checkpoint, None if Path(checkpoint).is_file() else revision,
                        kind="MimicMotion checkpoint")
    state = load_torch_pickle(path)
    check_state(state, unet_config, path)
    say(f"converting {len(state)} tensors to safetensors")
    with atomic_folder(out, "import") as staging:
        from safetensors.torch import save_file

        save_file({key: value.contiguous() for key, value in state.items()},
                  staging / "model.safetensors", metadata={"format": "pt"})
        del state
        for name in COMPONENTS:
            _copy_component(svd_folder, staging, name)
        config = {"family": FAMILY, "unet": unet_config,
                  "recipe": dataclasses.asdict(Recipe()),
                  "sources": {"svd": svd, "checkpoint": checkpoint, "revision": revision}}
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (staging / "README.md").write_text(model_card(svd, checkpoint, revision))
    return out
