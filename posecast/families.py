"""Model families: one `Family` object per architecture, holding everything the commands need
of it, so no command branches on an architecture.

A model folder names its family in config.json ("family"; none means "dit", as folders made
before families were named); every command that makes a folder writes it. The registry maps a
name to the module that defines the family's `FAMILY` (imported when first needed: MimicMotion's
pulls in diffusers); `register` adds a family defined elsewhere (the tests' toy family).

  dit          posecast's own DiT with flow matching (dit/)
  mimicmotion  SVD's UNet with MimicMotion's pose network (mimicmotion/family.py)

A new family is one folder with a module that defines `FAMILY` (see `Family` for what it
provides) and one line in `KNOWN`.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from posecast.errors import InputError, UsageError
from posecast.extras import EXTRAS, require_extra
from posecast.json_files import load_json_object
from posecast.model_folder import family_of
from posecast.pose.keypoints import Keypoints

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # annotations only
    from posecast.bench.render import RenderBenchParts
    from posecast.bench.teacher import TeacherBench
    from posecast.streaming.rollout import StudentBackend
    from posecast.train.distill import DistillConfig, StartRun

KNOWN = {"dit": "posecast.dit.family", "mimicmotion": "posecast.mimicmotion.family"}


class LoadedTeacher(Protocol):
    """A teacher on a device, ready to sample (what `posecast teacher` uses)."""

    height: int
    width: int
    size_multiple: int  # frame sides must be multiples of this
    alignment: str  # how driving poses meet the portrait by default: upper-body or whole-video
    default_steps: int
    default_cfg: float

    def resize(self, height: int, width: int) -> None: ...

    def orient(self, height: int, width: int) -> None:
        """Turn the frame to suit a portrait of `height` × `width` pixels (when no --size is
        given); a family whose frame has one orientation leaves it."""

    def frame_rate(self, driving_fps: float) -> float:
        """The rate driving poses at `driving_fps` are sampled at when --fps is not given
        (the rate the family was trained on)."""

    def set_attention(self, mode: str, k_frames: int | None) -> None:
        """"dense" or "input_aware" (with K past frames, or the model's K)."""

    def configure(self, changes: dict[str, str]) -> None:
        """Sampling settings by name (--recipe KEY=VALUE)."""

    def memory_hint(self) -> str:
        """What to lower when a GPU runs out of memory."""

    def model_calls(self, frames: int, steps: int, cfg: float) -> int: ...

    def frames(self, portrait: np.ndarray, poses: Keypoints, portrait_keypoints: Keypoints,
               steps: int, cfg: float, seed: int,
               on_evaluation: Callable[[], None] | None = None) -> Iterator[np.ndarray]:
        """(H, W, 3) uint8 frames, one per pose: `portrait` (H₀, W₀, 3) uint8 and the poses
        and its keypoints in its own pixels (each family fits them to its frame)."""


@dataclass(frozen=True)
class TrainingOptions:
    """`posecast train`'s options; a family reads those it has (see each one's --help)."""

    preset: str
    max_steps: int
    batch_size: int
    learning_rate: float | None  # None: the family's default
    checkpoint_every: int
    gradient_checkpointing: bool
    seed: int
    attention: str
    k_frames: int
    region_alphas: dict[str, float]
    fsdp: bool
    frames: int
    init_from: str | None = None  # as given (a folder or a repo id), for the model card
    init_revision: str | None = None


class Training(Protocol):
    """A family's training run, ready to start; its reports have .step and .loss."""

    task: str  # what the progress bar says ("training", "fine-tuning")
    memory_hint: str  # what to lower when a GPU runs out of memory
    result: str  # what the model folder holds, for the closing line

    def run(self, dataset: Path, out: Path, resume: bool, device: str,
            on_step: Callable | None, on_message: Callable[[str], None] | None) -> Path: ...


class Family(Protocol):
    """What a model family provides. Folders are resolved (Hub snapshots downloaded) first."""

    name: str
    licence: str  # the Hub licence id an exported model gets by default
    presets: tuple[str, ...]  # random-weight architectures `bench` can time

    def size_multiple(self, folder: Path) -> int:
        """What frame sides must be multiples of (for --size)."""

    def load_teacher(self, folder: Path, device: torch.device) -> LoadedTeacher:
        """A teacher to sample (`posecast teacher`); a one-line error for a student folder."""

    def load_student(self, folder: Path, device: torch.device, size: tuple[int, int] | None,
                     steps: int | None) -> StudentBackend:
        """A causal student to render (`posecast render`), at `size` (height, width) and with
        `steps` steps when given; a one-line error for a teacher folder."""

    def distillation(self, teacher: Path, settings: DistillConfig, resume: bool,
                     fast_decoder: Path | None) -> StartRun:
        """What the distillation loop starts (`posecast distill`), after checking the teacher
        and settings (one-line errors, before any output is touched)."""

    def model_files(self, folder: Path) -> list[str]:
        """The files a model is loaded from besides config.json and model.safetensors
        (relative paths), checked: a one-line error names the first one missing or damaged."""

    def training(self, init_from: Path | None, options: TrainingOptions) -> Training:
        """`posecast train`'s run for this family, from `init_from` (a folder of it) or from
        scratch, its settings checked (one-line errors, before any output is touched)."""

    def bench_teacher(self, preset: str, size: str | None, steps: int, cfg: float,
                      frames: list[int], attention: list[str], repeats: int,
                      fast_decode: bool, device: torch.device) -> TeacherBench:
        """`bench teacher`: random weights of `preset` at --size (WxH text), timed."""

    def bench_parts(self, folder: Path | None, teacher: Path | None, preset: str,
                    size: tuple[int, int] | None, steps: int | None, attention: str,
                    backend: str | None, device: torch.device) -> RenderBenchParts:
        """What `bench render` times: the student of `folder`, or random weights of `preset`
        (with `attention`), and its teacher (`teacher`, or the student's architecture)."""


_families: dict[str, Family] = {}


def register(family: Family) -> None:
    """Make a family defined outside `KNOWN` available by its name."""
    _families[family.name] = family


def family_named(name: str) -> Family:
    if name not in _families:
        if name not in KNOWN:
            known = ", ".join(sorted({*KNOWN, *_families}))
            raise InputError(f"unknown model family '{name}' (known: {known})")
        _families[name] = importlib.import_module(KNOWN[name]).FAMILY
    return _families[name]


def _with_packages(family: Family) -> Family:
    """`family`, or a one-line error naming the pip extra its packages come in."""
    if family.name in EXTRAS:
        require_extra(family.name)  # the family's extra has its name
    return family


def family_with_preset(preset: str) -> Family:
    """The family whose random-weight presets include `preset` (for `bench`)."""
    for name in sorted({*KNOWN, *_families}):
        if preset in family_named(name).presets:
            return _with_packages(family_named(name))
    every = ", ".join(p for name in sorted({*KNOWN, *_families})
                      for p in family_named(name).presets)
    raise UsageError(f"unknown preset '{preset}'; choose one of {every}")


def family_for(folder: str | Path) -> Family:
    """The family of a model folder (its config.json's "family"), its packages installed."""
    return _with_packages(family_named(family_of(folder)))


def load_teacher(model: str, device: torch.device, revision: str | None = None) -> LoadedTeacher:
    """A teacher of any family from a model folder or Hub repo id (at `revision`)."""
    from posecast.hub import resolve_folder

    folder = resolve_folder(model, revision)
    return family_for(folder).load_teacher(folder, device)


def load_renderer(model: str, device: torch.device, size: tuple[int, int] | None = None,
                  steps: int | None = None, compile: bool | None = None,
                  on_warning: Callable[[str], None] | None = None,
                  revision: str | None = None):
    """A student of any family, loaded to render (a posecast.render.Renderer)."""
    from posecast.hub import resolve_folder
    from posecast.render import Renderer

    started = time.perf_counter()
    folder = resolve_folder(model, revision)
    family = family_for(folder)
    student = family.load_student(folder, device, size, steps)
    log.info("loaded the %s student %s on %s in %.2f s", family.name, folder, device,
             time.perf_counter() - started)
    started = time.perf_counter()
    renderer = Renderer(student, str(model), compile, on_warning)
    compiled = hasattr(student.network, "_orig_mod")  # what torch.compile returns
    log.info("ready to render (%s, %d steps) in %.2f s", "compiled" if compiled else "eager",
             renderer.steps, time.perf_counter() - started)
    return renderer


def size_multiple(model: str, revision: str | None = None) -> int:
    """What a model's frame sides must be multiples of (for --size)."""
    from posecast.hub import resolve_folder

    folder = resolve_folder(model, revision)
    return family_for(folder).size_multiple(folder)


def distill(dataset: str | os.PathLike, teacher: str, out: str | os.PathLike,
            settings: DistillConfig, resume: bool = False, device: str = "auto",
            on_step: Callable | None = None, on_message: Callable[[str], None] | None = None,
            on_pairs: Callable[[int, int], None] | None = None, revision: str | None = None,
            fast_decoder: str | os.PathLike | None = None) -> Path:
    """Distil a teacher of any family (a folder, or a Hub repo id at `revision`) into a
    causal student folder `out`, as `posecast distill` does (train/distill.py). Returns
    `out`."""
    from posecast.hub import resolve_folder
    from posecast.train.distill import run_distillation

    folder = resolve_folder(teacher, revision)
    start = family_for(folder).distillation(folder, settings, resume,
                                            None if fast_decoder is None else Path(fast_decoder))
    return run_distillation(start, dataset, out, settings, resume, device, on_step, on_message,
                            on_pairs, source={"teacher": str(teacher),
                                              "teacher_revision": revision})


def training_family(init_from: str | None, preset: str, out: Path, resume: bool,
                    revision: str | None = None) -> tuple[Family, Path | None]:
    """The family `posecast train` trains and the folder it starts from: --init-from's, or,
    resuming, the one the run's checkpoint names, or --preset's."""
    from posecast.hub import resolve_folder

    if init_from is not None:
        folder = resolve_folder(init_from, revision)
        return family_for(folder), folder
    if resume:
        try:
            state = load_json_object(out / "checkpoint" / "state.json")
        except (OSError, ValueError):
            state = {}  # the run's resume gives the one-line error
        if "init_from" in state:  # a fine-tune: it resumes from its saved initial folder
            return _with_packages(family_named(state.get("family", "mimicmotion"))), None
    return family_with_preset(preset), None
