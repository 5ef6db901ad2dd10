"""The MimicMotion causal student on tiny random components: no frame sees a later chunk (where
the teacher's own network does), its prepare-ahead and compiled chunk step, its distillation,
and `posecast render` streaming a student folder to an MP4 of exactly the audio's length (what
every family must do is in test_family_contract.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import assert_only_the_student_moved, cli_json, torchrun
from synthetic import synthetic_clip
from test_mimicmotion import _random_state, _unet_config, _write_svd

from posecast.mimicmotion.model import MimicMotion, MimicMotionTeacher, Recipe
from posecast.mimicmotion.student import (
    Conditions,
    MimicMotionStudent,
    StudentSettings,
)
from posecast.streaming.rollout import Rollout, StreamState, chunk_latents


def whole_pass(student: MimicMotionStudent, x: torch.Tensor, sigma: float,
               conditions: Conditions, pose_maps: torch.Tensor | None,
               poses: list | None = None) -> torch.Tensor:
    """The oracle: D(x; σ) of whole sequences at once, block-causal (what the cached chunks
    equal), under block-causal input-aware plans over the whole sequences."""
    from posecast.attention.mask import build_mask, past_frames, window_regions
    from posecast.attention.plan import AttentionPlan

    settings, context = student.settings, student.context
    context.cache, context.commit = None, False
    context.first_frame = torch.zeros((), dtype=torch.long, device=x.device)
    context.plans = {}
    if poses is not None and settings.attention == "input_aware":
        for tokens, grid in student.level_grids().items():
            masks = [build_mask(window_regions(sequence, grid),
                                past_frames(sequence, settings.k_frames), chunk=settings.chunk)
                     for sequence in poses]
            context.plans[tokens] = AttentionPlan.for_windows(masks, settings.backend,
                                                              student.device, settings.block_size)
    try:
        return student.denoise(x, sigma, conditions, pose_maps)
    finally:
        context.plans = {}


def _student(attention: str, seed: int = 4) -> MimicMotionStudent:
    """A random tiny student on 64 × 64 frames (an 8 × 8 latent grid): chunks of 2 frames,
    4 cached frames, joint attention at levels 0 and 1."""
    torch.manual_seed(seed)
    network = MimicMotion(_unet_config()).eval()
    with torch.no_grad():
        network.pose_net.final_proj.weight.normal_(0, 0.2)  # the pose matters
    parts = MimicMotionTeacher(network, None, None, (0, 0, 0), (1, 1, 1), {},
                               Recipe(height=64, width=64))
    settings = StudentSettings(chunk=2, context_frames=4, steps=2, attention=attention,
                               levels=(0, 1), k_frames=2, backend="gather")
    return MimicMotionStudent(parts, settings)


def _inputs(frames: int, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, frames, 4, 8, 8, generator=g)
    conditions = Conditions(torch.randn(1, 1, 32, generator=g),
                            torch.randn(1, 4, 8, 8, generator=g), torch.tensor([[6., 127., 0.]]))
    maps = torch.rand(1, frames, 3, 64, 64, generator=g) * 2 - 1
    _, poses = synthetic_clip(64, frames, 25.0, np.random.default_rng(1))
    return x, conditions, maps, poses


def test_no_frame_sees_a_later_chunk():
    """Changing the last chunk's inputs (latents and poses) leaves every earlier frame exactly
    as it was, in the whole pass and in the streamed video; the teacher's own network (no
    causal changes) does not have this property."""
    student = _student("input_aware")
    x, conditions, maps, poses = _inputs(6)
    changed_x, changed_maps = x.clone(), maps.clone()
    changed_x[:, 4:] += 1.0
    changed_maps[:, 4:] = -changed_maps[:, 4:]
    with torch.no_grad():
        before = whole_pass(student, x, 5.0, conditions, maps, [poses])
        after = whole_pass(student, changed_x, 5.0, conditions, changed_maps, [poses])
        assert torch.equal(before[:, :4], after[:, :4])
        assert (before[:, 4:] - after[:, 4:]).abs().max() > 1e-3
        teacher = MimicMotion(_unet_config()).eval()
        sample = torch.cat([x, conditions.latent[:, None].expand(-1, 6, -1, -1, -1)], 2)
        changed = torch.cat([changed_x, conditions.latent[:, None].expand(-1, 6, -1, -1, -1)],
                            2)
        plain = [teacher(s, 1.0, conditions.embeddings, conditions.time_ids, m)
                 for s, m in ((sample, maps), (changed, changed_maps))]
        assert (plain[0][:, :4] - plain[1][:, :4]).abs().max() > 1e-4


def _video(student: MimicMotionStudent, conditions, poses, state=None) -> torch.Tensor:
    return torch.cat([latents for _, latents in
                      chunk_latents(student, conditions, poses, 0, state)], dim=1)


def test_each_chunk_draws_its_pose_maps_and_makes_its_masks_once_and_ahead(monkeypatch):
    """Host work costs milliseconds a chunk at real sizes: every chunk's DWPose maps are drawn
    once (not at each of its k steps and cache pass), and its input-aware masks made and plans
    refilled once per level; a chunk is handed over before its cache pass, and the next
    chunk's are made right after that pass is queued, while the device runs it; the maps
    equal maps drawn for the whole video at once, and the video equals one whose masks and
    plans are made at the start of each chunk."""
    import posecast.pose.dwpose
    from posecast.attention.plan import AttentionPlan
    from posecast.streaming.planner import ChunkPlanner

    draw, make_masks = posecast.pose.dwpose.draw_dwpose, ChunkPlanner.masks
    refill = AttentionPlan.update
    drawn: list[tuple[int, int]] = []  # (first frame, frames) of each draw, in order
    masks_made: list[int] = []  # the first frame of each chunk's masks, one per level
    refills: list[None] = []  # plan refills (the first chunk's plans are made, not refilled)
    maps_seen: list[torch.Tensor] = []

    def recording(keypoints, height, width):
        first = np.flatnonzero((poses.body == keypoints.body[0]).all(axis=(1, 2)))[0]
        drawn.append((int(first), len(keypoints)))
        return draw(keypoints, height, width)

    def recording_masks(planner, start, end, window_poses):
        masks_made.append(start)
        return make_masks(planner, start, end, window_poses)

    student = _student("input_aware")
    _, conditions, _, _ = _inputs(2)
    _, poses = synthetic_clip(64, 8, 25.0, np.random.default_rng(7))
    forward = student.network.forward
    monkeypatch.setattr(student.network, "forward",
                        lambda sample, *args: maps_seen.append(args[3]) or forward(sample, *args))
    monkeypatch.setattr(posecast.pose.dwpose, "draw_dwpose", recording)
    monkeypatch.setattr(ChunkPlanner, "masks", recording_masks)
    monkeypatch.setattr(AttentionPlan, "update",
                        lambda plan, *args: refills.append(None) or refill(plan, *args))
    handed_over, video = [], []
    for start, latents in chunk_latents(student, conditions, poses):
        handed_over.append((start, len(drawn), len(masks_made), len(refills)))
        video.append(latents)
    assert drawn == [(0, 2), (2, 2), (4, 2), (6, 2)]
    assert masks_made == [0, 0, 2, 2, 4, 4, 6, 6]  # two joint levels
    assert handed_over == [(0, 1, 2, 0), (2, 2, 4, 2), (4, 3, 6, 4), (6, 4, 8, 6)]
    whole = torch.from_numpy(draw(poses, 64, 64)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    passes = student.settings.steps + 1  # and the last chunk's k steps without a cache pass
    assert len(maps_seen) == 4 * passes - 1
    for index, maps in enumerate(maps_seen):
        start = 2 * (index // passes)
        torch.testing.assert_close(maps[0], whole[start:start + 2], atol=0, rtol=0)
    monkeypatch.setattr(Rollout, "_prepare_next", lambda rollout, end: None)
    on_time = [latents for _, latents in chunk_latents(student, conditions, poses)]
    torch.testing.assert_close(torch.cat(video, 1), torch.cat(on_time, 1), atol=0, rtol=0)


@pytest.mark.slow
def test_the_compiled_chunk_step_equals_eager_and_never_recompiles():
    """The input-aware student (flex) compiled as a renderer compiles it: fullgraph=True (a
    graph break raises), after an eager warm-up, one cache and plan set for every video. A
    second video of moving poses compiles nothing new (torch._dynamo's counters) and equals
    the eager student's. torch.compile's aot_eager backend traces and functionalises the
    graphs as inductor would, without inductor's minutes of C++ compiling on this CPU."""
    import dataclasses

    import torch._dynamo

    student = _student("input_aware")
    student.settings = dataclasses.replace(student.settings, backend="flex")
    _, conditions, _, _ = _inputs(2)
    _, poses = synthetic_clip(64, 12, 25.0, np.random.default_rng(7))
    with torch.no_grad():
        eager = _video(student, conditions, poses)
        state = StreamState()
        _video(student, conditions, poses[:4], state)  # eager warm-up: allocations
        torch._dynamo.reset()
        counters = torch._dynamo.utils.counters
        counters.clear()
        student.network = torch.compile(student.network, fullgraph=True, dynamic=False,
                                        backend="aot_eager")
        _video(student, conditions, poses[:4], state)  # compiles the step and commit
        graphs = counters["stats"]["unique_graphs"]
        assert graphs >= 2
        compiled = _video(student, conditions, poses, state)
    assert counters["stats"]["unique_graphs"] == graphs, dict(counters["recompiles"])
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)


