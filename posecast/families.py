"""Model families: one object per architecture, holding what the commands need of it, so the
commands take a family instead of branching on the architecture.

  dit          posecast's own DiT with flow matching (posecast/models/): teacher, training,
               distillation into the causal student, rendering
  mimicmotion  SVD's UNet with MimicMotion's pose network (posecast/mimicmotion/): imported
               from public weights, sampled by `teacher`, fine-tuned by `train`; its causal
               few-step student (a folder whose config.json holds "student"), made by
               `distill`, streams in `render`

A model folder names its family in config.json ("family"; none means dit).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from posecast.errors import UsageError
from posecast.json_files import load_json_object
from posecast.model_folder import family_of
from posecast.pose.keypoints import Keypoints


class LoadedTeacher(Protocol):
    """A teacher on a device, ready to sample (what `posecast teacher` uses)."""

    height: int
    width: int
    size_multiple: int  # frame sides must be multiples of this
    default_steps: int
    default_cfg: float

    def resize(self, height: int, width: int) -> None: ...

    def set_attention(self, mode: str, k_frames: int | None) -> None:
        """"dense" or "input_aware" (with K past frames, or the model's K)."""
        ...

    def configure(self, changes: dict[str, str]) -> None:
        """Sampling settings by name (--recipe KEY=VALUE)."""
        ...

    def memory_hint(self) -> str:
        """What to lower when a GPU runs out of memory."""
        ...

    def model_calls(self, frames: int, steps: int, cfg: float) -> int: ...

    def frames(self, portrait: np.ndarray, poses: Keypoints, portrait_keypoints: Keypoints,
               steps: int, cfg: float, seed: int,
               on_evaluation: Callable[[], None] | None = None) -> Iterator[np.ndarray]:
        """(H, W, 3) uint8 frames, one per pose: `portrait` (H₀, W₀, 3) uint8 and the poses
        and its keypoints in its own pixels (each family fits them to its frame)."""
        ...


@dataclass
class DitTeacher:
    network: object  # posecast.models.denoiser.Denoiser
    device: torch.device

    @property
    def config(self):
        return self.network.config

    @property
    def height(self) -> int:
        return self.config.height

    @property
    def width(self) -> int:
        return self.config.width

    @property
    def size_multiple(self) -> int:
        return self.config.codec.downsample * self.config.patch_size

    @property
    def default_steps(self) -> int:
        return self.config.sampler.steps

    @property
    def default_cfg(self) -> float:
        return self.config.sampler.cfg

    def resize(self, height: int, width: int) -> None:
        self.network.config = self.config.replace(height=height, width=width)

    def set_attention(self, mode: str, k_frames: int | None) -> None:
        self.network.config = self.config.replace(
            attention=mode, k_frames=self.config.k_frames if k_frames is None else k_frames)

    def configure(self, changes: dict[str, str]) -> None:
        if changes:
            raise UsageError("--recipe sets the sampling of MimicMotion models; for posecast's "
                             "own use --steps, --cfg and --size")

    def memory_hint(self) -> str:
        return f"lower --size (now {self.width}x{self.height})"

    def model_calls(self, frames: int, steps: int, cfg: float) -> int:
        from posecast.generate import model_evaluations

        config = self.config
        return model_evaluations(frames, steps, cfg, config.sampler.method, config.window,
                                 config.overlap)

    def frames(self, portrait, poses, portrait_keypoints, steps, cfg, seed, on_evaluation=None):
        from posecast.generate import decode_frames, prepare_conditions, sample_latents
        from posecast.models.codecs import make_codec

        config = self.config
        conditions = prepare_conditions(portrait, poses, config.height, config.width,
                                        portrait_keypoints)
        codec = make_codec(config.codec, self.device)
        latents = sample_latents(self.network, codec, conditions, steps, cfg, seed,
                                 config.sampler.method, on_evaluation=on_evaluation)
        yield from decode_frames(codec, latents)


def load_teacher(model: str, device: torch.device, revision: str | None = None) -> LoadedTeacher:
    """A teacher of any family from a model folder or Hub repo id (at `revision`)."""
    from posecast.hub import resolve_folder

    folder = resolve_folder(model, revision)
    family = family_of(folder)
    if family == "mimicmotion":
        from posecast.mimicmotion.student import is_student_folder
        from posecast.mimicmotion.teacher import load_family_teacher

        if is_student_folder(folder):
            raise UsageError(f"{model}: a causal MimicMotion student, not a teacher; render it "
                             "with `posecast render --model`, or give the teacher it came from")
        return load_family_teacher(folder, device)
    if family != "dit":
        raise UsageError(f"{model}: unknown model family '{family}' (known: dit, mimicmotion)")
    from posecast.models.pretrained import from_pretrained

    return DitTeacher(from_pretrained(folder, device=device), device)


def load_renderer(model: str, device: torch.device, size: tuple[int, int] | None = None,
                  steps: int | None = None, compile: bool | None = None,
                  on_warning: Callable[[str], None] | None = None,
                  revision: str | None = None):
    """A student of any family, loaded to render (a posecast.render.Renderer)."""
    from posecast.hub import resolve_folder
    from posecast.render import Renderer

    folder = resolve_folder(model, revision)
    family = family_of(folder)
    if family == "mimicmotion":
        from posecast.mimicmotion.student import load_student

        student = load_student(folder, device, size=size, steps=steps)
    elif family == "dit":
        from posecast.student import load_student

        student = load_student(model, device, size, steps, revision)
    else:
        raise UsageError(f"{model}: unknown model family '{family}' (known: dit, mimicmotion)")
    return Renderer(student, str(model), compile, on_warning)


def size_multiple(model: str, revision: str | None = None) -> int:
    """What a model's frame sides must be multiples of (for --size)."""
    from posecast.hub import resolve_folder

    folder = resolve_folder(model, revision)
    if family_of(folder) == "mimicmotion":
        from posecast.mimicmotion.teacher import MimicMotionFamilyTeacher

        return MimicMotionFamilyTeacher.size_multiple
    from posecast.models.pretrained import load_config

    config = load_config(str(folder))
    return config.codec.downsample * config.patch_size


def training_family(init_from: str | None, out, resume: bool,
                    revision: str | None = None) -> str:
    """The family `posecast train` trains: the one of --init-from, or, resuming, the one the
    run was started with (a MimicMotion run's checkpoint names its initial folder)."""
    from posecast.hub import resolve_folder

    if init_from is not None:
        return family_of(resolve_folder(init_from, revision))
    state = out / "checkpoint" / "state.json"
    try:
        return "mimicmotion" if resume and "init_from" in load_json_object(state) \
            else "dit"
    except (OSError, ValueError):
        return "dit"
