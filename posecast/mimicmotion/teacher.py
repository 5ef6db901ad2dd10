"""The MimicMotion teacher behind posecast's teacher interface (families.LoadedTeacher): what
`posecast teacher`, `bench teacher` and distillation ask of any family's teacher."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path

import torch

from posecast.errors import UsageError
from posecast.mimicmotion.model import load_teacher, read_config
from posecast.pose.keypoints import Keypoints

SAMPLE_STRIDE = 2  # driving frames per sampled frame at up to 47 fps (Tencent's test.yaml)


def load_family_teacher(folder: Path, device: torch.device) -> MimicMotionFamilyTeacher:
    """A MimicMotion teacher folder, bf16 on CUDA (fp32 elsewhere), with the attention it was
    fine-tuned with (input-aware, if so)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    teacher = MimicMotionFamilyTeacher(load_teacher(folder, device, dtype))
    attention = read_config(folder).get("attention") or {}
    if attention.get("mode") == "input_aware":  # fine-tuned with it: samples with it
        teacher.set_attention("input_aware", attention.get("k_frames"), attention.get("levels"))
    return teacher


@dataclass
class MimicMotionFamilyTeacher:
    teacher: object  # posecast.mimicmotion.model.MimicMotionTeacher
    attention: object | None = None  # posecast.mimicmotion.attention.InputAwareUNet

    size_multiple = 64  # the VAE's 8× and the UNet's three 2× downsamplings
    alignment = "whole-video"  # as Tencent's preprocessing fits driving poses

    def set_attention(self, mode: str, k_frames: int | None,
                      levels: tuple[int, ...] | None = None) -> None:
        from posecast.mimicmotion.attention import InputAwareSettings, InputAwareUNet

        if mode == "dense":
            self.attention = None  # its processors attend per frame outside a window
        else:
            given = {"k_frames": k_frames, "levels": None if levels is None else tuple(levels)}
            settings = InputAwareSettings(**{k: v for k, v in given.items() if v is not None})
            self.attention = InputAwareUNet(self.teacher.network, settings)

    recipe = property(attrgetter("teacher.recipe"))
    height = property(attrgetter("recipe.height"))
    width = property(attrgetter("recipe.width"))
    default_steps = property(attrgetter("recipe.steps"))
    default_cfg = property(attrgetter("recipe.max_guidance"))

    def resize(self, height: int, width: int) -> None:
        self.teacher.recipe = self.recipe.replace(height=height, width=width)

    def orient(self, height: int, width: int) -> None:
        """Upright for a portrait taller than wide, lying otherwise (square included), as
        Tencent's inference picks 576×1024 or 1024×576 per reference image; the sides are the
        recipe's."""
        long, short = max(self.height, self.width), min(self.height, self.width)
        self.resize(*((long, short) if height > width else (short, long)))

    def frame_rate(self, driving_fps: float) -> float:
        """Every 2nd frame, and every 4th from 48 fps (Tencent's sample_stride 2 times
        max(1, int(fps / 24))): about 15 fps, the motion per frame MimicMotion was trained
        on (a 30 fps video gives 15, 25 fps gives 12.5)."""
        return driving_fps / (SAMPLE_STRIDE * max(1, int(driving_fps / 24)))

    def configure(self, changes: dict[str, str]) -> None:
        fields = {f.name: f.type for f in dataclasses.fields(self.recipe)
                  if f.name not in ("height", "width", "steps")}  # those have own options
        values = {}
        for key, text in changes.items():
            if key not in fields:
                raise UsageError(f"--recipe {key}: not a sampling setting; choose one of "
                                 f"{', '.join(fields)} (size and steps have their own options)")
            try:
                values[key] = (int if fields[key] in (int, "int") else float)(text)
            except ValueError:
                raise UsageError(f"--recipe {key}={text}: not a number") from None
        recipe = self.recipe.replace(**values)
        if recipe.window < 2 or not 0 <= recipe.overlap < recipe.window - 1:
            raise UsageError(f"--recipe: window {recipe.window} and overlap {recipe.overlap} "
                             "need window ≥ 2 and 0 ≤ overlap ≤ window − 2")
        self.teacher.recipe = recipe

    def memory_hint(self) -> str:
        split = "" if self.recipe.split_guidance else \
            "run the guidance's halves apart (--recipe split_guidance=1), "
        return (f"{split}lower --size (now {self.width}x{self.height}) or the window (--recipe "
                f"window=16, now {self.recipe.window} frames)")

    def model_calls(self, frames: int, steps: int, cfg: float) -> int:
        from posecast.mimicmotion.sampling import window_indices

        windows = window_indices(frames + 1, self.recipe.window, self.recipe.overlap)
        return steps * len(windows)  # CFG's branches run as one batch

    def frames(self, portrait, poses, portrait_keypoints, steps, cfg, seed, on_evaluation=None):
        """The reference's own pose leads as frame 0 (as MimicMotion was trained), and its
        output frame is dropped after decoding, as Tencent's pipeline does: the temporal VAE
        decodes chunks of recipe.decode_chunk frames counted from frame 0, so every chunk
        holds the neighbours it holds there."""
        from posecast.mimicmotion.sampling import decode_frames, sample_latents
        from posecast.pose.dwpose import draw_dwpose
        from posecast.pose.framing import crop_resize, fit_box, fit_keypoints

        recipe = self.recipe.replace(steps=steps)
        if cfg != self.default_cfg:  # --cfg: one guidance for every frame
            recipe = recipe.replace(min_guidance=cfg, max_guidance=cfg)
        box = fit_box(portrait.shape[1], portrait.shape[0], recipe.width, recipe.height)
        led = Keypoints.concatenate([portrait_keypoints, poses])
        fitted = fit_keypoints(led, box)
        maps = draw_dwpose(fitted, recipe.height, recipe.width)
        maps = torch.from_numpy(maps).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        latents = sample_latents(self.teacher, crop_resize(portrait, box), maps,
                                 torch.Generator().manual_seed(seed), recipe=recipe,
                                 on_evaluation=on_evaluation, attention=self.attention,
                                 poses=fitted)
        frames = decode_frames(self.teacher, latents)
        next(frames)  # the reference's own frame
        yield from frames