def test_a_failed_compile_falls_back_to_eager_with_a_warning(monkeypatch, student_folder):
    """`--compile` on a MimicMotion student compiles its chunk step; when compiling fails the
    renderer says so in one line and renders uncompiled."""
    import posecast.render
    from posecast.families import load_renderer
    from posecast.pose.keypoints import Keypoints

    class Broken(torch.nn.Module):  # a compiled module whose first call fails
        def __init__(self, network):
            super().__init__()
            self.network = network

        def forward(self, *args, **kwargs):
            raise RuntimeError("no compiler here\nsecond line")

    monkeypatch.setattr(posecast.render, "compile_student", Broken)
    _, folder = student_folder
    warnings: list[str] = []
    renderer = load_renderer(str(folder), torch.device("cpu"), compile=True,
                             on_warning=warnings.append)
    assert len(warnings) == 1 and "compiling the student failed (RuntimeError: no " \
        "compiler here)" in warnings[0] and "\n" not in warnings[0]
    still = Keypoints.empty(3, 64, 64)
    frames = [frames for _, frames in renderer.chunks(np.zeros((64, 64, 3), np.uint8), still)]
    assert sum(len(f) for f in frames) == 4 and frames[0].shape[1:] == (64, 64, 3)


def test_the_settings_refuse_a_chunk_that_does_not_divide_the_context():
    from posecast.errors import UsageError

    with pytest.raises(UsageError, match="chunk must divide"):
        StudentSettings(chunk=3, context_frames=8)
    with pytest.raises(UsageError, match="1 to 8"):
        StudentSettings(steps=9)
    assert StudentSettings(steps=4).sigmas()[0] == pytest.approx(700.0)
    assert sorted(StudentSettings(steps=4).sigmas(), reverse=True) == \
        StudentSettings(steps=4).sigmas()


