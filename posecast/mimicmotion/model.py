"""The MimicMotion network and its model folder.

A model folder of this family:
  config.json           {"family": "mimicmotion", "unet": SVD's UNet config, "recipe": …}
  model.safetensors     unet.* and pose_net.* (MimicMotion's own key names)
  vae/                  SVD's AutoencoderKLTemporalDecoder (diffusers layout, safetensors)
  image_encoder/        SVD's CLIPVisionModelWithProjection (transformers layout, safetensors)
  feature_extractor/    CLIP's preprocessor_config.json (its normalisation)
  scheduler/            SVD's EulerDiscreteScheduler config
  README.md             the model card, with the licences of MimicMotion and SVD
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from posecast.errors import ConfigError, InputError
from posecast.json_files import load_json_object
from posecast.mimicmotion.posenet import PoseNet
from posecast.validation import Rule, build, check_fields, number, whole
from posecast.weights import check_module, check_state

FAMILY = "mimicmotion"
COMPONENTS = {  # subfolder → a file it must hold
    "vae": "config.json", "image_encoder": "config.json",
    "feature_extractor": "preprocessor_config.json", "scheduler": "scheduler_config.json",
}


@dataclass(frozen=True)
class Recipe:
    """How the teacher samples (MimicMotion's shipped inference settings by default)."""

    height: int = 1024  # a 576×1024 portrait
    width: int = 576
    window: int = 72  # frames per window, the first being frame 0 (the reference's pose)
    overlap: int = 6  # frames shared by neighbouring windows
    steps: int = 25
    min_guidance: float = 2.0  # per-frame guidance ramps from min (frame 0) to max (last)
    max_guidance: float = 2.0
    fps: int = 7  # SVD's fps conditioning (the UNet sees fps − 1)
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.0  # noise added to the reference before the VAE encodes it
    decode_chunk: int = 8  # frames the temporal VAE decoder takes at a time
    # 1: the guidance's conditional and unconditional halves as two batch-1 calls, as
    # Tencent's inference runs them (about half the activations); 0: one batch of 2 (faster)
    split_guidance: int = 0

    def __post_init__(self) -> None:
        check_fields(vars(self), RECIPE_RULES)

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


RECIPE_RULES = {
    "height": whole(64, 4096), "width": whole(64, 4096), "window": whole(2, 1024),
    "overlap": whole(0, 1022), "steps": whole(1, 1000), "min_guidance": number(0, 100),
    "max_guidance": number(0, 100), "fps": whole(1, 240), "motion_bucket_id": whole(0, 1023),
    "noise_aug_strength": number(0, 10), "decode_chunk": whole(1, 1024),
    "split_guidance": whole(0, 1)}
# the UNet config's sizes (diffusers fills in what is absent); checked before it is built
UNET_RULES = {
    "in_channels": whole(1, 64), "out_channels": whole(1, 64), "num_frames": whole(1, 1024),
    "block_out_channels": Rule(tuple, 1, 4096, item=int, max_items=8),
    "layers_per_block": whole(1, 16), "cross_attention_dim": whole(1, 8192),
    "addition_time_embed_dim": whole(1, 8192),
    "projection_class_embeddings_input_dim": whole(1, 65536)}


class MimicMotion(nn.Module):
    """SVD's UNetSpatioTemporalConditionModel with MimicMotion's PoseNet: the pose features are
    added to the UNet's hidden state right after conv_in (a forward hook on conv_in, so the
    UNet stays diffusers' own)."""

    def __init__(self, unet_config: dict) -> None:
        super().__init__()
        from diffusers import UNetSpatioTemporalConditionModel

        self.unet = UNetSpatioTemporalConditionModel.from_config(unet_config)
        self.pose_net = PoseNet(self.unet.config.block_out_channels[0])
        self._pose_features: torch.Tensor | None = None
        self.unet.conv_in.register_forward_hook(self._add_pose_features)

    @property
    def blocks(self) -> list[nn.Module]:
        """The UNet's down, mid and up blocks: the units sharding and gradient checkpointing
        wrap (train/sharding.py, causal.recompute_blocks)."""
        unet = self.unet
        return [*unet.down_blocks, unet.mid_block, *unet.up_blocks]

    def _add_pose_features(self, module, inputs, output):
        return output if self._pose_features is None else output + self._pose_features

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float,
                image_embeddings: torch.Tensor, added_time_ids: torch.Tensor,
                pose_maps: torch.Tensor | None = None,
                pose_keep: torch.Tensor | None = None) -> torch.Tensor:
        """sample (B, T, 8, h, w): noisy latents ‖ reference latent on channels; image
        embeddings (B, 1, D); added_time_ids (B, 3); pose_maps (B, T, 3, H, W) in [-1, 1] or
        None (no pose); pose_keep (B,) bool: False drops the pose of that batch element (CFG's
        unconditional branch in the same batch). Returns the UNet's output (B, T, 4, h, w)."""
        if pose_maps is not None:
            batch, frames = pose_maps.shape[:2]
            features = self.pose_net(pose_maps.flatten(0, 1).to(sample.dtype))  # (B·T, C, h, w)
            if pose_keep is not None:
                keep = pose_keep.to(features.dtype).repeat_interleave(frames)
                features = features * keep[:, None, None, None]
            self._pose_features = features
        try:
            return self.unet(sample, timestep, encoder_hidden_states=image_embeddings,
                             added_time_ids=added_time_ids, return_dict=False)[0]
        finally:
            self._pose_features = None


