"""Distillation on CPU: a tiny trained teacher into a 2-step causal student."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_only_the_student_moved, torchrun
from safetensors.torch import load_file

from posecast.config import preset
from posecast.data.clips import ClipDataset
from posecast.dit.codecs import make_codec
from posecast.dit.distill import DitDistillation, prepare_window, student_config
from posecast.dit.pretrained import from_pretrained, load_config
from posecast.dit.student import DitStudent
from posecast.errors import UsageError
from posecast.families import distill
from posecast.pose.regions import Region, region_masks
from posecast.train.distill import (
    DistillConfig,
    dmd_gradient,
    dmd_loss,
    dmd_scores,
    stored_pair_loss,
)
from posecast.train.distributed import Distributed
from posecast.train.region_loss import (
    REGION_BITS,
    RegionWeights,
    batch_region_bits,
    edge_error,
    region_reconstruction_loss,
    weights_from_bits,
)

QUICK = dict(student_steps=2, chunk=2, window=4, init_steps=6, ode_pairs=2, ode_steps=4,
             max_steps=6, critic_updates=3, batch_size=2, learning_rate=1e-4,
             critic_learning_rate=1e-4, init_learning_rate=1e-3, checkpoint_every=4, seed=3)


def _run(teacher, settings, student=None) -> DitDistillation:
    """A DiT distillation run on the CPU, its student replaced by `student` when given."""
    run = DitDistillation(str(teacher), settings, Distributed(0, 1, torch.device("cpu")))
    if student is not None:
        run.student = DitStudent(student, codec=run.codec)
    return run


def _log(folder):
    return [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]


def test_distillation_trains_both_models_in_the_configured_ratio(tmp_path, synthetic_dataset,
                                                                 trained_tiny):
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    teacher, _ = trained_tiny
    # every optimiser step of the run, as (optimiser, whether it changed its parameters), and
    # the phase of each finished step between them: counted here, not by the trainer
    events, before = [], {}

    def parameters(optimizer):
        return [p for group in optimizer.param_groups for p in group["params"]]

    def pre(optimizer, args, kwargs):
        before[optimizer] = [p.detach().clone() for p in parameters(optimizer)]

    def post(optimizer, args, kwargs):
        changed = [not torch.equal(old, new) for old, new in
                   zip(before.pop(optimizer), parameters(optimizer), strict=True)]
        events.append((optimizer, any(changed)))

    hooks = [register_optimizer_step_pre_hook(pre), register_optimizer_step_post_hook(post)]
    try:
        out = distill(synthetic_dataset, str(teacher), tmp_path / "student",
                      DistillConfig(**QUICK), device="cpu",
                      on_step=lambda report: events.append(report.phase))
    finally:
        for hook in hooks:
            hook.remove()
    log = _log(out)
    assert [line["phase"] for line in log] == ["init"] * 6 + ["dmd"] * 6
    for line in log:
        assert all(math.isfinite(value) for value in line["losses"].values()), line
    assert log[0]["losses"]["ode"] > 0  # a trained teacher's end points are not the noise
    steps, current = [], []  # the optimiser steps taken within each training step
    for event in events:
        if isinstance(event, str):
            steps.append((event, current))
            current = []
        else:
            current.append(event)
    assert [phase for phase, _ in steps] == ["init"] * 6 + ["dmd"] * 6
    init = steps[0][1][0][0]
    assert all(taken == [(init, True)] for _, taken in steps[:6])
    critic, student = steps[6][1][0][0], steps[6][1][-1][0]
    for _, taken in steps[6:]:  # 3 critic steps, then 1 generator step, each changing weights
        assert taken == [(critic, True)] * 3 + [(student, True)]
    # the generator step trains the network the initialisation trained (the student); the
    # critic steps train another one
    assert {id(p) for p in parameters(student)} == {id(p) for p in parameters(init)}
    assert not {id(p) for p in parameters(critic)} & {id(p) for p in parameters(student)}
    # the optimisers' own step counts: 3 critic steps per generator step
    state = load_file(out / "checkpoint" / "state.safetensors")
    assert state["optim.critic.0.step"].item() == 18
    assert state["optim.student.0.step"].item() == 6
    assert state["optim.init.0.step"].item() == 6
    config = load_config(out)  # a model folder `render` can load, with the student's sampler
    assert config.is_student and config.chunk == 2 and config.sampler.steps == 2
    assert config.sampler.cfg == 1.0 and config.attention == "input_aware"
    student = from_pretrained(out)
    assert torch.isfinite(torch.cat([p.flatten() for p in student.parameters()])).all()


def test_region_ode_weight_holds_region_steps_to_the_teacher_pairs(tmp_path, synthetic_dataset,
                                                                 trained_tiny):
    """Region steps with region_ode_weight also regress onto the stored ODE pair: they log its
    loss, and leave the student nearer the pair than region steps alone from the same start."""
    teacher, _ = trained_tiny
    settings = dict(QUICK, init_steps=1, ode_pairs=1, max_steps=0, region_steps=3,
                    init_learning_rate=3e-3)
    anchored_settings = DistillConfig(**settings, region_ode_weight=1000.0)
    students = {}
    for name, run_settings in (("plain", DistillConfig(**settings)),
                               ("anchored", anchored_settings)):
        out = distill(synthetic_dataset, str(teacher), tmp_path / name, run_settings,
                      device="cpu")
        students[name] = (from_pretrained(out), _log(out))
    assert all(set(entry["losses"]) == {"region", "ode"} and entry["losses"]["ode"] > 0
               for entry in students["anchored"][1][1:])
    assert all(set(entry["losses"]) == {"region"} for entry in students["plain"][1][1:])

    def pair_loss(student):  # the same draw of noise and timesteps for both students
        config = student.config
        data = ClipDataset(synthetic_dataset, config.height, config.width)
        with torch.no_grad():
            return stored_pair_loss(_run(teacher, anchored_settings, student), data,
                                    tmp_path / "anchored/ode_pairs",
                                    torch.Generator().manual_seed(0)).item()
    assert pair_loss(students["anchored"][0]) < 0.8 * pair_loss(students["plain"][0])
    with pytest.raises(UsageError, match="region_ode_weight"):
        DistillConfig(**dict(settings, init_steps=0), region_ode_weight=1.0)


def test_region_steps_train_the_student_alone_after_dmd(tmp_path, synthetic_dataset,
                                                       trained_tiny):
    teacher, _ = trained_tiny
    settings = dict(QUICK, init_steps=1, max_steps=1, checkpoint_every=1)
    out = distill(synthetic_dataset, str(teacher), tmp_path / "student",
                  DistillConfig(**settings), device="cpu")
    after_dmd = load_file(out / "checkpoint" / "state.safetensors")
    # --resume with region steps extends the run by a third stage
    distill(synthetic_dataset, str(teacher), out,
            DistillConfig(**settings, region_steps=2), resume=True, device="cpu")
    log = _log(out)
    assert [line["phase"] for line in log] == ["init", "dmd", "region", "region"]
    assert all(set(line["losses"]) == {"region"} and line["losses"]["region"] > 0
               for line in log[2:])
    assert log[-1]["generator_updates"] == 1 and log[-1]["critic_updates"] == 3
    state = load_file(out / "checkpoint" / "state.safetensors")
    assert_only_the_student_moved(state, after_dmd)
    # the ODE stage's optimiser took the region steps, restarted (its moments from the ODE
    # steps forgotten); the DMD one did not
    assert state["optim.init.0.step"].item() == 2
    assert state["optim.student.0.step"].item() == 1


def test_a_run_killed_after_a_checkpoint_resumes_exactly(tmp_path, synthetic_dataset,
                                                         trained_tiny):
    teacher, _ = trained_tiny
    settings = DistillConfig(**{**QUICK, "init_steps": 2, "max_steps": 5, "checkpoint_every": 3})
    straight = distill(synthetic_dataset, str(teacher), tmp_path / "straight", settings,
                       device="cpu")

    def kill_after_step_4(report):
        if report.step == 4:  # the checkpoint of step 3 is on disk, step 4's work is lost
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill(synthetic_dataset, str(teacher), tmp_path / "split", settings, device="cpu",
                on_step=kill_after_step_4)
    split = distill(synthetic_dataset, str(teacher), tmp_path / "split", settings,
                    resume=True, device="cpu")
    a, b = _log(straight), _log(split)
    assert [line["step"] for line in b] == [line["step"] for line in a]  # step 4 logged once
    assert [line["losses"] for line in b[3:]] == [line["losses"] for line in a[3:]]  # redone
    first, second = (load_file(folder / "checkpoint" / "state.safetensors")
                     for folder in (straight, split))
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key  # students, critics, optimisers


def _window(dataset, config, seed=0, teacher_config=None):
    """A batch of two windows of `config.window` frames, with masks for `teacher_config`."""
    data = ClipDataset(dataset, config.height, config.width)
    batch = data.sample(2, config.window, torch.Generator().manual_seed(seed))
    return prepare_window(batch, make_codec(config.codec), teacher_config or preset("tiny"),
                          torch.device("cpu"))


def test_region_weights_change_the_dmd_gradient_exactly_inside_the_masks(synthetic_dataset,
                                                                         trained_tiny):
    settings = DistillConfig(**QUICK)
    run = _run(trained_tiny[0], settings)
    with torch.no_grad():  # a critic that differs from the teacher, as after training
        for p in run.critic.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    window = _window(synthetic_dataset, run.config, teacher_config=run.teacher.config)
    sample = torch.randn(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    weights = weights_from_bits(batch_region_bits(window.poses, 32, 32), RegionWeights())
    masks_on = weights > 1
    assert masks_on.any() and (~masks_on).any()
    gradients = []
    for w in (None, weights):
        x = sample.clone().requires_grad_(True)
        real, fake = dmd_scores(run, x, window, torch.Generator().manual_seed(9))
        dmd_loss(x, dmd_gradient(x, real, fake, w)).backward()
        gradients.append(x.grad)
    plain, weighted = gradients
    changed = (weighted != plain).any(dim=2, keepdim=True)  # per pixel, over channels
    assert torch.equal(changed, masks_on & (plain != 0).any(dim=2, keepdim=True))
    torch.testing.assert_close(weighted, plain * weights)


def test_the_dmd_gradient_moves_a_sample_towards_the_teachers_prediction(monkeypatch):
    """DMD's generator gradient at a student sample x is ∝ (x̂₀_fake − x̂₀_real): a descent step
    on dmd_loss moves x towards the teacher's (real score's) prediction, away from the critic's
    (fake score's). Here both predictions are known exactly: the teacher predicts a fixed
    target, the critic (which models the student's samples) predicts x itself, each through
    the DiT's velocity (x̂₀ = x_t − t·v), so the step must point straight at the target; a
    flipped sign points straight away from it."""
    from types import SimpleNamespace

    from posecast.dit import distill as dit_distill

    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 3, 8, 8, generator=generator)
    target = torch.randn(x0.shape, generator=generator)
    dit = DitDistillation.__new__(DitDistillation)  # only its maths: no networks are loaded
    dit.teacher, dit.critic = SimpleNamespace(config=preset("tiny")), object()

    def velocity(model, noisy, t, window, cfg):  # x̂₀ = noisy − t·v for the flow's velocity v
        prediction = target if model is dit.teacher else x0
        return (noisy - prediction) / t.view(-1, 1, 1, 1, 1)

    monkeypatch.setattr(dit_distill, "teacher_velocity", velocity)
    run = SimpleNamespace(settings=DistillConfig(), cfg=2.0, score=dit.score,
                          dmd_levels=dit.dmd_levels,
                          student=SimpleNamespace(noisy=lambda clean, level, noise:
                                                  DitStudent.noisy(None, clean, level, noise)))
    pixel_weights = 1 + torch.rand(2, 4, 1, 8, 8, generator=generator)  # region weights ≥ 1
    for weights in (None, pixel_weights):
        x = x0.clone().requires_grad_(True)
        real, fake = dmd_scores(run, x, None, torch.Generator().manual_seed(1))
        dmd_loss(x, dmd_gradient(x, real, fake, weights)).backward()
        step = -x.grad  # gradient descent's direction
        towards = target - x0
        if weights is None:
            assert F.cosine_similarity(step.flatten(), towards.flatten(), dim=0) > 0.999
        else:  # per latent pixel still towards the target, scaled by its weight
            assert ((step * towards) > 0).all()
        nudged = x0 + 1e3 * step
        assert (nudged - target).norm() < (x0 - target).norm()


def test_the_reconstruction_loss_adds_each_regions_own_mean_error():
    # 2 frames of 16×16: lips on 4 pixels of frame 0 and 8 of frame 1, a face block elsewhere
    bits = torch.zeros(2, 16, 16, dtype=torch.uint8)
    bits[0, 2:4, 2:4] = REGION_BITS["lips"]
    bits[1, 2:4, 2:6] = REGION_BITS["lips"]
    bits[:, 10:14, 10:14] = REGION_BITS["face"]
    target = torch.zeros(2, 3, 16, 16)
    alphas = RegionWeights(face=1.0, lips=4.0, hands=2.0, arms=0.5)  # no hands or arms here
    frames = target.clone()
    frames[:, :, 2:4, 2:6] = 0.3  # wrong by 0.3 on the lips and on 4 more pixels of frame 0
    loss = region_reconstruction_loss(frames, target, bits, alphas, ssim_weight=0.0)
    whole = 0.3 * 16 / (2 * 256)
    torch.testing.assert_close(loss, torch.tensor(whole + 4.0 * 0.3))  # face: no error
    # the lips term is a mean over the lips: the same error on more lip pixels weighs the same
    bits[0, 2:4, 2:6] = REGION_BITS["lips"]
    torch.testing.assert_close(region_reconstruction_loss(frames, target, bits, alphas, 0.0),
                               loss)
    # a region the batch does not show adds nothing (no 0/0)
    assert torch.isfinite(region_reconstruction_loss(frames, target, torch.zeros_like(bits),
                                                     alphas)).item()
    torch.testing.assert_close(
        region_reconstruction_loss(frames, target, torch.zeros_like(bits), alphas, 0.0),
        torch.tensor(whole))


# Boxes in the pixels of a 16 × 24 (w × h) frame, inclusive (x0, y0, x1, y1), per frame: at
# this size the regions' dilation (2 % of 24 px) is below half a pixel, so each region is
# exactly its box. The lips lie inside the face, the left hand overlaps the torso in frame 0
# and moves to the top right in frame 1; no elbows, so no arms.
PULL_BOXES = [{"face": (4, 1, 11, 8), "lips": (6, 5, 9, 6), "body": (3, 10, 12, 23),
               "left_hand": (11, 15, 15, 19), "right_hand": (0, 12, 2, 16)},
              {"face": (4, 1, 11, 8), "lips": (6, 5, 9, 6), "body": (3, 10, 12, 23),
               "left_hand": (12, 2, 15, 6), "right_hand": (0, 12, 2, 16)}]


def _boxed_person(scale: float = 4.0):
    """Keypoints (in a frame `scale` times the raster's size) whose face, lips and hands are
    the corners of their PULL_BOXES and whose shoulders and hips are the torso's corners."""
    import numpy as np

    from posecast.pose.face_mesh import LIP_OUTLINE
    from posecast.pose.keypoints import (
        LEFT_HIP,
        LEFT_SHOULDER,
        RIGHT_HIP,
        RIGHT_SHOULDER,
        Keypoints,
    )

    def corners(box):
        x0, y0, x1, y1 = box
        return scale * np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], np.float32)

    kp = Keypoints.empty(len(PULL_BOXES), width=int(16 * scale), height=int(24 * scale))
    body, face = kp.body.copy(), kp.face.copy()
    hands = {"left_hand": kp.left_hand.copy(), "right_hand": kp.right_hand.copy()}
    for t, boxes in enumerate(PULL_BOXES):
        face[t, :, :2] = corners(boxes["face"])[np.arange(face.shape[1]) % 4]
        face[t, list(LIP_OUTLINE), :2] = corners(boxes["lips"])[np.arange(len(LIP_OUTLINE)) % 4]
        face[t, :, 2] = 1.0
        for part, points in hands.items():
            points[t, :, :2] = corners(boxes[part])[np.arange(points.shape[1]) % 4]
            points[t, :, 2] = 1.0
        for joint, xy in zip((RIGHT_SHOULDER, LEFT_SHOULDER, LEFT_HIP, RIGHT_HIP),
                             corners(boxes["body"]), strict=True):
            body[t, joint] = (*xy, 1.0)
    return Keypoints(body, face, hands["left_hand"], hands["right_hand"], 25.0, kp.width,
                     kp.height)


def test_the_reconstruction_loss_pulls_hardest_inside_the_regions():
    """The L1 part of the region loss pulls each pixel by 1/(all pixels) + Σ α_r/|r| over the
    weighted regions r covering it. The oracle's regions are the boxes the keypoints were
    drawn from (not the code's masks): face, lips, both hands, and no arms (the torso is no
    weighted region, so a torso drawn as arms would pull where the oracle says it must not)."""
    alphas = RegionWeights(face=1.0, lips=2.0, hands=4.0, arms=8.0)
    bits = batch_region_bits([_boxed_person()], 24, 16)[0]  # (2, 24, 16)
    target = torch.rand(2, 3, 24, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    frames = (target + 0.3 * torch.randn(target.shape, generator=torch.Generator()
                                         .manual_seed(2))).requires_grad_(True)
    region_reconstruction_loss(frames, target, bits, alphas, 0.0).backward()
    pull = frames.grad.abs().sum(1)  # (N, H, W): the L1 gradient's size at each pixel
    inside = {name: torch.zeros(2, 24, 16, dtype=torch.bool) for name in ("face", "lips",
                                                                          "hands")}
    for t, boxes in enumerate(PULL_BOXES):
        for name, parts in (("face", ["face"]), ("lips", ["lips"]),
                            ("hands", ["left_hand", "right_hand"])):
            for part in parts:
                x0, y0, x1, y1 = boxes[part]
                inside[name][t, y0:y1 + 1, x0:x1 + 1] = True
    expected = torch.full(pull.shape, 1 / pull.numel())
    for name, mask in inside.items():
        expected[mask] += getattr(alphas, name) / mask.sum()
    torch.testing.assert_close(pull, expected)
    assert len(torch.unique(expected)) == 4  # background, face, face + lips, hands


def test_the_edge_term_charges_a_patch_grid_that_the_pixel_error_does_not_see():
    # a smooth ramp, and two outputs 0.1 away from it at every pixel: one shifted as a whole,
    # one with every 4×4 patch shifted up or down (a patch grid); the per-pixel error is the
    # same for both, the edge term only for the grid
    ramp = torch.linspace(-0.8, 0.8, 16).expand(1, 3, 16, 16)
    signs = torch.randint(0, 2, (4, 4), generator=torch.Generator().manual_seed(0)) * 2 - 1
    signs[0, :2] = torch.tensor([1, -1])  # neighbouring patches differ at least once
    grid = ramp + 0.1 * signs.repeat_interleave(4, 0).repeat_interleave(4, 1)
    bits = torch.zeros(1, 16, 16, dtype=torch.uint8)
    alphas = RegionWeights()
    for output in (ramp + 0.1, grid):
        torch.testing.assert_close(region_reconstruction_loss(output, ramp, bits, alphas, 0.0),
                                   torch.tensor(0.1))
    assert edge_error(ramp + 0.1, ramp).item() < 1e-6
    # a jump of 0.2 on each of the 4 pixel rows (columns) of a border between unlike patches,
    # among the 16 × 15 neighbouring pairs of each direction
    across_columns = 4 * (signs.diff(dim=1) != 0).sum() * 0.2 / (16 * 15)
    across_rows = 4 * (signs.diff(dim=0) != 0).sum() * 0.2 / (16 * 15)
    torch.testing.assert_close(edge_error(grid, ramp), (across_columns + across_rows) / 2)
    with_edges = region_reconstruction_loss(grid, ramp, bits, alphas, 0.0, edge_weight=2.0)
    torch.testing.assert_close(with_edges, 0.1 + 2.0 * edge_error(grid, ramp))


def test_the_weight_map_covers_face_and_hands(synthetic_dataset):
    config = preset("tiny", chunk=2)
    window = _window(synthetic_dataset, config)
    poses = window.poses[0]
    weights = weights_from_bits(batch_region_bits([poses], 32, 32),
                                RegionWeights(face=1, lips=0, hands=2, arms=0))[0, 0, 0]
    masks = region_masks(poses, 0, 32, 32)
    hands = torch.from_numpy(masks[Region.LEFT_HAND] | masks[Region.RIGHT_HAND])
    face = torch.from_numpy(masks[Region.FACE])
    expected = 1 + face.float() + 2 * hands.float()
    torch.testing.assert_close(weights, expected)


def test_the_cli_distils_from_a_config_file_with_flags_on_top(run_cli, tmp_path,
                                                              synthetic_dataset, trained_tiny):
    settings = tmp_path / "distill.json"
    settings.write_text(json.dumps({**QUICK, "max_steps": 50, "init_steps": 1,
                                    "region_weights": {"hands": 3.0}}))
    out = tmp_path / "student"
    args = ["distill", synthetic_dataset, "--teacher", trained_tiny[0], "--output", out,
            "--config", settings, "--device", "cpu"]
    result = run_cli(*args, "--max-steps", "1", "--region-alpha", "face=0.5")
    assert result.code == 0, result.stderr
    saved = json.loads((out / "checkpoint" / "state.json").read_text())["distill_config"]
    assert saved["max_steps"] == 1 and saved["init_steps"] == 1 and saved["chunk"] == 2
    assert saved["region_weights"] == {"face": 0.5, "lips": 1.0, "hands": 3.0, "arms": 0.5}
    assert len(_log(out)) == 2
    assert run_cli(*args, "--max-steps", "1").code == 2  # used folder, no --resume
    result = run_cli(*args, "--max-steps", "2", "--resume")
    assert result.code == 0, result.stderr
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 3
    result = run_cli(*args, "--max-steps", "2", "--region-steps", "1", "--resume")
    assert result.code == 0, result.stderr
    assert [line["phase"] for line in _log(out)] == ["init", "dmd", "dmd", "region"]
    # stage lengths not given keep the saved run's (not the config file's max_steps 50)
    result = run_cli(*args, "--region-steps", "2", "--resume")
    assert result.code == 0, result.stderr
    assert [line["phase"] for line in _log(out)] == ["init", "dmd", "dmd", "region", "region"]
    saved = json.loads((out / "checkpoint" / "state.json").read_text())["distill_config"]
    assert saved["max_steps"] == 2 and saved["region_steps"] == 2


@pytest.mark.parametrize("extra,message", [
    (["--steps", "9"], "'--steps'"),
    (["--chunk", "3"], "whole number of chunks"),
    (["--region-alpha", "feet=2"], "face, lips, hands or arms"),
    (["--perceptual", "clip=x"], "name among lpips"),
    (["--attention", "sparse"], "input_aware or dense"),
])
def test_bad_distill_options_are_one_line_errors(run_cli, tmp_path, synthetic_dataset,
                                                 trained_tiny, extra, message):
    out = tmp_path / "student"
    result = run_cli("distill", synthetic_dataset, "--teacher", trained_tiny[0], "--output", out,
                     "--device", "cpu", *extra)
    assert result.code == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_a_student_is_not_accepted_as_a_teacher(run_cli, tmp_path, synthetic_dataset,
                                                trained_tiny):
    student = distill(synthetic_dataset, str(trained_tiny[0]), tmp_path / "student",
                      DistillConfig(**{**QUICK, "init_steps": 0, "max_steps": 1}), device="cpu")
    result = run_cli("distill", synthetic_dataset, "--teacher", student, "--output",
                     tmp_path / "again", "--device", "cpu")
    assert result.code == 2 and "itself a causal student" in result.stderr


def test_an_unavailable_perceptual_plugin_is_skipped_with_a_warning(run_cli, tmp_path,
                                                                     synthetic_dataset,
                                                                     trained_tiny):
    out = tmp_path / "student"
    result = run_cli("distill", synthetic_dataset, "--teacher", trained_tiny[0], "--output", out,
                     "--device", "cpu", "--steps", "2", "--chunk", "2", "--init-steps",
                     "0", "--max-steps", "1", "--critic-updates", "1", "--perceptual",
                     "lpips=someone/lpips-weights:0.5")
    assert result.code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "lpips skipped" in warnings[0]


def test_the_lpips_plugin_loads_safetensors_and_measures_inside_the_body(tmp_path,
                                                                         synthetic_dataset):
    from safetensors.torch import save_file

    from posecast.train.perceptual import LPIPS_FILE, LpipsNetwork, load_perceptual_terms

    torch.manual_seed(0)
    folder = tmp_path / "lpips"
    folder.mkdir()
    save_file(LpipsNetwork().state_dict(), folder / LPIPS_FILE)
    heads = {key: value.abs() for key, value in LpipsNetwork().state_dict().items()}
    save_file({**load_file(folder / LPIPS_FILE), **{k: v for k, v in heads.items()
                                                   if k.startswith("heads")}},
              folder / LPIPS_FILE)  # non-negative heads, as trained LPIPS heads are
    (term,) = load_perceptual_terms((f"lpips={folder}:0.5",), torch.device("cpu"))
    assert term.weight == 0.5
    window = _window(synthetic_dataset, preset("tiny", chunk=2))
    frames = window.frames.flatten(0, 1)
    assert term(frames, frames, window.poses).item() == 0
    assert term(frames, frames.flip(-1), window.poses).item() > 0


def _region_error(sample, reference, poses):
    """Mean squared error inside the face and hands of every frame."""
    masks = []
    for window in poses:
        for t in range(len(window)):
            regions = region_masks(window, t, 32, 32)
            masks.append(torch.from_numpy(regions[Region.FACE] | regions[Region.LEFT_HAND]
                                          | regions[Region.RIGHT_HAND]))
    mask = torch.stack(masks).view(sample.shape[0], sample.shape[1], 1, 32, 32).float()
    return float(((sample - reference) ** 2 * mask).sum() / (mask.sum() * 3))


@pytest.mark.slow
def test_distillation_brings_the_student_closer_to_the_teacher_in_face_and_hands(
        tmp_path, synthetic_dataset, trained_tiny):
    """The student's 2-step samples against the teacher's 25-step CFG samples from the same
    noise and conditions, before distillation (teacher weights in the causal student) and
    after (ODE init + DMD with the region loss)."""
    from posecast.dit.denoiser import Denoiser
    from posecast.train.distill import euler_trajectory, student_sample

    teacher = from_pretrained(trained_tiny[0])
    settings = DistillConfig(**{**QUICK, "init_steps": 150, "ode_pairs": 8, "ode_steps": 24,
                                "max_steps": 20, "checkpoint_every": 1000})
    before = Denoiser(student_config(teacher.config, settings)).eval()
    before.load_state_dict(teacher.state_dict())
    after = from_pretrained(distill(synthetic_dataset, str(trained_tiny[0]),
                                    tmp_path / "student", settings, device="cpu"))
    runs = {name: _run(trained_tiny[0], settings, student)
            for name, student in (("before", before), ("after", after))}
    errors = {"before": [], "after": []}
    for seed in range(100, 104):  # windows and noise never used in training
        window = _window(synthetic_dataset, before.config, seed, teacher.config)
        noise = torch.randn(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
        _, reference = euler_trajectory(runs["before"].score(window, None), noise,
                                        torch.linspace(1.0, 0.0, 26).tolist(), [0], 2.0)
        for name, run in runs.items():
            with torch.no_grad():
                sample = student_sample(run, window, torch.Generator().manual_seed(seed),
                                        noise=noise)
            errors[name].append(_region_error(sample, reference, window.poses))
    mean = {name: sum(values) / len(values) for name, values in errors.items()}
    print(f"face+hands MSE to the teacher: before {mean['before']:.4f}, "
          f"after {mean['after']:.4f}")
    assert mean["after"] < 0.8 * mean["before"]


def test_torchrun_with_and_without_fsdp_trains_the_same_student(tmp_path, synthetic_dataset,
                                                                trained_tiny):
    """Two processes with averaged gradients, and the same with FSDP2 sharding, give the
    same student (up to float rounding); the sharded run also resumes."""
    common = [synthetic_dataset, "--teacher", trained_tiny[0], "--steps", "2",
              "--chunk", "2", "--window", "4", "--init-steps", "1", "--ode-pairs", "2",
              "--max-steps", "2", "--critic-updates", "1", "--batch-size", "1",
              "--checkpoint-every", "2", "--device", "cpu"]
    plain = torchrun("distill", [*common, "--output", tmp_path / "plain"], 29531)
    assert plain.returncode == 0, plain.stderr[-3000:]
    sharded = torchrun("distill", [*common, "--output", tmp_path / "fsdp", "--fsdp"], 29532)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("plain", "fsdp"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
    assert len(_log(tmp_path / "fsdp")) == 3  # one process logs
    resumed = torchrun("distill", [*common[:-6], "--max-steps", "3", "--checkpoint-every", "2",
                         "--device", "cpu", "--output", tmp_path / "fsdp", "--fsdp", "--resume"],
                        29533)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((tmp_path / "fsdp" / "checkpoint" / "state.json").read_text())["step"] == 4


@pytest.mark.parametrize("name", ["starter_distill.json", "starter_distill_gpu.json"])
def test_the_starter_recipes_are_valid_distill_settings(name):
    """scripts/train_starter.sh passes starter_distill.json to `posecast distill --config`
    (starter_distill_gpu.json is the recipe for a GPU run): every key must be a DistillConfig
    field, with values it accepts."""
    data = json.loads((Path(__file__).parents[1] / "scripts" / name).read_text())
    settings = DistillConfig.from_dict(data)
    assert {key: getattr(settings, key) for key in data if key != "region_weights"} == \
        {key: value for key, value in data.items() if key != "region_weights"}
    assert dataclasses.asdict(settings.region_weights) == data["region_weights"]
