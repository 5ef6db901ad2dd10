"""Reliability cases of issue 20 (items 2, 4, 6 and 9) through the real command line: clean
stops, temporaries swept after a kill, batch rows checked up front, any image mode, cut-short
WAVs, outputs that would overwrite an input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
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
    jobs = tmp_path / "jobs.csv"  # a batch, so the --json summary is checked too
    jobs.write_text(f"audio,portrait,output\n{speech_path},{portrait_path},out/talk.mp4\n"
                    f"{speech_path},{portrait_path},out/next.mp4\n")
    process = subprocess.Popen([*POSECAST, "render", "--batch", jobs, "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TMPDIR": str(scratch)})
    _wait_for_a_file_in(out, process)  # frames are going to ffmpeg now
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 143
    assert stderr == "error: terminated (SIGTERM)\n"
    summary = json.loads(stdout)
    assert [job["status"] for job in summary["jobs"]] == ["stopped", "stopped"]
    assert summary["ok"] == summary["failed"] == 0 and summary["stopped"] == 2
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


# ------------------------------------------------- item 4 and 9: batch rows checked up front


def _broken_model(folder: Path) -> Path:
    """A copy of the starter model that cannot be built (its config says heads: 0)."""
    from posecast.assets import starter_model

    shutil.copytree(starter_model(), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "heads": 0}))
    return folder


def test_bad_batch_rows_fail_alone_and_the_summary_is_printed(tmp_path, run_cli, speech_path,
                                                              portrait_path, talking_video):
    _cut(speech_path, tmp_path / "short.wav", 0.4)
    shutil.copy(talking_video, tmp_path / "voice.mp4")
    before = (tmp_path / "voice.mp4").read_bytes()
    _broken_model(tmp_path / "broken")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("audio,portrait,output,model,seed\n"
                    f"short.wav,{portrait_path}\n"                           # 1: no output
                    f"short.wav,{portrait_path},a.mp4,broken,\n"             # 2: broken model
                    f"short.wav,{portrait_path},same.mp4,,\n"                # 3 and 4: one output
                    f"short.wav,{portrait_path},same.mp4,,\n"
                    f"voice.mp4,{portrait_path},voice.mp4,,\n"               # 5: output = input
                    f"missing.wav,{portrait_path},b.mp4,,\n"                 # 6: missing input
                    f"short.wav,{portrait_path},c.mp4,,-3\n"                 # 7: bad seed
                    f"short.wav,{portrait_path},good.mp4,,\n")               # 8: fine
    result = run_cli("render", "--batch", jobs, "--json", "--overwrite", "--device", "cpu")
    assert result.code == 1 and "Traceback" not in result.stderr
    summary = json.loads(result.stdout)
    assert [job["status"] for job in summary["jobs"]] == ["failed"] * 7 + ["ok"]
    assert summary["ok"] == 1 and summary["failed"] == 7
    errors = [job.get("error", "") for job in summary["jobs"]]
    assert "no output" in errors[0]
    assert "row(s) 4 write it too" in errors[2] and "row(s) 3 write it too" in errors[3]
    assert "is an input" in errors[4] and "missing.wav" in errors[5] and "-3" in errors[6]
    # each failed row is one line on stderr; only the good row's video exists
    assert sum(line.startswith("error: job ") for line in result.stderr.splitlines()) == 7
    assert sorted(path.name for path in tmp_path.glob("*.mp4")) == ["good.mp4", "voice.mp4"]
    assert (tmp_path / "voice.mp4").read_bytes() == before


# ------------------------------------------------------------- item 9: the smaller cases


def test_output_equal_to_an_input_is_refused_before_anything_is_touched(tmp_path, run_cli,
                                                                         portrait_path,
                                                                         talking_video):
    voice = tmp_path / "voice.mp4"
    shutil.copy(talking_video, voice)
    before = voice.read_bytes()
    result = run_cli("render", voice, portrait_path, "-o", tmp_path / "." / "voice.mp4",
                     "--overwrite", "--device", "cpu")
    assert result.code == 2
    assert result.stderr.endswith("is also an input of this command; write the output to "
                                  "another file\n") and result.stderr.count("\n") == 1
    assert voice.read_bytes() == before and list(tmp_path.iterdir()) == [voice]
    # the other commands whose output could name an input
    portrait = tmp_path / "me.png"
    shutil.copy(portrait_path, portrait)
    for args in (["teacher", portrait, "--driving-video", voice, "-o", voice],
                 ["keypoints", portrait, "-o", tmp_path / "kp.npz", "--preview", portrait],
                 ["motion", voice, portrait, "-o", tmp_path / "poses.npz", "--preview", voice]):
        result = run_cli(*args, "--overwrite")
        assert result.code == 2 and "is also an input" in result.stderr, args
        assert result.stderr.count("\n") == 1, args
    assert voice.read_bytes() == before and portrait.read_bytes() == portrait_path.read_bytes()
    assert sorted(tmp_path.iterdir()) == sorted([voice, portrait])


def test_missing_inputs_are_found_before_the_model_loads(tmp_path, run_cli, portrait_path):
    broken = _broken_model(tmp_path / "broken")  # loading it would fail
    result = run_cli("render", tmp_path / "missing.wav", portrait_path, "-o",
                     tmp_path / "out.mp4", "--model", broken, "--device", "cpu")
    assert result.code == 2 and "missing.wav: no such audio file" in result.stderr
    result = run_cli("render", portrait_path.parent / "speech.wav", portrait_path, "-o",
                     tmp_path / "out.mp4", "--model", broken, "--poses", tmp_path / "none.npz",
                     "--device", "cpu")
    assert result.code == 2 and "none.npz: no such pose file" in result.stderr


def test_a_cut_short_wav_is_one_line_naming_it(tmp_path, run_cli, speech_path, portrait_path):
    cut = tmp_path / "cut.wav"
    cut.write_bytes(speech_path.read_bytes()[:20_000])  # the header still says 7.9 s
    result = run_cli("render", cut, portrait_path, "-o", tmp_path / "out.mp4", "--device", "cpu")
    assert result.code == 1
    assert result.stderr.startswith(f"error: {cut}: the WAV file is cut short")
    assert "promises 7.92 s" in result.stderr and "copy or download it again" in result.stderr
    assert result.stderr.count("\n") == 1  # one line, no empty line before it
    assert list(tmp_path.iterdir()) == [cut]


def test_audio_ffmpeg_cannot_read_is_one_line_with_a_fix(tmp_path, run_cli, portrait_path,
                                                         talking_video):
    from posecast.media.ffmpeg import ffmpeg_executable

    silent = tmp_path / "silent.mp4"  # the test clip without its audio track
    subprocess.run([ffmpeg_executable(), "-loglevel", "error", "-i", talking_video, "-an",
                    "-c", "copy", silent], check=True)
    result = run_cli("render", silent, portrait_path, "-o", tmp_path / "out.mp4", "--device",
                     "cpu")
    assert result.code == 1 and result.stderr == (
        f"error: {silent}: no readable audio (the file has no audio track); give the speech, or "
        "a video with sound\n")
    noise = tmp_path / "noise.mp3"  # the MP3 decoder inside libsndfile prints notes on it
    noise.write_text("not an mp3\n" * 20)
    # its own process: what C code prints on stderr counts too
    result = subprocess.run([*POSECAST, "render", noise, portrait_path, "-o",
                             tmp_path / "out.mp4", "--device", "cpu"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr == (
        f"error: {noise}: no readable audio (not audio or video that ffmpeg can read, or badly "
        "damaged); re-export it as WAV or MP3\n")


# ------------------------------------------------------ item 6: any bit depth and image mode


def _gray_versions(portrait_path: Path, folder: Path) -> tuple[np.ndarray, dict[str, Path]]:
    """The example portrait in 8-bit gray, and the same picture saved in wider modes."""
    from PIL import Image

    gray = np.asarray(Image.open(portrait_path).convert("L"))  # (H, W) uint8
    versions = {
        "I;16 PNG": (Image.fromarray(gray.astype(np.uint16) * 257), "gray16.png"),
        "I;16 TIFF": (Image.fromarray(gray.astype(np.uint16) * 257), "gray16.tiff"),
        "I TIFF": (Image.fromarray(gray.astype(np.int32) * 257, mode="I"), "gray32.tif"),
        "F TIFF in [0, 1]": (Image.fromarray(gray.astype(np.float32) / 255, mode="F"),
                             "float.tiff"),
        "LA PNG": (Image.fromarray(np.stack([gray, np.full_like(gray, 255)], -1), mode="LA"),
                   "gray_alpha.png"),
    }
    paths = {}
    for name, (image, file_name) in versions.items():
        image.save(folder / file_name)
        paths[name] = folder / file_name
    return gray, paths


def test_images_of_any_bit_depth_load_like_their_8_bit_version(tmp_path, portrait_path):
    from PIL import Image

    from posecast.media import load_image

    gray, paths = _gray_versions(portrait_path, tmp_path)
    for name, path in paths.items():
        loaded = load_image(path)
        assert loaded.dtype == np.uint8 and loaded.shape == (*gray.shape, 3), name
        assert np.abs(loaded.astype(int) - gray[..., None]).max() <= 1, name
    # a palette picture with one transparent entry: its colours, and white where transparent
    rgb = np.asarray(Image.open(portrait_path).convert("RGB"))
    quantized = Image.fromarray(rgb).quantize(63)  # entries 0 to 62
    index = np.asarray(quantized).copy()
    index[:40] = 63  # the top rows take entry 63, black and transparent
    palette = Image.fromarray(index, mode="P")
    palette.putpalette(quantized.getpalette()[:63 * 3] + [0, 0, 0])
    palette.save(tmp_path / "palette.png", transparency=63)
    loaded = load_image(tmp_path / "palette.png")
    colours = np.asarray(palette.convert("RGB"))
    assert (loaded[:40] == 255).all() and (loaded[40:] == colours[40:]).all()
    # RGBA: opaque pixels as they are, see-through ones on white
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], -1)
    rgba[:40, :, 3] = 0
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "cutout.png")
    loaded = load_image(tmp_path / "cutout.png")
    assert (loaded[:40] == 255).all() and (loaded[40:] == rgb[40:]).all()


def test_keypoints_of_a_16_bit_gray_portrait_match_its_8_bit_version(tmp_path, run_cli,
                                                                      portrait_path):
    from PIL import Image

    from posecast.pose import Keypoints

    gray, paths = _gray_versions(portrait_path, tmp_path)
    Image.fromarray(gray).save(tmp_path / "gray8.png")
    found = {}
    for name in ("gray8.png", "gray16.png", "float.tiff"):
        result = run_cli("keypoints", tmp_path / name, "-o", tmp_path / f"{name}.npz")
        assert result.code == 0, (name, result.stderr)
        found[name] = Keypoints.load(tmp_path / f"{name}.npz")
    for name in ("gray16.png", "float.tiff"):
        assert np.abs(found[name].face - found["gray8.png"].face).max() < 1.0, name
