"""Reliability cases of issue 20 (items 2, 4, 6 and 9) through the real command line: clean
stops, temporaries swept after a kill, batch rows checked up front, any image mode, cut-short
WAVs, outputs that would overwrite an input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import soundfile

POSECAST = [sys.executable, "-m", "posecast"]


def _cut(speech_path: Path, path: Path, seconds: float) -> Path:
    """The first `seconds` of the example speech, as a WAV at `path`."""
    samples, rate = soundfile.read(str(speech_path), dtype="float32")
    soundfile.write(str(path), samples[: int(seconds * rate)], rate)
    return path


def _wait_for_a_file_in(folder: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    """Until something appears in `folder` (the render's temporary output)."""
    deadline = time.monotonic() + seconds
    while not any(folder.iterdir()):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the render never started writing"
        time.sleep(0.05)


# ------------------------------------------------------------------------ item 2: clean stops


def test_sigterm_stops_a_render_with_one_line_and_leaves_nothing(tmp_path, speech_path,
                                                                  portrait_path):
    out, scratch = tmp_path / "out", tmp_path / "tmpdir"
    out.mkdir()
    scratch.mkdir()
    process = subprocess.Popen([*POSECAST, "render", speech_path, portrait_path, "-o",
                                out / "talk.mp4"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TMPDIR": str(scratch)})
    _wait_for_a_file_in(out, process)  # frames are going to ffmpeg now
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 143
    assert stderr == "error: terminated (SIGTERM)\n" and stdout == ""
    assert list(out.iterdir()) == [] and list(scratch.iterdir()) == []


def _killed_writer(script: str, tmpdir: Path) -> None:
    """Run `script` in a fresh Python that SIGKILLs itself inside; it must die by SIGKILL."""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "TMPDIR": str(tmpdir)})
    assert result.returncode == -signal.SIGKILL, result.stderr


def test_what_a_killed_render_left_is_swept_by_the_next_render(tmp_path, run_cli, speech_path,
                                                                portrait_path):
    out, scratch = tmp_path / "out", tmp_path / "tmpdir"
    out.mkdir()
    scratch.mkdir()
    # A render SIGKILLed after its first frame went to ffmpeg: the real writer, killed inside.
    _killed_writer(f"""
import os, signal
import numpy as np
from posecast.media import AudioClip, write_mp4
with write_mp4({str(out / 'talk.mp4')!r}, fps=25, audio=AudioClip(np.zeros(16000, np.float32),
                                                                  16000)) as mp4:
    mp4.write(np.zeros((64, 64, 3), np.uint8))
    os.kill(os.getpid(), signal.SIGKILL)
""", scratch)
    leftovers = list(out.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".")
    assert list(scratch.iterdir()) == []  # the audio went to ffmpeg through a pipe
    # A temporary of a process that still runs (this one) is not touched.
    from posecast.paths import temporary_beside

    running = temporary_beside(out / "talk.mp4")
    short = _cut(speech_path, tmp_path / "short.wav", 0.4)
    result = run_cli("render", short, portrait_path, "-o", out / "talk.mp4")
    assert result.code == 0, result.stderr
    assert sorted(path.name for path in out.iterdir()) == sorted([running.name, "talk.mp4"])


def test_what_a_killed_training_left_is_swept_when_it_resumes(tmp_path, run_cli,
                                                               synthetic_dataset):
    out = tmp_path / "run"
    train = ["train", synthetic_dataset, "--out", out, "--preset", "tiny", "--max-steps", "2",
             "--checkpoint-every", "1", "--batch-size", "1", "--device", "cpu"]
    # SIGKILL while the second checkpoint is being written: its temporary folder stays.
    _killed_writer(f"""
import os, signal, sys
from posecast import cli
from posecast.train import checkpoint
saved = checkpoint.save_file
def save_or_die(tensors, path):
    if (path.parent.parent / "checkpoint").exists():
        os.kill(os.getpid(), signal.SIGKILL)
    saved(tensors, path)
checkpoint.save_file = save_or_die
sys.argv = ["posecast", *{[str(arg) for arg in train]!r}]
cli.main()
""", tmp_path)
    def temporaries():
        return [path.name for path in out.iterdir() if path.name.startswith(".")]

    assert len(temporaries()) == 1
    result = run_cli(*train, "--resume")
    assert result.code == 0, result.stderr
    assert temporaries() == []
