"""Shared fixtures: the bundled examples, small generated media, and an in-process CLI runner."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Generated datasets speak with the buzz, not espeak-ng, whether or not this machine has it:
# the suite then makes the same clips everywhere (CI's machine and a fresh one alike), and
# test_dataset.py runs the espeak-ng path with a stand-in program of its own.
os.environ["POSECAST_ESPEAK"] = "none"

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="session")
def portrait_path() -> Path:
    return EXAMPLES / "astronaut.png"


@pytest.fixture(scope="session")
def speech_path() -> Path:
    return EXAMPLES / "speech.wav"


@pytest.fixture(scope="session")
def portrait_keypoints(portrait_path):
    from posecast.pose.extract import extract_image

    return extract_image(portrait_path)


@pytest.fixture(scope="session")
def talking_video(tmp_path_factory, portrait_path) -> Path:
    """A 12-frame, 25 fps clip of the portrait sliding sideways, with a 440 Hz tone."""
    from posecast.media import AudioClip, load_image, write_mp4

    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    image = load_image(portrait_path)[::2, ::2]  # 256 x 256
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(int(0.48 * 16000)) / 16000)).astype(
        np.float32)
    with write_mp4(path, fps=25, audio=AudioClip(tone, 16000)) as mp4:
        for t in range(12):
            mp4.write(np.roll(image, 2 * t, axis=1))
    return path


class CliResult:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr


# issue 35: the one --json shape of every command (README, "Scripting")
RENDER_KEYS = {"model", "revision", "seed", "size", "steps"}


def cli_json(stdout: str, command: str) -> dict:
    """A command's --json stdout, checked against the common shape: exactly one JSON object
    with "command" (its words), "ok" (a bool), "outputs" (a list of paths as text) and
    "posecast_version"; a render's (and each job's of a batch) also says what makes it again."""
    import json

    from posecast.version import __version__

    summary = json.loads(stdout)  # one object, nothing else on stdout
    assert isinstance(summary, dict), summary
    assert summary["command"] == command, summary["command"]
    assert isinstance(summary["ok"], bool), summary["ok"]
    assert isinstance(summary["outputs"], list) and \
        all(isinstance(path, str) for path in summary["outputs"]), summary["outputs"]
    assert summary["posecast_version"] == __version__
    if command in ("render", "teacher"):
        for record in summary.get("jobs", [summary]):
            if record.get("status", "ok") == "ok":
                assert set(record) >= RENDER_KEYS, record
    return summary


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run `posecast ARGS…` in this process through the real entry point (`main`)."""
    from posecast import cli

    def run(*args: str | os.PathLike) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["posecast", *map(str, args)])
        monkeypatch.setitem(cli._debug, "on", False)
        code = 0
        try:
            cli.main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    """Six generated 32×32 clips of 12 frames with their keypoint cache."""
    from synthetic import make_synthetic_clips

    folder = tmp_path_factory.mktemp("dataset")
    make_synthetic_clips(folder, clips=6, size=32, frames=12, seed=0)
    return folder


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory, synthetic_dataset):
    """A `tiny` teacher trained for 80 steps, and its per-step losses."""
    from posecast.config import preset
    from posecast.dit.train import TrainConfig, train_teacher

    out = tmp_path_factory.mktemp("teacher") / "tiny"
    losses = []
    train_teacher(synthetic_dataset, out, preset("tiny"),
                  TrainConfig(max_steps=80, batch_size=4, learning_rate=2e-3,
                              checkpoint_every=40, seed=0),
                  device="cpu", on_step=lambda report: losses.append(report.loss))
    return out, losses


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory, synthetic_dataset, trained_tiny):
    """A 2-step causal student (chunks of 2 frames, 2 frames of cache) distilled briefly
    from the tiny teacher: enough to exercise rendering, not to look good."""
    from posecast.families import distill
    from posecast.train.distill import DistillConfig

    out = tmp_path_factory.mktemp("student") / "tiny"
    return distill(synthetic_dataset, str(trained_tiny[0]), out,
                   DistillConfig(student_steps=2, chunk=2, window=4, init_steps=8, ode_pairs=2,
                                 ode_steps=4, max_steps=2, critic_updates=2, batch_size=2),
                   device="cpu")


def torchrun(command: str, args, port: int, timeout: int = 900):
    """`posecast COMMAND ARGS…` in two CPU processes under torchrun (one thread each), as a
    finished subprocess.CompletedProcess with its text output. `port`: the rendezvous port
    wanted; when something holds it (a worker left by an earlier run), a free one is used.
    A run past `timeout` is killed with its workers (its own process group), so none is left
    holding the port for the next run."""
    import signal
    import socket
    import subprocess

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", str(port), "-m", "posecast", command, *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in [*_descendants(process.pid), process.pid]:  # workers have own sessions
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, stderr = process.communicate(timeout=60)
        raise AssertionError(f"torchrun {command} ran past {timeout} s and was killed with "
                             f"its workers:\n{stderr[-3000:]}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (read from /proc: Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def assert_only_the_student_moved(state: dict, before: dict) -> None:
    """A distillation checkpoint's tensors `state` after region steps against `before` them:
    the critic is as it was, the student is not (the region stage trains the student alone)."""
    import torch

    critic = [key for key in state if key.startswith("critic.")]
    student = [key for key in state if key.startswith("student.")]
    assert critic and student
    assert all(torch.equal(state[key], before[key]) for key in critic)
    assert any(not torch.equal(state[key], before[key]) for key in student)


def syllables(seconds: float, sample_rate: int = 16_000, rate: float = 4.0) -> np.ndarray:
    """Speech-like audio: a 150 Hz buzz with harmonics, loud `rate` times a second."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    buzz = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * rate * t), 0, None) ** 2
    return (0.2 * buzz * envelope).astype(np.float32)


@pytest.fixture(scope="session")
def cospeech_dataset(tmp_path_factory) -> Path:
    """`posecast make-dataset` in small: 8 clips of 64×64 (2 photos, 4 drawn people)."""
    from posecast.data.cospeech import make_cospeech_dataset

    folder = tmp_path_factory.mktemp("cospeech") / "clips"
    make_cospeech_dataset(folder, clips=8, seed=1, size=64, drawn_people=4, held_out_people=1)
    return folder
