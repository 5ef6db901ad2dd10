from __future__ import annotations

import json
import os

import numpy as np
import torch
from conftest import torchrun
from safetensors.torch import load_file

from posecast.config import preset
from posecast.dit.pretrained import from_pretrained
from posecast.dit.train import TrainConfig, train_teacher


def test_tiny_teacher_learns(trained_tiny, synthetic_dataset):
    """Oracles for "it learnt": the saved (EMA) teacher's clean estimate x̂₀ = x_t − t·v of
    its own training windows, noised at t = 0.3, 0.5 and 0.8, has at most half the error of
    not denoising at all (x̂₀ = x_t, what a model that learnt nothing, v = 0, gives) and a
    tenth of pure noise's; and its EMA weights lie between the initial and the raw ones."""
    from posecast.data.clips import ClipDataset
    from posecast.dit.denoiser import Denoiser

    out, losses = trained_tiny
    assert len(losses) == 80 and all(np.isfinite(losses))
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(1, 81))
    model = from_pretrained(out).eval()
    assert model.config == preset("tiny")
    assert (out / "README.md").read_text().startswith("---")

    data = ClipDataset(synthetic_dataset, 32, 32)
    batch = data.sample(6, 4, torch.Generator().manual_seed(5))
    clean = batch["frames"]
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.3, 0.5, 0.8] * 2)
    noisy = (1 - t.view(-1, 1, 1, 1, 1)) * clean + t.view(-1, 1, 1, 1, 1) * noise
    with torch.no_grad():
        velocity = model(noisy, t, batch["reference"], batch["pose_maps"])
    estimate = noisy - t.view(-1, 1, 1, 1, 1) * velocity

    def error(x):  # (6,) mean squared error to the training frames, per window
        return ((x - clean) ** 2).flatten(1).mean(1)

    assert (error(estimate) < 0.5 * error(noisy)).all(), (error(estimate), error(noisy))
    assert (error(estimate) < 0.1 * error(noise)).all(), (error(estimate), error(noise))

    # The EMA (decay d = min(0.999, (1 + k)/(10 + k)), 0.9 at the end) lags the raw weights
    # by about d/(1 − d) = 9 steps; one that took the raw weights' share as its own would lag
    # (1 − d)/d = 1/9 of a step, 81 times less. Measured along the path from the initial
    # weights (seed 0) to the raw ones, and as its distance from the raw weights, the bounds
    # below sit between the two lags (about 4 times short of the right one's, 20 beyond the
    # wrong one's): it stays back by more than 0.5 % of the path and 2 % of its length.
    torch.manual_seed(0)
    initial = torch.cat([p.detach().flatten() for p in Denoiser(preset("tiny")).parameters()])
    state = _weights(out)
    raw = torch.cat([state[f"model.{name}"].flatten() for name, _ in model.named_parameters()])
    ema = torch.cat([p.detach().flatten() for p in model.parameters()])
    path = raw - initial
    along = torch.dot(ema - initial, path) / torch.dot(path, path)
    assert 0.5 < along < 0.995, along
    assert (ema - initial).norm() < path.norm() and (ema - raw).norm() < path.norm()
    assert (ema - raw).norm() > 0.02 * path.norm(), ((ema - raw).norm(), path.norm())


def _weights(folder):
    return load_file(folder / "checkpoint" / "state.safetensors")


def test_resume_continues_exactly(tmp_path, synthetic_dataset):
    settings = dict(batch_size=2, learning_rate=1e-3, checkpoint_every=3, seed=4)
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_teacher(synthetic_dataset, straight, preset("tiny"),
                  TrainConfig(max_steps=6, **settings), device="cpu")
    train_teacher(synthetic_dataset, split, preset("tiny"),
                  TrainConfig(max_steps=3, **settings), device="cpu")
    assert json.loads((split / "checkpoint" / "state.json").read_text())["step"] == 3
    train_teacher(synthetic_dataset, split, preset("tiny"), TrainConfig(max_steps=6, **settings),
                  resume=True, device="cpu")
    a, b = _weights(straight), _weights(split)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bit-exact: model, EMA and optimiser state