@pytest.fixture(scope="module")
def teacher_8x(tmp_path_factory):
    """An imported tiny teacher (8× VAE like SVD's, 64 × 64 frames) and a random
    AutoencoderTiny folder."""
    from diffusers import AutoencoderTiny

    from posecast.mimicmotion.importer import import_mimicmotion

    root = tmp_path_factory.mktemp("mm_teacher")
    svd = _write_svd(root / "svd", vae_blocks=4)
    checkpoint = root / "MimicMotion.pth"
    torch.save(_random_state(), checkpoint)
    teacher = import_mimicmotion(root / "teacher", str(svd), str(checkpoint))
    config = json.loads((teacher / "config.json").read_text())
    config["recipe"].update(height=64, width=64)
    (teacher / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8),
                    decoder_block_out_channels=(8, 8, 8, 8), num_encoder_blocks=(1, 1, 1, 1),
                    num_decoder_blocks=(1, 1, 1, 1)).save_pretrained(root / "taesd")
    return teacher, root / "taesd"


@pytest.fixture(scope="module")
def student_folder(tmp_path_factory, teacher_8x):
    """A student folder initialised from the tiny teacher, with the fast decoder."""
    from posecast.mimicmotion.student import init_student

    teacher, taesd = teacher_8x
    settings = StudentSettings(chunk=2, context_frames=4, steps=2, levels=(0, 1),
                               backend="gather")
    student = init_student(teacher, tmp_path_factory.mktemp("mm") / "student", settings,
                           fast_decoder=taesd)
    return teacher, student


