"""FLOPs per generated frame of each family's student and teacher at real size, counted on
the meta device (shapes only: no weights, no arithmetic, seconds on a CPU), with torch's FLOP
counter (posecast/bench/counters.py: 2 FLOPs per multiply-add; sparse attention counted as
the gather backend runs it, i.e. the allowed pairs only).

  student  a steady chunk (after 3 chunks, the cache full): its k steps and the cache pass,
           per frame of the chunk, the poses of examples/astronaut_poses.npz
  teacher  one denoising step of a window with CFG's two branches as one batch, × steps,
           per frame the window advances (window − overlap: the long-video cost)
Decoding is left out of both. The ceilings use the cards' dense bf16 peaks (bench/counters.py).

    .venv/bin/python scripts/count_flops.py            # a table (Markdown)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from posecast.bench.counters import count_flops, flop_counter, fps_at_half_peak
from posecast.pose.framing import fit_keypoints
from posecast.pose.keypoints import Keypoints
from posecast.streaming.pose_maps import ChunkPoseMaps
from posecast.streaming.rollout import Rollout

META = torch.device("meta")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def steady_chunk_flops(student, conditions, chunks: int = 4) -> float:
    """FLOPs per frame of the last of `chunks` chunks (k steps + its cache pass)."""
    portrait = Keypoints.load(EXAMPLES / "astronaut_keypoints.npz")
    blank = np.zeros((portrait.height, portrait.width, 3), np.uint8)
    poses = Keypoints.load(EXAMPLES / "astronaut_poses.npz")
    fitted = fit_keypoints(poses, student.frame(blank, portrait))[:chunks * student.chunk]
    maps = ChunkPoseMaps(lambda s, e: student.draw_poses(fitted[s:e]), META, student.pose_input)
    rollout = Rollout(student, conditions, maps, lambda s, e: [fitted[s:e]], frames=len(fitted))
    shape = (1, student.chunk, *student.latent_shape())
    with torch.no_grad(), flop_counter() as counter:
        for _ in range(chunks):
            counter.flop_counts.clear()
            rollout.chunk(torch.zeros(shape, device=META), lambda: torch.zeros(shape, device=META))
    return counter.get_total_flops() / student.chunk


def dit_row(name: str) -> dict:
    from posecast.config import preset
    from posecast.dit.denoiser import Denoiser
    from posecast.dit.distill import student_config
    from posecast.dit.student import DitStudent, student_timesteps
    from posecast.train.distill import DistillConfig

    with META:
        student_model = Denoiser(student_config(preset(name), DistillConfig()))
        teacher = Denoiser(preset(name))
    config = student_model.config
    student = DitStudent(student_model, student_timesteps(student_model), device=META)
    latent = torch.zeros(1, config.codec.latent_channels, *config.latent_size, device=META)
    tc = teacher.config
    frames = tc.window
    noisy = torch.zeros(2, frames, tc.codec.latent_channels, *tc.latent_size, device=META)
    maps = torch.zeros(2, frames, 3, tc.height, tc.width, device=META)
    keep = torch.tensor([True, False], device=META)
    step = count_flops(lambda: teacher(noisy, torch.zeros(2, device=META),
                                       latent.expand(2, -1, -1, -1), maps, keep))
    return {"model": f"DiT `{name}`", "size": f"{tc.width}×{tc.height}",
            "student": steady_chunk_flops(student, latent),
            "student steps": len(student.levels()),
            "teacher": tc.sampler.steps * step / (tc.window - tc.overlap),
            "teacher steps": f"{tc.sampler.steps}, CFG"}


def mimicmotion_row(height: int = 1024, width: int = 576, **settings) -> dict:
    from posecast.mimicmotion.bench import UNETS
    from posecast.mimicmotion.model import MimicMotion, MimicMotionTeacher, Recipe
    from posecast.mimicmotion.student import Conditions, MimicMotionStudent, StudentSettings

    with META:  # diffusers makes its blend factors with torch.Tensor([...]), on the CPU
        network = MimicMotion(UNETS["mimicmotion"]).to(META)
    recipe = Recipe(height=height, width=width)
    parts = MimicMotionTeacher(network, None, None, (0.0,) * 3, (1.0,) * 3, {}, recipe)
    student = MimicMotionStudent(parts, StudentSettings(**settings), None)
    config = network.unet.config
    latent_h, latent_w = height // 8, width // 8
    conditions = Conditions(torch.zeros(1, 1, config.cross_attention_dim, device=META),
                            torch.zeros(1, 4, latent_h, latent_w, device=META),
                            torch.zeros(1, 3, device=META))
    frames = recipe.window
    sample = torch.zeros(2, frames, config.in_channels, latent_h, latent_w, device=META)
    embeddings = torch.zeros(2, 1, config.cross_attention_dim, device=META)
    pose = torch.zeros(2, frames, 3, height, width, device=META)
    step = count_flops(lambda: network(sample, torch.full((2,), 10.0, device=META), embeddings,
                                       torch.zeros(2, 3, device=META),
                                       pose, torch.tensor([True, False], device=META)))
    variant = ", ".join(f"{key} {value}" for key, value in settings.items())
    return {"model": f"MimicMotion{f' ({variant})' if variant else ''}",
            "size": f"{width}×{height}",
            "student": steady_chunk_flops(student, conditions),
            "student steps": len(student.levels()),
            "teacher": recipe.steps * step / (recipe.window - recipe.overlap),
            "teacher steps": f"{recipe.steps}, CFG"}


def main() -> None:
    started = time.perf_counter()
    rows = [dit_row(name) for name in ("tiny", "mini", "small", "base")] + [
        mimicmotion_row(), mimicmotion_row(attention="dense"), mimicmotion_row(steps=3),
        mimicmotion_row(steps=2)]
    print("| model | size | student TFLOP/frame (steps + cache pass) | teacher TFLOP/frame "
          "(steps) | ratio | student FPS at half an H100's or H200's bf16 peak |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['size']} | {row['student'] / 1e12:.3g} "
              f"({row['student steps']} + 1) | {row['teacher'] / 1e12:.3g} "
              f"({row['teacher steps']}) | {row['teacher'] / row['student']:.1f}× | "
              f"{fps_at_half_peak(row['student'], 'H200'):.1f} |")
    print(f"\n(counted in {time.perf_counter() - started:.0f} s, torch {torch.__version__})")


if __name__ == "__main__":
    main()