def test_the_cli_trains_and_resumes(run_cli, tmp_path, synthetic_dataset):
    out = tmp_path / "teacher"
    args = ["train", synthetic_dataset, "--preset", "tiny", "--output", out, "--batch-size", "2",
            "--checkpoint-every", "2", "--device", "cpu"]
    result = run_cli(*args, "--max-steps", "2", "--region-alpha", "lips=4")
    assert result.code == 0, result.stderr
    result = run_cli(*args, "--max-steps", "2")
    assert result.code == 2 and "--resume" in result.stderr
    result = run_cli(*args, "--max-steps", "4", "--resume")
    assert result.code == 0, result.stderr
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4
    assert state["train_config"]["region_alphas"] == {"lips": 4.0}  # kept by the resume
    result = run_cli(*args, "--overwrite", "--region-alpha", "mouth=2")
    assert result.code == 2 and "face, lips, hands or arms" in result.stderr
    result = run_cli(*args, "--overwrite", "--region-alpha", "lips=-1")
    assert result.code == 2 and "≥ 0" in result.stderr
    assert (out / "checkpoint" / "state.json").exists()  # refused before anything was removed
    result = run_cli("train", tmp_path / "nothing", "--output", tmp_path / "t2", "--device", "cpu")
    assert result.code == 2 and "no such dataset folder" in result.stderr


