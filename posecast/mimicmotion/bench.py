"""MimicMotion's speed at real size with random weights (`posecast bench teacher --preset
mimicmotion`): the network is built on the meta device (no download, no initialisation cost)
and materialised on the target device with small random weights."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from posecast.bench.counters import count_flops
from posecast.bench.render import RenderBenchParts
from posecast.bench.teacher import TeacherBench, peak_memory_gb, time_calls
from posecast.mimicmotion.attention import InputAwareSettings, InputAwareUNet
from posecast.mimicmotion.model import MimicMotion
from posecast.pose.keypoints import Keypoints

# SVD img2vid-xt's UNet is diffusers' UNetSpatioTemporalConditionModel with its defaults; the
# tiny one has diffusers' own SVD test sizes (tests and CPU smoke runs)
UNETS = {
    "mimicmotion": {},
    "mimicmotion-tiny": dict(
        block_out_channels=(32, 64), layers_per_block=2, in_channels=8, out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=32, num_attention_heads=8, projection_class_embeddings_input_dim=96,
        addition_time_embed_dim=32)}


@dataclass(frozen=True)
class MimicMotionTiming:
    device: str
    frames: int  # per window
    parameters: int
    step_ms: float  # one denoising step of one window, CFG's two branches as one batch
    fps: float  # frames / (steps × step), denoising only
    peak_memory_gb: float | None
    flops_per_frame: float  # steps × one step's counted FLOPs / frames


def random_network(preset: str | dict, device: torch.device, dtype: torch.dtype
                   ) -> MimicMotion:
    """A preset's network, or one of a UNet config (a model folder's)."""
    with torch.device("meta"):
        network = MimicMotion(UNETS[preset] if isinstance(preset, str) else preset)
    network = network.to_empty(device=device)
    generator = torch.Generator(device).manual_seed(0)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.normal_(0.0, 0.02, generator=generator)
    return network.to(dtype).eval()


def time_mimicmotion(preset: str | dict, height: int, width: int, frames: int, steps: int,
                     device: torch.device, repeats: int = 3, poses: Keypoints | None = None,
                     k_frames: int = 4) -> MimicMotionTiming:
    """With `poses` (a keypoint sequence, repeated or cut to the window and fitted to the
    frame), the UNet's spatial attention at levels 1–3 is input-aware under their masks."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    network = random_network(preset, device, dtype)
    window = contextlib.nullcontext
    if poses is not None:
        from posecast.pose.framing import fit_box, fit_keypoints

        fitted = fit_keypoints(Keypoints.concatenate([poses[min(i, len(poses) - 1)]
                                                      for i in range(frames)]),
                               fit_box(poses.width, poses.height, width, height))
        attention = InputAwareUNet(network, InputAwareSettings(k_frames=k_frames))
        prepared = attention.prepare(fitted, (height // 8, width // 8))
        window = lambda: attention.using(prepared)  # noqa: E731
    config = network.unet.config
    latent_h, latent_w = height // 8, width // 8
    g = torch.Generator(device).manual_seed(1)
    sample = torch.randn(2, frames, config.in_channels, latent_h, latent_w, generator=g,
                         device=device, dtype=dtype)
    embeddings = torch.randn(2, 1, config.cross_attention_dim, generator=g, device=device,
                             dtype=dtype)
    time_ids = torch.tensor([[6.0, 127.0, 0.0]] * 2, device=device, dtype=dtype)
    pose = torch.rand(2, frames, 3, height, width, generator=g, device=device, dtype=dtype)
    keep = torch.tensor([True, False], device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        with window():
            network(sample, 10.0, embeddings, time_ids, pose, keep)

    step_ms = time_calls(step, device, repeats)
    peak = peak_memory_gb(device)
    return MimicMotionTiming(
        torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", frames,
        sum(p.numel() for p in network.parameters()), step_ms,
        frames / (steps * step_ms / 1000), peak, steps * count_flops(step) / frames)


def random_student(preset: str, height: int, width: int, device: torch.device,
                   settings) -> tuple:
    """A random-weight student at `preset`'s UNet size and a random AutoencoderTiny with
    TAESD's architecture (speed does not depend on the weights), and random conditions."""
    from diffusers import AutoencoderTiny

    from posecast.mimicmotion.model import MimicMotionTeacher, Recipe
    from posecast.mimicmotion.student import Conditions, MimicMotionStudent

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    network = random_network(preset, device, dtype)
    parts = MimicMotionTeacher(network, None, None, (0.0,) * 3, (1.0,) * 3, {},
                               Recipe(height=height, width=width))
    decoder = AutoencoderTiny().to(device, dtype).eval().requires_grad_(False)
    student = MimicMotionStudent(parts, settings, decoder)
    config = network.unet.config
    g = torch.Generator(device).manual_seed(2)
    conditions = Conditions(
        torch.randn(1, 1, config.cross_attention_dim, generator=g, device=device, dtype=dtype),
        torch.randn(1, 4, height // 8, width // 8, generator=g, device=device, dtype=dtype),
        torch.tensor([[6.0, 127.0, 0.0]], device=device, dtype=dtype))
    return student, conditions


def render_bench_parts(folder: Path | None, teacher: Path | None, preset: str,
                       size: tuple[int, int] | None, steps: int | None, attention: str,
                       backend: str | None, device: torch.device) -> RenderBenchParts:
    """`bench render`'s student (the folder's with its fast decoder, or random weights of
    `preset` at `size`, default 576×1024) and its teacher's denoising of one window (the
    folder `teacher`'s UNet, or the student's; decoding excluded, which flatters it)."""
    import dataclasses

    from posecast.bench.render import PipelineTiming
    from posecast.errors import UsageError
    from posecast.mimicmotion.model import read_config
    from posecast.mimicmotion.student import StudentSettings, load_student

    if folder is not None:
        student = load_student(folder, device, size=size, steps=steps)
        conditions = student.conditions
    else:
        if preset not in UNETS:
            raise UsageError(f"unknown preset '{preset}' (MimicMotion: {', '.join(UNETS)})")
        height, width = size or (1024, 576)
        student, fixed = random_student(preset, height, width, device,
                                        StudentSettings(attention=attention))
        if steps is not None:
            student.settings = dataclasses.replace(student.settings, steps=steps)
        conditions = lambda reference: fixed  # noqa: E731 (random weights: any portrait)
    if backend is not None:
        student.settings = dataclasses.replace(student.settings, backend=backend)
    unet = read_config(teacher)["unet"] if teacher is not None else \
        preset if folder is None else dict(student.network.unet.config)

    def time_teacher(fitted, poses, reference, teacher_steps, cfg):
        timing = time_mimicmotion(unet, student.height, student.width, min(16, len(fitted)),
                                  teacher_steps, device, poses=poses)
        denoise = len(fitted) / timing.fps
        return PipelineTiming("teacher", len(fitted), denoise, None, denoise, None, None,
                              timing.flops_per_frame)

    decoder = "tiny" if student.fast_decoder is not None else "svd-vae"
    return RenderBenchParts(student, conditions, time_teacher, student.settings.backend,
                            {"decoder": decoder},
                            "the teacher: denoising of one 16-frame window, decoding excluded")


def teacher_bench(preset: str, size: str | None, steps: int, cfg: float, frames: list[int],
                  attention: list[str], repeats: int, device: torch.device) -> TeacherBench:
    """`bench teacher --preset mimicmotion…`: the teacher at real size (default 576×1024),
    random weights built on the meta device, a denoising step per window size and attention
    (input-aware: masks from the bundled example's poses), CFG's branches as one batch."""
    import dataclasses

    from posecast.bench.teacher import gigabytes
    from posecast.config import parse_size
    from posecast.errors import UsageError

    height, width = parse_size(size, 64) if size is not None else (1024, 576)
    examples = Path(__file__).resolve().parents[2] / "examples"
    poses = Keypoints.load(examples / "astronaut_poses.npz")
    rows, timings = [], []
    for mode in attention:
        if mode not in ("dense", "input_aware"):
            raise UsageError(f"--attention {mode}: choose dense and/or input_aware")
        for count in frames:
            t = time_mimicmotion(preset, height, width, count, steps, device, repeats,
                                 poses if mode == "input_aware" else None)
            timings.append({"attention": mode, **dataclasses.asdict(t)})
            rows.append({"params": f"{t.parameters / 1e6:.0f} M",
                         "attention": "dense" if mode == "dense" else
                         "input-aware (levels 1-3, K 4)",
                         "frames / window": str(count), "ms / step": f"{t.step_ms:.1f}",
                         "FPS (denoising)": f"{t.fps:.3f}", "peak GB": gigabytes(t.peak_memory_gb)})
    return TeacherBench(f"teacher · {preset} · {width}x{height} · {steps} steps · CFG {cfg:g} "
                        f"(one batch) · {device}", rows,
                        {"preset": preset, "width": width, "height": height, "steps": steps,
                         "cfg": cfg, "timings": timings})
