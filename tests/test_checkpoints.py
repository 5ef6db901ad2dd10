"""Damaged checkpoints and diverged runs (issue 20, item 7): a checkpoint's tensor file carries
its sha256 in state.json and is verified on resume; a run never writes non-finite weights."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from posecast.errors import PosecastError


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, synthetic_dataset):
    """A tiny teacher run of 2 steps with a checkpoint, as `posecast train` leaves it."""
    from posecast.config import preset
    from posecast.dit.train import TrainConfig, train_teacher

    out = tmp_path_factory.mktemp("run") / "teacher"
    train_teacher(synthetic_dataset, out, preset("tiny"),
                  TrainConfig(max_steps=2, batch_size=2, checkpoint_every=1), device="cpu")
    return out


def _copy(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def _snapshot(out) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in
            ("model.safetensors", "config.json", "checkpoint/state.json",
             "checkpoint/state.safetensors")}


def _resume(run_cli, dataset, out):
    return run_cli("train", dataset, "--output", out, "--preset", "tiny", "--resume",
                   "--max-steps", "4", "--device", "cpu")


def _cut_short(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _changed_at_the_same_size(path):
    """Bytes changed inside the tensor data (NaN patterns), the size kept: safetensors itself
    reads this without complaint."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_cut_short, _changed_at_the_same_size])
def test_resume_from_a_damaged_tensor_file_is_one_line_and_keeps_the_model(
        run_cli, tmp_path, synthetic_dataset, trained_run, damage):
    """Was a SafetensorError traceback (cut short), or a resumed run logging NaN losses that
    exited 0 and overwrote model.safetensors with NaN weights (changed bytes)."""
    out = _copy(trained_run, tmp_path)
    damage(out / "checkpoint" / "state.safetensors")
    before = _snapshot(out)
    result = _resume(run_cli, synthetic_dataset, out)
    lines = result.stderr.strip().splitlines()
    assert result.code == 1 and len(lines) == 1, result.stderr
    assert "damaged checkpoint" in lines[0] and "state.safetensors" in lines[0], lines[0]
    assert "--overwrite" in lines[0]
    assert _snapshot(out) == before  # nothing rewritten, no step logged
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 2


def test_an_intact_checkpoint_holds_its_checksum_and_resumes(run_cli, tmp_path,
                                                            synthetic_dataset, trained_run):
    import hashlib

    out = _copy(trained_run, tmp_path)
    meta = json.loads((out / "checkpoint" / "state.json").read_text())
    digest = hashlib.sha256((out / "checkpoint" / "state.safetensors").read_bytes()).hexdigest()
    assert meta["sha256"] == {"state.safetensors": digest}
    result = _resume(run_cli, synthetic_dataset, out)
    assert result.code == 0, result.stderr
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 4


def test_a_diverging_run_stops_with_one_line_and_keeps_the_last_good_model(
        run_cli, tmp_path, monkeypatch, synthetic_dataset, trained_run):
    """The weights turn NaN after the first resumed step (as a diverging run's do): no
    checkpoint or model is written from them, the previous ones stay, exit 1 with one line."""
    from posecast.train import loop

    out = _copy(trained_run, tmp_path)
    before = _snapshot(out)
    apply_gradients = loop.apply_gradients

    def diverging(loss, module, optimizer, grad_clip):
        apply_gradients(loss, module, optimizer, grad_clip)
        with torch.no_grad():
            next(module.parameters()).fill_(float("nan"))

    monkeypatch.setattr(loop, "apply_gradients", diverging)
    result = _resume(run_cli, synthetic_dataset, out)
    lines = result.stderr.strip().splitlines()
    assert result.code == 1 and len(lines) == 1, result.stderr
    assert "step 3" in lines[0] and "NaN or infinite" in lines[0], lines[0]
    assert "the last checkpoint is kept" in lines[0]
    assert _snapshot(out) == before


def test_save_pretrained_never_writes_non_finite_weights(tmp_path):
    from posecast.config import preset
    from posecast.dit.denoiser import Denoiser
    from posecast.dit.pretrained import save_pretrained

    model = Denoiser(preset("tiny"))
    save_pretrained(model, tmp_path / "m")
    before = (tmp_path / "m" / "model.safetensors").read_bytes()
    with torch.no_grad():
        list(model.parameters())[-1][0] = float("inf")
    with pytest.raises(PosecastError, match="NaN or infinite values"):
        save_pretrained(model, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before


def test_a_resumed_run_logs_every_step_once(run_cli, tmp_path, synthetic_dataset):
    """A run killed after its last checkpoint has logged steps the resumed run repeats (and
    perhaps half a line): after --resume the log holds each step exactly once."""
    out = tmp_path / "teacher"
    args = ["train", synthetic_dataset, "--preset", "tiny", "--output", out, "--batch-size", "1",
            "--checkpoint-every", "2", "--device", "cpu"]
    assert run_cli(*args, "--max-steps", "2").code == 0
    log = out / "train_log.jsonl"
    with log.open("a") as killed:  # what the killed run wrote after its checkpoint at step 2
        killed.write(json.dumps({"step": 3, "loss": 1.0}) + "\n" + '{"step": 4, "lo')
    result = run_cli(*args, "--max-steps", "4", "--resume")
    assert result.code == 0, result.stderr
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
