"""Render speed: the teacher and the student on the same portrait, poses and audio.

Both pipelines run end to end in one process: pose maps, denoising, decoding, and (for "with
I/O") MP4 encoding with the audio into a temporary file. Audio reading and keypoint
extraction happen once before timing. Weights may be random (speed does not depend on them).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch._dynamo
from torch.utils.flop_counter import FlopCounterMode

from posecast.bench.counters import HostWork, flop_counter
from posecast.bench.teacher import sync
from posecast.media import AudioClip, write_mp4
from posecast.media.image import to_uint8_frames
from posecast.pose.keypoints import Keypoints
from posecast.streaming.rollout import StreamState, StudentBackend, chunk_latents


@dataclass(frozen=True)
class PipelineTiming:
    name: str
    frames: int
    denoise_s: float
    decode_s: float | None  # None: not timed (MimicMotion's teacher)
    total_s: float  # pose maps + denoise + decode, I/O excluded
    with_io_s: float | None  # the same run again, streaming into an MP4 with audio
    first_frame_s: float | None  # student: start → first decoded frame (I/O excluded)
    flops_per_frame: float | None = None  # counted (bench/counters.py), denoising only

    def fps(self, seconds: float) -> float:
        return self.frames / seconds


@dataclass(frozen=True)
class RenderBenchParts:
    """What `bench render` times for one family (its Family.bench_parts)."""

    student: StudentBackend
    conditions: Callable[[np.ndarray], Any]  # a portrait (H, W, 3) uint8 → its conditions
    # (fitted poses, poses, portrait at the frame size, steps, cfg) → the teacher's row
    time_teacher: Callable[..., PipelineTiming]
    backend: str  # the input-aware attention backend the student runs
    details: dict  # the family's own fields of the JSON summary
    teacher_note: str  # how the teacher was timed (the table's last line)


def write_profile(path: Path, device: torch.device, run: Callable[[], object]) -> None:
    """One `run()` under torch.profiler; its operator table (where the time goes, 40 rows by
    own device time on CUDA, own CPU time elsewhere) written to `path`."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        run()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    path.write_text(profiler.key_averages().table(sort_by=sort, row_limit=40) + "\n")


@dataclass(frozen=True)
class StreamingCounts:
    chunks: int
    passes_per_chunk: int  # denoising steps + the cache pass
    layers: int
    attention_calls_per_chunk: float  # kernel launches, counted in an eager run
    recompiles: int  # graphs compiled after the warm-up (0 when nothing is compiled)
    # per chunk after the first, counted in the eager run (bench/counters.py; on the CPU a
    # floor: copies between devices show only on a GPU)
    syncs_per_chunk: float  # reads back to the host (the stream waits)
    h2d_copies_per_chunk: float  # tensors made from host data, host→device copies


def time_student_render(student: StudentBackend, conditions, poses: Keypoints,
                        clip: AudioClip, fps: float, repeats: int = 3,
                        profile: Path | None = None, compile: bool = False,
                        with_io: bool = True) -> tuple[PipelineTiming, StreamingCounts]:
    """A student of any family streaming `poses` (frame pixels) chunk by chunk and decoding
    each chunk, as `render` does: I/O excluded, the median of `repeats` runs (after an eager
    run that makes the cache and plans and counts attention calls, and with `compile` a
    compiled warm-up run), then (`with_io`) one run into an MP4 with `clip`. One cache and
    plan set serve every run, as in a renderer. `profile`: also run once under torch.profiler
    and write its operator table (where the time goes) there."""
    from posecast.attention.backends import KernelCalls
    from posecast.streaming.compiling import compile_student

    device, frames = student.device, len(poses)
    state = StreamState()  # as a renderer: one cache and plan set for every run

    def run(sink: Callable | None = None, work: HostWork | None = None,
            flops: FlopCounterMode | None = None) -> tuple[float, float, float, float]:
        denoise = decode = 0.0
        first = None
        sync(device)
        started = tick = time.perf_counter()
        for start, latents in chunk_latents(student, conditions, poses, 0, state):
            sync(device)
            tock = time.perf_counter()
            if work is not None:  # the cache pass before this chunk and its k steps
                marks.append((work.syncs, work.copies, flops.get_total_flops()))
            with torch.no_grad():
                pixels = to_uint8_frames(student.decode(latents[0]))[:frames - start]
            if flops is not None:  # decoding is not denoising: taken out of the count
                flops.flop_counts.clear()
            denoise += tock - tick
            decode += time.perf_counter() - tock
            first = time.perf_counter() - started if first is None else first
            for frame in pixels if sink is not None else ():
                sink(frame)
            tick = time.perf_counter()
        return denoise, decode, time.perf_counter() - started, first

    chunks = -(-frames // student.chunk)
    before = KernelCalls.count
    # per chunk, before its decoding: (syncs, copies) so far, and its denoising FLOPs
    marks: list[tuple[int, int, int]] = []
    # eager: kernels, allocator, the cache and plans; counts attention calls, host work, FLOPs
    with HostWork() as work, flop_counter() as flops:
        run(work=work, flops=flops)
    calls = (KernelCalls.count - before) / chunks
    steady = marks[1:] or marks  # the chunks after the first (the first makes the cache)
    syncs, copies = (marks[-1][i] - (marks[0][i] if len(marks) > 1 else 0) for i in (0, 1))
    chunk_flops = sum(mark[2] for mark in steady) / len(steady)
    counters = torch._dynamo.utils.counters["stats"]
    if compile:
        if device.type == "cuda":
            state.mark_static()
        student.network = compile_student(student.network)
        run()  # compiles (and on CUDA captures) every graph the render uses
    graphs = counters["unique_graphs"]
    denoise, decode, total, first = sorted((run() for _ in range(repeats)),
                                           key=lambda timing: timing[2])[repeats // 2]
    recompiles = counters["unique_graphs"] - graphs
    if profile is not None:
        write_profile(profile, device, run)
    io_seconds = None
    if with_io:
        with tempfile.TemporaryDirectory() as folder, \
                write_mp4(Path(folder) / "student.mp4", fps=fps, audio=clip) as mp4:
            started = time.perf_counter()
            run(mp4.write)
        io_seconds = time.perf_counter() - started
    counts = StreamingCounts(chunks, len(student.levels()) + 1, student.attention_layers, calls,
                             recompiles, syncs / len(steady), copies / len(steady))
    return PipelineTiming("student", frames, denoise, decode, total, io_seconds, first,
                          chunk_flops / student.chunk), counts