def test_render_streams_a_mimicmotion_student_at_the_audio_length(run_cli, tmp_path,
                                                                   student_folder,
                                                                   portrait_path, speech_path):
    from posecast.media import AudioClip, iter_video_frames, load_audio
    from posecast.motion import frame_count

    _, student = student_folder
    clip = load_audio(speech_path)
    audio = tmp_path / "short.wav"
    AudioClip(clip.samples[:int(0.2 * clip.sample_rate)], clip.sample_rate).save_wav(audio)
    out = tmp_path / "talk.mp4"
    result = run_cli("render", audio, portrait_path, "-o", out, "--model", student,
                     "--device", "cpu", "--json")
    assert result.code == 0, result.stderr
    frames = frame_count(0.2, 25.0)
    summary = cli_json(result.stdout, "render")
    assert summary["frames"] == frames and summary["size"] == "64x64"
    video = list(iter_video_frames(out))
    assert len(video) == frames and video[0].shape == (64, 64, 3)


def test_families_refuse_each_others_folders(run_cli, tmp_path, student_folder, portrait_path,
                                             speech_path, talking_video):
    teacher, student = student_folder
    result = run_cli("render", speech_path, portrait_path, "-o", tmp_path / "a.mp4",
                     "--model", teacher, "--device", "cpu")
    assert result.code != 0 and "is a teacher" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_cli("teacher", portrait_path, "-o", tmp_path / "b.mp4", "--model", student,
                     "--driving-video", talking_video, "--device", "cpu")
    assert result.code != 0 and "not a teacher" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.mp4"))


DISTILL = dict(student_steps=2, chunk=2, window=4, k_frames=2, init_steps=1, ode_pairs=1,
               ode_steps=4, max_steps=2, critic_updates=2, batch_size=1, learning_rate=1e-3,
               critic_learning_rate=1e-3, init_learning_rate=1e-3, checkpoint_every=1,
               region_loss_weight=0.0)


def test_the_dmd_gradient_moves_a_sample_towards_the_teacher(teacher_8x, synthetic_dataset):
    """With a critic that predicts the student's own sample (what a critic fitted to the
    student's distribution does), one step down the DMD loss moves the sample towards the
    teacher's clean estimate; a flipped sign moves it away."""
    from posecast.data.clips import ClipDataset
    from posecast.mimicmotion.distill import MimicMotionDistillation
    from posecast.train.distill import DistillConfig, dmd_gradient, dmd_loss

    teacher, _ = teacher_8x
    run = MimicMotionDistillation(teacher, DistillConfig(**DISTILL), torch.device("cpu"))
    data = ClipDataset(synthetic_dataset, 64, 64)
    window = run.window(data.sample(1, 4, torch.Generator().manual_seed(0)))
    g = torch.Generator().manual_seed(1)
    sample = torch.randn(1, 4, 4, 8, 8, generator=g).requires_grad_(True)
    sigma, noise = torch.tensor([2.0]), torch.randn(sample.shape, generator=g)
    score = run.score(window, g)
    with torch.no_grad():
        target = score("teacher", sample + sigma.view(-1, 1, 1, 1, 1) * noise, sigma, run.cfg)
    gradient = dmd_gradient(sample, target, sample.detach(), None)
    dmd_loss(sample, gradient).backward()
    with torch.no_grad():
        moved = sample - 0.5 * sample.grad / sample.grad.abs().mean()
        assert (moved - target).norm() < (sample - target).norm()


