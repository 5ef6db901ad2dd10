"""The family contract (issue 33): what every model family's causal student must do, written
once and run for each family — posecast's DiT, MimicMotion, and a toy family defined only in
the tests (toy_family.py), which also renders and distils through the CLI: the proof that a
new family is one module behind the seams.

Each family brings a tiny random student (chunks of 2 frames, 4 cached frames, 2 steps), its
inputs, and its own oracle for a whole block-causal pass."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import toy_family
from synthetic import synthetic_clip

from posecast.bench.counters import HostWork
from posecast.pose.keypoints import PART_SIZES
from posecast.streaming.rollout import Rollout, StreamState, chunk_latents

CASES = [("dit", "dense"), ("dit", "input_aware"), ("mimicmotion", "dense"),
         ("mimicmotion", "input_aware"), ("toy", "dense")]
LEVEL = {"dit": 0.3, "mimicmotion": 5.0, "toy": 0.3}  # where the equality checks run


def _dit(attention: str):
    from test_student import _random_model

    from posecast.config import preset
    from posecast.dit.codecs import PixelCodec
    from posecast.dit.student import DitStudent, student_timesteps

    config = preset("tiny", attention=attention, chunk=2, window=6, k_frames=2)
    model = _random_model(config)
    return DitStudent(model, student_timesteps(model, 2), PixelCodec(config.codec))


def _toy():
    torch.manual_seed(5)
    network = toy_family.ToyNet()
    with torch.no_grad():
        network.weights.add_(0.3 * torch.randn(4))
    return toy_family.ToyStudent(network, steps=2, chunk=2, context_frames=4)


def make_student(family: str, attention: str):
    if family == "dit":
        return _dit(attention)
    if family == "mimicmotion":
        from test_mimicmotion_student import _student

        return _student(attention)
    return _toy()


def make_inputs(family: str, student, frames: int, seed: int = 3):
    """x (1, frames, C, h, w), the conditions, pose maps as the network takes them and the
    poses (in the student's frame pixels)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, frames, *student.latent_shape(), generator=g)
    _, poses = synthetic_clip(student.width, frames, 25.0, np.random.default_rng(seed))
    drawn = torch.from_numpy(student.draw_poses(poses)).permute(0, 3, 1, 2)[None]
    maps = student.pose_input(drawn)
    if family == "mimicmotion":
        from test_mimicmotion_student import _inputs

        conditions = _inputs(frames, seed)[1]
    else:
        conditions = torch.randn(1, *student.latent_shape(), generator=g)
    return x, conditions, maps, poses


def whole_estimate(family: str, student, x, level, conditions, maps, poses):
    """The family's oracle: every frame's clean estimate from one pass, each chunk seeing
    itself and the `context_frames` frames before it (x itself as the past)."""
    chunk, context = student.chunk, student.context_frames
    if family == "mimicmotion":
        from test_mimicmotion_student import whole_pass

        return whole_pass(student, x, level, conditions, maps, [poses])
    if family == "toy":
        levels = torch.full((x.shape[0],), level)
        return student.network.oracle(x, levels, conditions, maps, context, chunk)
    from posecast.attention.mask import mask_for_window

    config = student.config
    if config.attention == "input_aware":  # within one window: the method's own mask
        assert x.shape[1] <= config.window
        layout = [mask_for_window(poses, config)]
    else:
        rows, cols = config.token_grid
        chunk_of = torch.arange(x.shape[1]).repeat_interleave(rows * cols) // chunk
        back = chunk_of[:, None] - chunk_of[None, :]  # (query, key): chunks back
        layout = (back >= 0) & (back <= context // chunk)
    times = torch.full((x.shape[0],), level)
    return x - level * student.model(x, times, conditions, maps, layout=layout)


def _frames(attention: str) -> int:
    """Dense: past the ring (10 frames, 4 cached: slots overwritten); input-aware: one window."""
    return 10 if attention == "dense" else 6


def _teacher_forced(student, x, level, conditions, maps, poses):
    """The rollout's estimate of each chunk of x at `level`, x committed (at `level`) as the
    past of the chunks after it."""
    rollout = Rollout(student, conditions, lambda s, e: maps[:, s:e], lambda s, e: [poses[s:e]])
    out = []
    for start in range(0, x.shape[1], student.chunk):
        chunk = x[:, start:start + student.chunk]
        out.append(rollout.estimate(chunk, level))
        rollout.store(chunk, level)
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("family, attention", CASES)
def test_cached_chunks_equal_the_whole_block_causal_pass(family, attention):
    """Chunk after chunk through the cache (EMPTY slots at first, then filled and, dense,
    overwritten) gives what the family's whole pass gives under its block-causal mask."""
    student = make_student(family, attention)
    x, conditions, maps, poses = make_inputs(family, student, _frames(attention))
    with torch.no_grad():
        cached = _teacher_forced(student, x, LEVEL[family], conditions, maps, poses)
        whole = whole_estimate(family, student, x, LEVEL[family], conditions, maps, poses)
    torch.testing.assert_close(cached, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family, attention", CASES)
def test_no_chunk_sees_a_later_one(family, attention):
    """Changing the last chunk's latents, pose maps and keypoints (which input-aware masks
    are made from, ahead of time) leaves every earlier chunk's estimate exactly as it was, and
    changes the last one."""
    student = make_student(family, attention)
    x, conditions, maps, poses = make_inputs(family, student, _frames(attention))
    changed_x, changed_maps = x.clone(), maps.clone()
    changed_x[:, -2:] += 1.0
    changed_maps[:, -2:] = maps[:, -2:].flip(-1)
    moved = {part: getattr(poses, part).copy() for part in PART_SIZES}
    for points in moved.values():  # the last chunk's person mirrored left to right
        points[-2:, :, 0] = student.width - 1 - points[-2:, :, 0]
    changed_poses = dataclasses.replace(poses, **moved)
    with torch.no_grad():
        before = _teacher_forced(student, x, LEVEL[family], conditions, maps, poses)
        after = _teacher_forced(student, changed_x, LEVEL[family], conditions, changed_maps,
                                changed_poses)
    assert torch.equal(before[:, :-2], after[:, :-2])
    assert (before[:, -2:] - after[:, -2:]).abs().max() > 1e-3


@pytest.mark.parametrize("family, attention", CASES)
def test_a_kept_stream_state_gives_every_video_a_fresh_start(family, attention):
    """A renderer keeps one cache and plan set for all its videos (static tensors for CUDA
    graphs); its second video equals one rendered from scratch, and the state holds plans
    exactly when attention is input-aware."""
    student = make_student(family, attention)
    _, conditions, _, poses = make_inputs(family, student, 9)

    def video(state, seed):
        return torch.cat([latents for _, latents in
                          chunk_latents(student, conditions, poses, seed, state)], dim=1)

    state = StreamState()
    video(state, seed=3)
    second = video(state, seed=1)
    assert state.cache is not None and bool(state.plans) == (attention == "input_aware")
    assert second.shape[1] == 10  # 9 poses, the last held to fill the last chunk
    torch.testing.assert_close(second, video(None, seed=1), atol=0, rtol=0)


@pytest.mark.parametrize("family", ["dit", "mimicmotion", "toy"])
def test_a_steady_dense_chunk_asks_nothing_of_the_host(family):
    """After the first chunk (which may make a family's fixed level tensors once), a dense
    chunk (its k steps, cache pass and the next chunk's preparation) makes no tensor from
    host data and reads nothing back (issue 30, item 5; the input-aware plans are still
    refilled from host-built masks, item 4, and not asserted here)."""
    student = make_student(family, "dense")
    _, conditions, maps, poses = make_inputs(family, student, 10)
    rollout = Rollout(student, conditions, lambda s, e: maps[:, s:e],
                      lambda s, e: [poses[s:e]], frames=10)
    g = torch.Generator().manual_seed(0)
    shape = (1, student.chunk, *student.latent_shape())
    counts = []
    with torch.no_grad():
        for _ in range(5):
            with HostWork() as work:
                rollout.chunk(torch.randn(shape, generator=g),
                              lambda: torch.randn(shape, generator=g))
            counts.append((work.syncs, work.copies))
    assert counts[1:] == [(0, 0)] * 4, counts  # after the first, past the ring's wrap


def test_host_work_counts_reads_back_and_copies_from_the_host():
    """The counter behind syncs_per_chunk and h2d_copies_per_chunk, on hand-made cases."""
    x = torch.arange(6.0)
    with HostWork() as work:
        y = x * 2 + 1  # device work only
        torch.full((3,), 0.5)  # a scalar fill needs no copy
    assert (work.syncs, work.copies) == (0, 0)
    with HostWork() as work:
        y.sum().item()  # a read back
        bool(y[0] > 0)  # another
        y.nonzero()  # its size depends on the data: a read back
        torch.tensor([1.0, 2.0])  # made from host data
        torch.from_numpy(np.zeros(3))  # likewise
    assert (work.syncs, work.copies) == (3, 2)


def _host_work_per_chunk(student, conditions, poses) -> list[tuple[int, int]]:
    """(syncs, copies) of each chunk after the first as `render` streams them (pose maps
    drawn and copied per chunk, plans refilled ahead; the tiny students have no decoder)."""
    marks = []
    with torch.no_grad(), HostWork() as work:
        for _ in chunk_latents(student, conditions, poses):
            marks.append((work.syncs, work.copies))
    return [(s1 - s0, c1 - c0) for (s0, c0), (s1, c1) in zip(marks, marks[1:], strict=False)]


@pytest.mark.parametrize("family, attention", CASES)
def test_a_streamed_chunk_reads_nothing_back_and_copies_nothing_per_pass(family, attention,
                                                                         monkeypatch):
    """What `bench render` reports as syncs_per_chunk and h2d_copies_per_chunk (issue 30,
    item 5), for every family and attention: a streamed chunk never makes the host wait
    (no `.item()`, `nonzero` …), and its host→device copies (pose maps, refilled plans) are
    per chunk: two more denoising passes per chunk add none."""
    counts = {}
    for extra in (0, 2):
        student = make_student(family, attention)
        _, conditions, _, poses = make_inputs(family, student, 10)
        levels = student.levels()
        monkeypatch.setattr(student, "levels", lambda levels=levels, extra=extra:
                            levels[:1] * extra + levels)
        counts[extra] = _host_work_per_chunk(student, conditions, poses)
    assert len(counts[0]) == 4 and all(syncs == 0 for syncs, _ in counts[0] + counts[2])
    assert counts[2] == counts[0]


# ------------------------------------------------------------------ the toy family, CLI


@pytest.fixture
def toy_registered():
    from posecast import families

    families.register(toy_family.FAMILY)
    yield
    families._families.pop("toy", None)


def test_a_family_defined_in_the_tests_distils_resumes_and_renders_through_the_cli(
        run_cli, tmp_path, toy_registered, synthetic_dataset, speech_path, portrait_path):
    """`posecast distill` and `posecast render` know nothing of the toy family but its
    config.json name: a toy teacher distils (ODE pairs, DMD, the shared loop's checkpoints),
    two steps then --resume give the straight run's bytes, and the student renders an MP4
    of the audio's length."""
    from safetensors.torch import load_file

    from posecast.media import load_audio
    from posecast.media.ffmpeg import iter_video_frames
    from posecast.motion import frame_count

    torch.manual_seed(0)
    teacher = toy_family.write_folder(tmp_path / "teacher", toy_family.ToyNet())
    flags = ["--teacher", teacher, "--steps", "2", "--chunk", "2", "--window", "4",
             "--init-steps", "1", "--ode-pairs", "1", "--critic-updates", "1",
             "--batch-size", "1", "--checkpoint-every", "1", "--region-loss-weight", "0.5",
             "--device", "cpu"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    result = run_cli("distill", synthetic_dataset, "--output", straight, "--max-steps", "3", *flags)
    assert result.code == 0, result.stderr
    assert run_cli("distill", synthetic_dataset, "--output", split, "--max-steps", "1",
                   *flags).code == 0
    assert run_cli("distill", synthetic_dataset, "--output", split, "--max-steps", "3",
                   "--resume", *flags).code == 0
    a, b = (load_file(folder / "model.safetensors") for folder in (straight, split))
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    log = [json.loads(line) for line in (straight / "train_log.jsonl").open()]
    assert [entry["phase"] for entry in log] == ["init", "dmd", "dmd", "dmd"]
    assert all(entry["losses"]["region"] > 0 for entry in log[1:])
    assert not torch.equal(a["weights"], load_file(teacher / "model.safetensors")["weights"])

    video = tmp_path / "toy.mp4"
    result = run_cli("render", speech_path, portrait_path, "-o", video, "--model", straight,
                     "--device", "cpu")
    assert result.code == 0, result.stderr
    frames = list(iter_video_frames(video))
    assert len(frames) == frame_count(load_audio(speech_path).duration, 25.0)
    assert frames[0].shape == (32, 32, 3)

    result = run_cli("distill", synthetic_dataset, "--output", tmp_path / "again", *flags,
                     "--fast-decoder", tmp_path)
    assert result.code == 2 and "toy students decode" in result.stderr
    assert not (tmp_path / "again").exists()