@dataclass
class MimicMotionTeacher:
    """Everything the sampler needs, loaded from a model folder."""

    network: MimicMotion
    vae: Any  # diffusers.AutoencoderKLTemporalDecoder
    image_encoder: Any  # transformers.CLIPVisionModelWithProjection
    clip_mean: tuple[float, float, float]
    clip_std: tuple[float, float, float]
    scheduler_config: dict
    recipe: Recipe

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def scheduler(self):
        from diffusers import EulerDiscreteScheduler

        return EulerDiscreteScheduler.from_config(self.scheduler_config)


def read_config(folder: Path) -> dict:
    try:
        config = load_json_object(folder / "config.json")
    except (OSError, ValueError) as error:
        raise InputError(f"{folder}: unreadable config.json ({error})") from None
    if not isinstance(config, dict) or config.get("family") != FAMILY or "unet" not in config:
        raise InputError(f"{folder}: not a MimicMotion model folder (config.json needs "
                         f"family '{FAMILY}' and the UNet's config); make one with "
                         "`posecast import mimicmotion`")
    try:
        if not isinstance(config["unet"], dict):
            raise ConfigError("unet", "is not an object (the UNet's diffusers config)")
        check_fields(config["unet"], UNET_RULES, "unet.")
        build(Recipe, config.get("recipe", {}), "recipe.")
    except ConfigError as error:  # names the field, its value and what is allowed
        raise InputError(f"{folder / 'config.json'}: {error}") from None
    return config


def missing_component(folder: Path) -> str | None:
    """The first SVD component `folder` lacks (as 'subfolder/file'), or None."""
    for subfolder, required in COMPONENTS.items():
        if not (folder / subfolder / required).is_file():
            return f"{subfolder}/{required}"
    return None


def load_teacher(folder: str | os.PathLike, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> MimicMotionTeacher:
    """A MimicMotion model folder (made by `posecast import mimicmotion`), on `device`."""
    from diffusers import AutoencoderKLTemporalDecoder
    from safetensors.torch import load_file
    from transformers import CLIPVisionModelWithProjection

    folder = Path(folder)
    config = read_config(folder)
    missing = missing_component(folder)
    if missing:
        raise InputError(f"{folder}: the model folder lacks {missing}; import it again with "
                         "`posecast import mimicmotion`")
    network = MimicMotion(config["unet"])
    state = load_file(folder / "model.safetensors")
    check_state(state, folder / "model.safetensors", network.state_dict())
    network.load_state_dict(state)
    vae = AutoencoderKLTemporalDecoder.from_pretrained(folder / "vae")
    image_encoder = CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder")
    check_module(vae, folder / "vae")
    check_module(image_encoder, folder / "image_encoder")
    preprocessor = load_json_object(folder / "feature_extractor" / "preprocessor_config.json")
    scheduler = load_json_object(folder / "scheduler" / "scheduler_config.json")
    for module in (network, vae, image_encoder):
        module.to(device, dtype).eval().requires_grad_(False)
    return MimicMotionTeacher(network, vae, image_encoder,
                              tuple(preprocessor["image_mean"]), tuple(preprocessor["image_std"]),
                              scheduler, Recipe(**config.get("recipe", {})))