def test_dmd_and_critic_steps_run_in_the_configured_ratio(teacher_8x, synthetic_dataset):
    """Counted at the optimisers: r = 2 critic steps per generator step, and both networks
    change (the counters the log reports are not what is checked)."""
    from posecast.data.clips import ClipDataset
    from posecast.mimicmotion.distill import MimicMotionDistillation
    from posecast.train.distill import DistillConfig, dmd_step

    teacher, _ = teacher_8x
    run = MimicMotionDistillation(teacher, DistillConfig(**DISTILL), torch.device("cpu"))
    steps = {"student": 0, "critic": 0}
    for name in steps:
        run.optimizers[name].register_step_post_hook(
            lambda *_, name=name: steps.__setitem__(name, steps[name] + 1))
    before = {name: next(module.parameters()).detach().clone()
              for name, module in run.modules.items()}
    data = ClipDataset(synthetic_dataset, 64, 64)
    for step in range(2):
        dmd_step(run, data, [], torch.Generator().manual_seed(step),
                 torch.Generator().manual_seed(100 + step), 1)
    assert steps == {"student": 2, "critic": 4}
    for name, module in run.modules.items():
        assert not torch.equal(next(module.parameters()), before[name]), name


@pytest.mark.gpu
def test_distillation_keeps_fp32_weights_and_computes_in_bf16_on_cuda(teacher_8x,
                                                                      synthetic_dataset):
    """A DMD step on CUDA: the student's, critic's and teacher's UNets keep fp32 weights (the
    optimiser's) while their layers run in bf16 under autocast (seen at the time embedding)."""
    from posecast.data.clips import ClipDataset
    from posecast.mimicmotion.distill import MimicMotionDistillation
    from posecast.train.distill import DistillConfig, dmd_step

    teacher, _ = teacher_8x
    run = MimicMotionDistillation(teacher, DistillConfig(**DISTILL), torch.device("cuda"))
    seen: dict[str, set] = {"student": set(), "critic": set(), "teacher": set()}
    for name, network in (("student", run.student.network), ("critic", run.critic.network),
                          ("teacher", run.teacher.network)):
        network.unet.time_embedding.linear_1.register_forward_hook(
            lambda module, inputs, output, name=name: seen[name].add(output.dtype))
    dmd_step(run, ClipDataset(synthetic_dataset, 64, 64), [], torch.Generator().manual_seed(0),
             torch.Generator().manual_seed(1), 1)
    assert seen == {name: {torch.bfloat16} for name in seen}
    assert all(p.dtype == torch.float32 for module in run.modules.values()
               for p in module.parameters())