def test_torchrun_ddp_two_processes(tmp_path, synthetic_dataset):
    out = tmp_path / "ddp"
    result = torchrun("train", [synthetic_dataset, "--preset", "tiny", "--output", out,
                                "--max-steps", "3", "--batch-size", "1", "--device", "cpu"],
                      29517, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 3  # only rank 0 logs
    model = from_pretrained(out)
    assert torch.isfinite(torch.cat([p.flatten() for p in model.parameters()])).all()


def test_torchrun_with_and_without_fsdp_trains_the_same_teacher(tmp_path, synthetic_dataset):
    """`posecast train --fsdp` (FSDP2 on gloo: the model and its EMA sharded block by block)
    gives the DDP run's EMA weights up to float rounding, and resumes."""
    from safetensors.torch import load_file

    common = [synthetic_dataset, "--preset", "tiny", "--max-steps", "2", "--batch-size", "1",
              "--checkpoint-every", "2", "--device", "cpu"]
    plain = torchrun("train", [*common, "--output", tmp_path / "ddp"], 29518, timeout=300)
    assert plain.returncode == 0, plain.stderr[-2000:]
    sharded = torchrun("train", [*common, "--output", tmp_path / "fsdp", "--fsdp"], 29519,
                       timeout=300)
    assert sharded.returncode == 0, sharded.stderr[-2000:]
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("ddp", "fsdp"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
    resumed = torchrun("train", [*common[:4], "3", *common[5:], "--output", tmp_path / "fsdp",
                                 "--fsdp", "--resume"], 29520, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((tmp_path / "fsdp" / "checkpoint" / "state.json").read_text())["step"] \
        == 3


def test_output_inside_the_dataset_is_refused_and_nothing_is_deleted(run_cli, tmp_path,
                                                                      synthetic_dataset):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synthetic_dataset, data)
    before = sorted(p.name for p in data.iterdir())
    for out in (data, data / "model"):
        result = run_cli("train", data, "--output", out, "--overwrite", "--device", "cpu")
        assert result.code == 2 and "outside the dataset" in result.stderr
    assert sorted(p.name for p in data.iterdir()) == before
    result = run_cli("train", data, "--output", tmp_path / "m", "--max-steps", "0")
    assert result.code == 2


def test_resume_survives_a_kill_between_checkpoint_renames(tmp_path, synthetic_dataset):
    out = tmp_path / "run"
    settings = dict(batch_size=2, checkpoint_every=2, seed=1)
    train_teacher(synthetic_dataset, out, preset("tiny"), TrainConfig(max_steps=2, **settings),
                  device="cpu")
    os.replace(out / "checkpoint", out / "checkpoint.old")  # as if killed mid-swap
    train_teacher(synthetic_dataset, out, preset("tiny"), TrainConfig(max_steps=4, **settings),
                  resume=True, device="cpu")
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 4
    assert not (out / "checkpoint.old").exists()
    umask = os.umask(0)
    os.umask(umask)  # made as a temporary folder (0700) with a 0600 safetensors file inside
    assert (out / "checkpoint").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (out / "checkpoint" / "state.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask


def test_resume_without_a_usable_checkpoint_gives_one_line(run_cli, tmp_path,
                                                           synthetic_dataset):
    """Both trainers resume through train.checkpoint.open_for_resume: a missing checkpoint and
    an unreadable state.json each give a one-line error that says what to do."""
    out = tmp_path / "run"
    out.mkdir()
    result = run_cli("train", synthetic_dataset, "--output", out, "--preset", "tiny", "--resume",
                     "--device", "cpu")
    assert result.code == 2 and "no checkpoint to resume from" in result.stderr
    (out / "checkpoint").mkdir()
    (out / "checkpoint" / "state.json").write_text("{ not json")
    for command in (["train", synthetic_dataset, "--preset", "tiny"],
                    ["distill", synthetic_dataset, "--teacher", tmp_path / "unused"]):
        result = run_cli(*command, "--output", out, "--resume", "--device", "cpu")
        assert result.code == 1, result.stderr
        assert "damaged checkpoint" in result.stderr and "--overwrite" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_region_alphas_make_the_teacher_loss_a_weighted_mean(synthetic_dataset):
    """Against a model that predicts zero velocity, the error is (noise − frames)²: with no
    weights the loss is its plain mean, and with a huge lips α it is the mean inside the lips'
    masks (so the masks land on the right frames and pixels, and the mean is normalised)."""
    from posecast.data.clips import ClipDataset
    from posecast.dit.codecs import make_codec
    from posecast.dit.train import flow_matching_loss
    from posecast.pose.regions import lip_mask

    config = preset("tiny")
    data = ClipDataset(synthetic_dataset, config.height, config.width, with_region_bits=True)
    batch = data.sample(2, config.window, torch.Generator().manual_seed(0))
    codec = make_codec(config.codec, torch.device("cpu"))

    def still(noisy, *args, **kwargs):
        return torch.zeros_like(noisy)

    def loss(alphas):
        return flow_matching_loss(still, codec, batch, config, torch.Generator().manual_seed(3),
                                  torch.device("cpu"), alphas).item()

    noise = torch.randn(batch["frames"].shape, generator=torch.Generator().manual_seed(3))
    squared = ((noise - batch["frames"]) ** 2).mean(2)  # (B, W, H, W), channels averaged
    lips = torch.stack([torch.from_numpy(np.stack([lip_mask(poses, t, config.height,
                                                            config.width)
                                                   for t in range(len(poses))]))
                        for poses in batch["poses"]])
    assert lips.any() and not lips.all()
    assert abs(loss({}) - squared.mean().item()) < 1e-5
    assert abs(loss({"lips": 1e7}) - squared[lips].mean().item()) < 1e-3
    assert loss({"lips": 1e7}) != loss({})


def test_overwrite_checks_every_input_first_and_deletes_only_a_posecast_folder(
        run_cli, tmp_path, synthetic_dataset):
    """`train emptyds --output victim --overwrite` used to delete victim/ and only then say the
    dataset had no clips; and any folder at all was deleted. Now an empty dataset is refused
    first, and --overwrite removes only a folder holding a posecast run or model."""
    from posecast.assets import starter_teacher

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work")
    empty = tmp_path / "emptyds"
    empty.mkdir()
    for command in ("train", "distill"):
        extra = ["--teacher", starter_teacher()] if command == "distill" else []
        result = run_cli(command, empty, "--output", victim, "--overwrite", *extra, "--device",
                         "cpu")
        assert result.code == 2 and "no video clips" in result.stderr, result.stderr
        assert (victim / "thesis.tex").read_text() == "years of work"
    result = run_cli("train", synthetic_dataset, "--output", victim, "--overwrite", "--preset",
                     "tiny", "--max-steps", "1", "--device", "cpu")
    assert result.code == 2 and "not made by posecast" in result.stderr
    assert (victim / "thesis.tex").exists()
    run = tmp_path / "run"
    args = ["train", synthetic_dataset, "--output", run, "--preset", "tiny", "--max-steps", "1",
            "--batch-size", "1", "--device", "cpu"]
    assert run_cli(*args).code == 0
    result = run_cli(*args, "--overwrite")  # a posecast run: replaced
    assert result.code == 0, result.stderr