def test_posecast_distill_makes_a_student_that_resumes_exactly_and_renders(
        run_cli, tmp_path, teacher_8x, synthetic_dataset, portrait_path, speech_path):
    """`posecast distill --teacher MIMICMOTION`: one ODE-init step and two DMD steps
    straight through equal two steps then --resume, bit for bit; the folder is a student
    with the fast decoder, and a student folder given as the teacher is refused with one
    line."""
    from safetensors.torch import load_file

    teacher, taesd = teacher_8x
    flags = ["--steps", "2", "--chunk", "2", "--window", "4", "--k-frames", "2",
             "--init-steps", "1", "--ode-pairs", "1", "--critic-updates", "1",
             "--batch-size", "1", "--checkpoint-every", "1", "--region-loss-weight", "0",
             "--device", "cpu", "--fast-decoder", taesd]
    straight, split = tmp_path / "straight", tmp_path / "split"
    result = run_cli("distill", synthetic_dataset, "--teacher", teacher, "--output", straight,
                     "--max-steps", "2", *flags)
    assert result.code == 0, result.stderr
    assert run_cli("distill", synthetic_dataset, "--teacher", teacher, "--output", split,
                   "--max-steps", "1", *flags).code == 0
    result = run_cli("distill", synthetic_dataset, "--teacher", teacher, "--output", split,
                     "--max-steps", "2", "--resume", *flags)
    assert result.code == 0, result.stderr
    a, b = load_file(straight / "model.safetensors"), load_file(split / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    config = json.loads((straight / "config.json").read_text())
    assert config["student"]["chunk"] == 2 and (straight / "fast_decoder").is_dir()
    log = [json.loads(line) for line in (straight / "train_log.jsonl").open()]
    assert [entry["phase"] for entry in log] == ["init", "dmd", "dmd"]

    result = run_cli("distill", synthetic_dataset, "--teacher", straight, "--output",
                     tmp_path / "again", *flags)
    assert result.code == 2 and "student folder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "again").exists()


def test_bench_render_times_a_random_mimicmotion_student(run_cli):
    """The same JSON fields as the DiT bench (fps, first frame, chunks, passes, the teacher's
    FPS and the ratio), from a random-weight tiny student at 64 × 64."""
    result = run_cli("bench", "render", "--preset", "mimicmotion-tiny", "--size", "64x64",
                     "--seconds", "0.32", "--teacher-steps", "2", "--device", "cpu", "--json")
    assert result.code == 0, result.stderr
    summary = cli_json(result.stdout, "bench render")
    student = summary["student"]
    assert student["frames"] == 8 and student["chunks"] == 2 and student["passes_per_chunk"] == 5
    assert student["size"] == "64x64" and student["decoder"] == "tiny"
    assert student["fps"] > 0 and student["first_frame_s"] > 0
    assert summary["ratio"] == pytest.approx(student["fps"] / summary["teacher_fps"])
    result = run_cli("bench", "render", "--preset", "mimicmotion-huge", "--device", "cpu")
    assert result.code == 2 and "unknown preset" in result.stderr


def test_the_region_loss_on_decoded_frames_steers_the_student(teacher_8x, synthetic_dataset):
    """With λ_region > 0 the student's step also follows the masked L1 + SSIM of its samples,
    decoded by the fast decoder, against the clips' frames: the loss is logged and the
    student's update differs from the one without it (same data, noise and exit steps)."""
    from posecast.data.clips import ClipDataset
    from posecast.mimicmotion.distill import MimicMotionDistillation
    from posecast.train.distill import DistillConfig, dmd_step

    teacher, taesd = teacher_8x
    data = ClipDataset(synthetic_dataset, 64, 64)
    updates = {}
    for weight in (0.0, 1.0):
        settings = DistillConfig(**{**DISTILL, "critic_updates": 1,
                                    "region_loss_weight": weight})
        run = MimicMotionDistillation(teacher, settings, torch.device("cpu"), taesd)
        before = [p.detach().clone() for p in run.student.network.parameters()]
        losses = dmd_step(run, data, [], torch.Generator().manual_seed(5),
                          torch.Generator().manual_seed(6), 1)
        updates[weight] = torch.cat([(p.detach() - b).flatten() for p, b
                                     in zip(run.student.network.parameters(), before,
                                            strict=True)])
        assert ("region" in losses) == (weight > 0)
    assert losses["region"] > 0
    assert not torch.allclose(updates[0.0], updates[1.0])


def test_gradient_checkpointing_gives_the_same_gradients_from_fewer_saved_tensors(
        teacher_8x, synthetic_dataset, monkeypatch):
    """One DMD step (two critic updates, then the student on DMD + the region loss of its
    two-chunk samples, decoded) with and without --gradient-checkpointing: the same losses
    and gradients of both networks, while autograd keeps fewer bytes for each backward pass.
    The student's blocks recompute after later chunks have moved the cache on."""
    from posecast.data.clips import ClipDataset
    from posecast.mimicmotion.distill import MimicMotionDistillation
    from posecast.train import distill
    from posecast.train.distill import DistillConfig, dmd_step

    teacher, taesd = teacher_8x
    data = ClipDataset(synthetic_dataset, 64, 64)
    results = {}
    for on in (False, True):
        settings = DistillConfig(**{**DISTILL, "region_loss_weight": 1.0,
                                    "gradient_checkpointing": on})
        run = MimicMotionDistillation(teacher, settings, torch.device("cpu"), taesd)
        steps, saved = [], [0]  # (name, gradients, bytes saved for its backward)

        def no_step(run, name, world_size, steps=steps, saved=saved):
            module = run.owners[name]  # no optimiser step: every backward sees the same weights
            steps.append((name, [p.grad.clone() for p in module.parameters()
                                 if p.grad is not None], saved[0]))
            module.zero_grad(set_to_none=True)
            saved[0] = 0

        def pack(tensor, saved=saved):
            saved[0] += tensor.numel() * tensor.element_size()
            return tensor

        monkeypatch.setattr(distill, "_optimiser_step", no_step)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            losses = dmd_step(run, data, [], torch.Generator().manual_seed(5),
                              torch.Generator().manual_seed(6), 1)
        results[on] = losses, steps
    (losses, plain), (losses_on, recomputed) = results[False], results[True]
    assert losses == pytest.approx(losses_on, abs=1e-5)
    assert [step[0] for step in plain] == ["critic", "critic", "student"]
    for (name, grads, size), (name_on, grads_on, size_on) in zip(plain, recomputed,
                                                                   strict=True):
        assert name == name_on and len(grads) == len(grads_on) > 0
        for grad, grad_on in zip(grads, grads_on, strict=True):
            torch.testing.assert_close(grad_on, grad, atol=1e-5, rtol=1e-5)
        assert size_on < 0.8 * size, (name, size_on, size)


def test_region_steps_train_the_student_alone_and_resume_exactly(
        tmp_path, monkeypatch, teacher_8x, synthetic_dataset):
    """--region-steps 2 after one ODE-init and one DMD step: two logged "region" steps on the
    region loss alone that change the student and nothing else, with the initialisation's
    optimiser and no call to the teacher or the critic; reaching them by --resume of the
    finished run, one region step at a time, gives the straight run's bytes."""
    from safetensors.torch import load_file

    from posecast.families import distill
    from posecast.mimicmotion.distill import GuidedTeacher
    from posecast.train.distill import DistillConfig

    teacher, taesd = teacher_8x
    settings = dict(DISTILL, max_steps=1, critic_updates=1)
    straight = distill(synthetic_dataset, str(teacher), tmp_path / "straight",
                       DistillConfig(**settings, region_steps=2), device="cpu",
                       fast_decoder=taesd)
    split = distill(synthetic_dataset, str(teacher), tmp_path / "split",
                    DistillConfig(**settings), device="cpu", fast_decoder=taesd)
    after_dmd = load_file(split / "checkpoint" / "state.safetensors")

    def no_teacher(*args, **kwargs):
        raise AssertionError("the region stage called the teacher or the critic")

    monkeypatch.setattr(GuidedTeacher, "__call__", no_teacher)
    for region_steps in (1, 2):  # the second resume starts inside the region stage
        distill(synthetic_dataset, str(teacher), split,
                DistillConfig(**settings, region_steps=region_steps), resume=True,
                device="cpu", fast_decoder=taesd)
    log = [json.loads(line) for line in (split / "train_log.jsonl").open()]
    assert [entry["phase"] for entry in log] == ["init", "dmd", "region", "region"]
    assert [entry["step"] for entry in log] == [1, 2, 3, 4]
    assert all(set(entry["losses"]) == {"region"} and entry["losses"]["region"] > 0
               for entry in log[2:])
    assert log[-1]["generator_updates"] == 1 and log[-1]["critic_updates"] == 1
    state = load_file(split / "checkpoint" / "state.safetensors")
    assert_only_the_student_moved(state, after_dmd)
    # the initialisation's optimiser took the two region steps afresh, the DMD one none
    assert state["optim.init.0.step"].item() == 2 and state["optim.student.0.step"].item() == 1
    for name in ("checkpoint/state.safetensors", "model.safetensors"):
        a, b = load_file(straight / name), load_file(split / name)
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a), name


def test_region_ode_weight_adds_the_stored_pairs_loss_to_region_steps(tmp_path, teacher_8x,
                                                                      synthetic_dataset):
    """A region step with region_ode_weight logs the ODE-pair loss and moves the student
    differently from the same step without it; the shared loop's --grad-accumulation and
    --sample-every work for this family too (once refused): a sample video of the window's
    4 frames, real and student side by side."""
    from safetensors.torch import load_file

    from posecast.families import distill
    from posecast.train.distill import DistillConfig

    teacher, taesd = teacher_8x
    settings = dict(DISTILL, max_steps=0, region_steps=1)
    students = {}
    for weight in (0.0, 1000.0):
        out = distill(synthetic_dataset, str(teacher), tmp_path / str(weight),
                      DistillConfig(**settings, region_ode_weight=weight), device="cpu",
                      fast_decoder=taesd)
        log = [json.loads(line) for line in (out / "train_log.jsonl").open()]
        assert set(log[-1]["losses"]) == ({"region", "ode"} if weight else {"region"})
        students[weight] = load_file(out / "model.safetensors")
    plain, anchored = students[0.0], students[1000.0]
    assert any(not torch.equal(plain[key], anchored[key]) for key in plain)
    from posecast.media.ffmpeg import iter_video_frames

    out = distill(synthetic_dataset, str(teacher), tmp_path / "both",
                  DistillConfig(**settings, grad_accumulation=2, sample_every=1), device="cpu",
                  fast_decoder=taesd)
    frames = list(iter_video_frames(out / "samples" / "step-000002.mp4"))
    assert len(frames) == 4 and frames[0].shape == (64, 128, 3)


@pytest.mark.slow
def test_torchrun_distils_the_same_student_with_and_without_fsdp(tmp_path, teacher_8x,
                                                                 synthetic_dataset):
    """Two processes with averaged gradients, and the same with the teacher, student and
    critic sharded block by block (FSDP2 on gloo) and gradient checkpointing on, distil the
    same student (one ODE-init and two DMD steps); the sharded run logs once and resumes.
    Adam moves a weight by about lr·sign(gradient) at first, so where a gradient is near zero
    the two reduction orders may move it differently: no weight may differ by more than half
    the init step's lr (5e-5) and all but a few by more than 1e-6 (processes stepping on their
    own gradients move most weights apart)."""

    from safetensors.torch import load_file

    teacher, _ = teacher_8x
    common = [synthetic_dataset, "--teacher", teacher, "--steps", "2", "--chunk", "2",
              "--window", "4", "--k-frames", "2", "--init-steps", "1", "--ode-pairs", "2",
              "--critic-updates", "1", "--batch-size", "1", "--region-loss-weight", "0",
              "--device", "cpu"]
    plain = torchrun("distill", [*common, "--max-steps", "2", "--checkpoint-every", "2", "--output",
                      tmp_path / "plain"], 29551)
    assert plain.returncode == 0, plain.stderr[-3000:]
    checkpointing = tmp_path / "checkpointing.json"
    checkpointing.write_text(json.dumps({"gradient_checkpointing": True}))
    sharded = torchrun("distill", [*common, "--max-steps", "2", "--checkpoint-every", "2",
                                   "--output", tmp_path / "fsdp", "--fsdp", "--config",
                                   checkpointing], 29552)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("plain", "fsdp"))
    original = load_file(teacher / "model.safetensors")
    assert a.keys() == b.keys() == original.keys()
    apart = torch.cat([(a[key] - b[key]).abs().flatten() for key in a])
    assert apart.max() <= 5e-5 and (apart > 1e-6).float().mean() < 0.01, \
        (apart.max().item(), (apart > 1e-6).float().mean().item())
    assert any(not torch.equal(a[key], original[key].float()) for key in a)
    log = [json.loads(line) for line in (tmp_path / "fsdp" / "train_log.jsonl").open()]
    assert [entry["phase"] for entry in log] == ["init", "dmd", "dmd"]  # one process logs
    resumed = torchrun("distill", [*common, "--max-steps", "3", "--output", tmp_path / "fsdp",
                                   "--fsdp", "--resume"], 29553)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    state = json.loads((tmp_path / "fsdp" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4 and state["distill_config"]["gradient_checkpointing"]
