"""A fuzz corpus of bad inputs for every command (issue 20): broken audio, images, pose files,
model folders, configs, CSVs, option values and paths. Each case builds its bad input in a
fresh folder, runs `posecast …` in this process, and checks the CLI's promise for a known
failure: exit 1 (bad content) or 2 (bad command line), exactly one line on stderr,
`error: …`, naming what is wrong, no traceback, and nothing left on disk (no new file, no
input changed). Two commands print named notices first, allowed by their case: `import
mimicmotion` its licence lines, `train` a "skipped CLIP: why" line per unusable clip.

Option values the parser itself refuses (`--fps -3`, an unknown option) are one line too, tested
in test_cli.py (test_option_errors_are_one_line_like_every_other_error); every case here passes
the parser.
"""

from __future__ import annotations

import json
import shutil
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SPEECH, PORTRAIT = EXAMPLES / "speech.wav", EXAMPLES / "astronaut.png"
POSES = EXAMPLES / "astronaut_poses.npz"
NOISE = bytes(np.random.default_rng(20).integers(0, 256, 4096, dtype=np.uint8))


# ------------------------------------------------------------------ bad inputs, made in `tmp`


def empty(tmp: Path, name: str) -> Path:
    (tmp / name).write_bytes(b"")
    return tmp / name


def noise(tmp: Path, name: str) -> Path:
    """Random bytes under a name that promises something else (.wav, .png, .npz, .mp4 …)."""
    (tmp / name).write_bytes(NOISE)
    return tmp / name


def truncated(tmp: Path, name: str, source: Path, keep: float = 0.3) -> Path:
    data = source.read_bytes()
    (tmp / name).write_bytes(data[: int(len(data) * keep)])
    return tmp / name


def folder(tmp: Path, name: str) -> Path:
    (tmp / name).mkdir()
    return tmp / name


def folder_of_noise(tmp: Path) -> Path:
    """A folder of two "clips" that are random bytes."""
    clips = folder(tmp, "clips")
    noise(clips, "a.mp4"), noise(clips, "b.mp4")
    return clips


def silent_wav(tmp: Path, name: str = "silent.wav") -> Path:
    """A well-formed 16 kHz WAV header with no samples at all."""
    with wave.open(str(tmp / name), "wb") as file:
        file.setnchannels(1), file.setsampwidth(2), file.setframerate(16_000)
        file.writeframes(b"")
    return tmp / name


def float_wav(tmp: Path, bad: float, name: str = "float.wav") -> Path:
    """A 32-bit float WAV of 2 s whose last second is `bad` (NaN or inf)."""
    import soundfile

    samples = (0.1 * np.sin(np.arange(32_000) / 10)).astype(np.float32)
    samples[16_000:] = bad
    soundfile.write(str(tmp / name), samples, 16_000, subtype="FLOAT")
    return tmp / name


def one_hz_wav(tmp: Path, name: str = "slow.wav") -> Path:
    """400 KB of 16-bit samples under a header that says 1 Hz: 55 hours of audio."""
    with wave.open(str(tmp / name), "wb") as file:
        file.setnchannels(1), file.setsampwidth(2), file.setframerate(1)
        file.writeframes(NOISE * 50)
    return tmp / name


def zero_frames(tmp: Path, frames: int = 300_000, name: str = "long.npz") -> Path:
    """A small compressed keypoint file of `frames` all-zero frames (gigabytes once read),
    written piece by piece (the test never holds it whole either)."""
    import zipfile

    from posecast.pose.keypoints import PART_SIZES

    path = tmp / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for part, size in PART_SIZES.items():
            with archive.open(f"{part}.npy", "w", force_zip64=True) as stream:
                np.lib.format.write_array_header_1_0(stream, {
                    "descr": "<f4", "fortran_order": False, "shape": (frames, size, 3)})
                block = np.zeros((1000, size, 3), np.float32).tobytes()
                for _ in range(frames // 1000):
                    stream.write(block)
        for key, value in (("fps", np.float64(25)), ("width", np.int64(512)),
                           ("height", np.int64(512))):
            with archive.open(f"{key}.npy", "w") as stream:
                np.lib.format.write_array(stream, np.asarray(value))
    return path


def blank_png(tmp: Path, name: str = "blank.png") -> Path:
    """A grey picture with nobody in it."""
    from PIL import Image

    Image.new("RGB", (128, 128), (128, 128, 128)).save(tmp / name)
    return tmp / name


def text(tmp: Path, name: str, content: str | bytes) -> Path:
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def poses(tmp: Path, name: str = "poses.npz", **changes) -> Path:
    """The example pose file with some arrays replaced (None: removed)."""
    arrays = dict(np.load(POSES))
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    np.savez(tmp / name, **arrays)
    return tmp / name


def model(tmp: Path, name: str = "model", kind: str = "starter", config: dict | str | None = None,
          weights: bytes | dict | None = None, drop: str | None = None) -> Path:
    """A copy of a bundled model folder with its config.json changed (a dict: keys merged in;
    a string: the file's text), its weights replaced (bytes, or {name: array}) or a file
    removed."""
    from posecast.assets import starter_model

    source = starter_model()
    if kind == "teacher":
        source = source.parent / "starter_teacher"
    path = tmp / name
    shutil.copytree(source, path)
    if isinstance(config, dict):
        merged = {**json.loads((path / "config.json").read_text()), **config}
        (path / "config.json").write_text(json.dumps(merged))
    elif isinstance(config, str):
        (path / "config.json").write_text(config)
    if isinstance(weights, bytes):
        (path / "model.safetensors").write_bytes(weights)
    elif isinstance(weights, dict):
        from safetensors.numpy import save_file

        save_file(weights, str(path / "model.safetensors"))
    if drop:
        (path / drop).unlink()
    return path


def model_with_changed_weights(tmp: Path, change: Callable[[str, np.ndarray], np.ndarray],
                               name: str = "model") -> Path:
    """A copy of the starter student whose every weight is passed through `change(name,
    array)` (a NaN in one tensor, an integer dtype …)."""
    from safetensors.numpy import load_file, save_file

    path = model(tmp, name)
    weights = load_file(str(path / "model.safetensors"))
    save_file({key: change(key, value) for key, value in weights.items()},
              str(path / "model.safetensors"))
    return path


def one_nan(key: str, value: np.ndarray) -> np.ndarray:
    if key.endswith("qkv.weight"):
        value = value.copy()
        value.flat[7] = np.nan
    return value


def motion_model(tmp: Path, name: str = "motion", config: str | None = None,
                 weights: bytes | None = None) -> Path:
    """A folder that claims to be a learned motion model, with a bad config or weights."""
    path = folder(tmp, name)
    (path / "config.json").write_text(config if config is not None else "{}")
    if weights is not None:
        (path / "model.safetensors").write_bytes(weights)
    return path


def dataset_of(tmp: Path, name: str = "data", files: dict[str, bytes] | None = None) -> Path:
    path = folder(tmp, name)
    for file, content in (files or {}).items():
        (path / file).write_bytes(content)
    return path


def under_a_file(tmp: Path, name: str) -> Path:
    """An output path whose parent folder is a regular file (a folder that cannot be made:
    the stand-in for a read-only folder, since the tests may run as root)."""
    (tmp / "not_a_folder").write_text("x")
    return tmp / "not_a_folder" / name


def symlink_to(target: Path, link: Path) -> Path:
    link.symlink_to(target, target_is_directory=True)
    return link


def huge_png(tmp: Path, name: str = "huge.png", side: int = 20_000) -> Path:
    """A PNG whose header says side × side pixels (1.2 GB decoded) in a 100-byte file."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit RGB
    (tmp / name).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                             + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return tmp / name


NESTED = "[" * 100_000 + "]" * 100_000  # valid JSON, too deep for Python's parser


def with_state(run: Path, content: str) -> Path:
    """`run` with a checkpoint/state.json of `content`."""
    (run / "checkpoint").mkdir()
    (run / "checkpoint" / "state.json").write_text(content)
    return run


def video_at(tmp: Path, fps: int, name: str = "fast.mp4") -> Path:
    """A 0.1-second 64×64 test-pattern video at `fps` frames per second."""
    import subprocess

    from posecast.media.ffmpeg import ffmpeg_executable

    subprocess.run([ffmpeg_executable(), "-v", "error", "-f", "lavfi", "-i",
                    f"testsrc=size=64x64:rate={fps}", "-t", "0.1", "-pix_fmt", "yuv420p",
                    str(tmp / name)], check=True)
    return tmp / name


def jobs_csv(tmp: Path, content: str | bytes) -> Path:
    return text(tmp, "jobs.csv", content)


# ----------------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Case:
    id: str
    args: Callable[[Path], list]  # builds the bad input in the folder, returns the arguments
    code: int  # 1: the content of an input is bad; 2: the command line is
    says: str  # a piece of the one-line message: the error is about the bad input
    # lines a command may print before its error, by their start: notices and per-file skips
    notes: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # environment variables set for the run


TINY = object()  # stands for a small random-weight student: a model loads in a blink


def render(*extra):
    return ["render", SPEECH, PORTRAIT, "--device", "cpu", *extra]


def render_tiny(audio, portrait, *extra):
    """Errors found once the model is loaded: load a small one."""
    return ["render", audio, portrait, "--model", TINY, "--device", "cpu", *extra]


def clips(tmp: Path, name: str = "clips") -> Path:
    """A usable dataset: one 32×32 clip of 12 frames with its keypoints."""
    from synthetic import make_synthetic_clips

    make_synthetic_clips(tmp / name, clips=1, size=32, frames=12)
    return tmp / name


MIMICMOTION_NOTES = ("MimicMotion's weights", "Stable Video Diffusion 1.1", "posecast (Apache",
                     "fetching ")


CASES = [
    # --------------------------------------------------------------------------- render: audio
    Case("render-audio-empty", lambda t: render_tiny(empty(t, "a.wav"), PORTRAIT), 1, "a.wav"),
    Case("render-audio-noise-wav", lambda t: render_tiny(noise(t, "a.wav"), PORTRAIT), 1,
         "a.wav"),
    Case("render-audio-noise-mp3", lambda t: render_tiny(noise(t, "a.mp3"), PORTRAIT), 1,
         "a.mp3"),
    Case("render-audio-no-samples", lambda t: render_tiny(silent_wav(t), PORTRAIT), 1,
         "silent.wav"),
    Case("render-audio-truncated", lambda t: render_tiny(truncated(t, "a.wav", SPEECH),
                                                         PORTRAIT), 1, "a.wav"),
    Case("render-audio-nan-samples", lambda t: render_tiny(float_wav(t, np.nan), PORTRAIT), 1,
         "NaN or infinite"),
    # issue 32: bounds read from the header before any decoding
    Case("render-audio-rate-1hz", lambda t: render_tiny(one_hz_wav(t), PORTRAIT), 1,
         "sample rate of 1 Hz"),
    Case("render-audio-over-max-minutes", lambda t: render_tiny(SPEECH, PORTRAIT,
                                                                "--max-minutes", "0.1"), 1,
         "over the limit of 0.1 min"),
    Case("render-poses-fps-huge", lambda t: render_tiny(SPEECH, PORTRAIT, "--poses", poses(
        t, fps=np.float64(1e12))), 1, "fps is 1e+12"),
    Case("render-audio-is-folder", lambda t: ["render", folder(t, "a.wav"), PORTRAIT], 2,
         "a.wav"),
    Case("render-audio-missing", lambda t: ["render", t / "none.wav", PORTRAIT], 2, "none.wav"),
    Case("render-audio-png", lambda t: ["render", PORTRAIT, PORTRAIT, "-o", t / "o.mp4"], 2,
         "astronaut.png"),
    # ------------------------------------------------------------------------ render: portrait
    Case("render-portrait-empty", lambda t: render_tiny(SPEECH, empty(t, "p.png")), 1, "p.png"),
    Case("render-portrait-noise", lambda t: render_tiny(SPEECH, noise(t, "p.png")), 1, "p.png"),
    Case("render-portrait-truncated", lambda t: render_tiny(SPEECH, truncated(
        t, "p.png", PORTRAIT)), 1, "p.png"),
    # issue 35 (item 7): was "unsupported audio type '.png'"
    Case("render-revision-local-folder", lambda t: render("--model", model(t), "--revision",
                                                          "v1"), 2, "is a local folder"),
    Case("render-arguments-swapped", lambda t: ["render", PORTRAIT, SPEECH], 2,
         "the speech comes first"),
    Case("render-portrait-txt", lambda t: ["render", SPEECH, text(t, "p.txt", "a face")], 2,
         "p.txt"),
    Case("render-portrait-folder", lambda t: ["render", SPEECH, folder(t, "p.png")], 2, "p.png"),
    Case("render-portrait-nobody", lambda t: render_tiny(SPEECH, blank_png(t)), 1, "blank.png"),
    # issue 32 (minor): these were tracebacks
    Case("render-portrait-20000-square", lambda t: render_tiny(SPEECH, huge_png(t)), 1,
         "400 megapixels"),
    Case("render-model-config-nested", lambda t: render("--model", model(t, config=NESTED)), 1,
         "config.json"),
    Case("render-ffmpeg-missing", lambda t: render_tiny(SPEECH, PORTRAIT), 1,
         "POSECAST_FFMPEG", env=(("POSECAST_FFMPEG", "/no/such/ffmpeg"),)),
    # --------------------------------------------------------------------------- render: poses
    Case("render-poses-noise", lambda t: render_tiny(SPEECH, PORTRAIT, "--poses", noise(
        t, "p.npz")), 1, "p.npz"),
    Case("render-poses-no-face", lambda t: render_tiny(SPEECH, PORTRAIT, "--poses", poses(
        t, face=None)), 1, "poses.npz"),
    Case("render-poses-wrong-shape", lambda t: render_tiny(SPEECH, PORTRAIT, "--poses", poses(
        t, face=np.zeros((25, 7, 3), np.float32))), 1, "poses.npz"),
    Case("render-poses-nan", lambda t: render_tiny(SPEECH, PORTRAIT, "--poses", poses(
        t, body=np.full((25, 33, 3), np.nan, np.float32))), 1, "poses.npz"),
    Case("render-poses-txt", lambda t: render("--poses", text(t, "p.txt", "x")), 2, "p.txt"),
    # -------------------------------------------------------------------------- render: models
    Case("render-model-missing", lambda t: render("--model", t / "nothing"), 2, "nothing"),
    Case("render-model-empty-folder", lambda t: render("--model", folder(t, "m")), 1, "m"),
    Case("render-model-config-garbage", lambda t: render("--model", model(t, config="{not json")),
         1, "config.json"),
    Case("render-model-config-list", lambda t: render("--model", model(t, config="[1, 2]")), 1,
         "config.json"),
    Case("render-model-heads-zero", lambda t: render("--model", model(t, config={"heads": 0})),
         1, "heads"),
    Case("render-model-depth-string", lambda t: render("--model", model(
        t, config={"depth": "4"})), 1, "depth"),
    Case("render-model-codec-escapes", lambda t: render("--model", model(
        t, config={"codec": {"kind": "vae", "repo": "../../.."}})), 1, "codec.repo"),
    Case("render-model-no-weights", lambda t: render("--model", model(
        t, drop="model.safetensors")), 1, "model.safetensors"),
    Case("render-model-weights-noise", lambda t: render("--model", model(t, weights=NOISE)), 1,
         "model.safetensors"),
    # issue 32: NaN or integer weights rendered an all-black video and exited 0
    Case("render-model-weights-nan", lambda t: render("--model", model_with_changed_weights(
        t, one_nan)), 1, "holds NaN"),
    Case("render-model-weights-integer", lambda t: render("--model", model_with_changed_weights(
        t, lambda key, value: value.astype(np.int32))), 1, "is int32"),
    Case("render-model-weights-wrong-shape", lambda t: render("--model", model(
        t, weights={"blocks.0.attention.qkv.weight": np.zeros((3, 3), np.float32)})), 1,
         "model.safetensors"),
    Case("render-model-teacher", lambda t: render("--model", model(t, kind="teacher")), 2,
         "not a distilled student"),
    Case("render-motion-missing", lambda t: render("--motion", t / "nothing"), 2, "nothing"),
    Case("render-motion-config-garbage", lambda t: render("--motion", motion_model(
        t, config="{oops")), 1, "config.json"),
    # ------------------------------------------------------------------- render: options, paths
    Case("render-size-words", lambda t: render("--size", "big"), 2, "--size"),
    Case("render-size-zero", lambda t: render("--size", "0x0"), 2, "--size"),
    Case("render-size-huge", lambda t: render("--size", "65536x65536"), 2, "--size"),
    Case("render-size-odd", lambda t: render("--size", "63x65"), 2, "--size"),
    Case("render-seed-negative", lambda t: render("--seed", "-5"), 2, "--seed"),
    Case("render-seed-huge", lambda t: render("--seed", str(2**70)), 2, "--seed"),
    Case("render-device-tpu", lambda t: render("--device", "tpu"), 2, "tpu"),
    Case("render-out-no-folder", lambda t: render("-o", t / "no" / "o.mp4"), 2, "does not exist"),
    Case("render-out-under-a-file", lambda t: render("-o", under_a_file(t, "o.mp4")), 2,
         "not_a_folder"),
    Case("render-out-avi", lambda t: render("-o", t / "o.avi"), 2, "o.avi"),
    Case("render-out-is-folder", lambda t: render("-o", folder(t, "o.mp4"), "--overwrite"), 2,
         "o.mp4"),
    Case("render-out-exists", lambda t: render("-o", text(t, "o.mp4", "keep me")), 2,
         "already exists"),
    Case("render-out-is-audio", lambda t: ["render", shutil.copy(SPEECH, t / "s.wav"), PORTRAIT,
                                           "-o", t / "s.wav", "--overwrite"], 2, "input"),
    # -------------------------------------------------------------------------- render: batch
    Case("batch-missing", lambda t: ["render", "--batch", t / "jobs.csv"], 2, "jobs.csv"),
    Case("batch-empty", lambda t: ["render", "--batch", jobs_csv(t, "")], 2, "no jobs"),
    Case("batch-not-utf8", lambda t: ["render", "--batch", jobs_csv(t, b"audio,portrait,output\n"
                                                                    b"\xff\xfe\x00bad,\x81,x\n")],
         2, "jobs.csv"),
    Case("batch-missing-column", lambda t: ["render", "--batch", jobs_csv(
        t, f"audio,portrait\n{SPEECH},{PORTRAIT}\n")], 2, "output"),
    Case("batch-noise", lambda t: ["render", "--batch", noise(t, "jobs.csv")], 2, "jobs.csv"),
    Case("batch-with-inputs", lambda t: ["render", SPEECH, PORTRAIT, "--batch", jobs_csv(
        t, "audio,portrait,output\n")], 2, "--batch"),
    Case("batch-shard-words", lambda t: ["render", "--batch", jobs_csv(
        t, f"audio,portrait,output\n{SPEECH},{PORTRAIT},o.mp4\n"), "--shard", "one"], 2,
         "--shard"),
    Case("batch-shard-out-of-range", lambda t: ["render", "--batch", jobs_csv(
        t, f"audio,portrait,output\n{SPEECH},{PORTRAIT},o.mp4\n"), "--shard", "4/2"], 2,
         "--shard"),
    # --------------------------------------------------------------------------------- teacher
    # issue 35 (item 7): --revision beside a local folder was silently ignored
    Case("teacher-revision-local-folder", lambda t: [
        "teacher", PORTRAIT, "-o", t / "o.mp4", "--poses", POSES, "--model",
        model(t, kind="teacher"), "--revision", "v1"], 2, "is a local folder"),
    Case("teacher-no-poses", lambda t: ["teacher", PORTRAIT, "-o", t / "o.mp4"], 2, "--poses"),
    Case("teacher-poses-noise", lambda t: ["teacher", PORTRAIT, "-o", t / "o.mp4", "--poses",
                                           noise(t, "p.npz")], 1, "p.npz"),
    Case("teacher-driving-noise", lambda t: ["teacher", PORTRAIT, "-o", t / "o.mp4",
                                             "--driving-video", noise(t, "d.mp4")], 1, "d.mp4"),
    Case("teacher-audio-empty", lambda t: ["teacher", PORTRAIT, "-o", t / "o.mp4", "--poses",
                                           POSES, "--audio", empty(t, "a.wav")], 1, "a.wav"),
    Case("teacher-poses-fps-huge", lambda t: ["teacher", PORTRAIT, "-o", t / "o.mp4",
                                               "--poses", poses(t, fps=np.float64(1e12)),
                                               "--audio", SPEECH], 1, "fps is 1e+12"),
    Case("teacher-poses-too-many-frames", lambda t: ["teacher", PORTRAIT, "-o", t / "o.mp4",
                                                      "--poses", zero_frames(t, 100_000)], 1,
         "100000 frames"),
    Case("teacher-audio-rate-1hz", lambda t: ["teacher", PORTRAIT, "-o", t / "o.mp4", "--poses",
                                              POSES, "--audio", one_hz_wav(t)], 1, "1 Hz"),
    Case("teacher-size-odd", lambda t: ["teacher", PORTRAIT, "-o", t / "o.mp4", "--poses",
                                        POSES, "--size", "33x33"], 2, "multiples of 4"),
    Case("teacher-attention-bogus", lambda t: ["teacher", PORTRAIT, "-o", t / "o.mp4", "--poses",
                                               POSES, "--attention", "sideways"], 2, "sideways"),
    Case("teacher-recipe-bogus", lambda t: ["teacher", PORTRAIT, "-o", t / "o.mp4", "--poses",
                                            POSES, "--recipe", "window"], 2, "window"),
    Case("teacher-model-config-garbage", lambda t: [
        "teacher", PORTRAIT, "-o", t / "o.mp4", "--poses", POSES, "--model",
        model(t, kind="teacher", config="\x00\x01")], 1, "config.json"),
    Case("teacher-portrait-noise", lambda t: ["teacher", noise(t, "p.jpg"), "-o", t / "o.mp4",
                                              "--poses", POSES], 1, "p.jpg"),
    # ------------------------------------------------------------------------------- keypoints
    Case("keypoints-image-noise", lambda t: ["keypoints", noise(t, "p.png"), "-o",
                                             t / "k.npz"], 1, "p.png"),
    Case("keypoints-video-empty", lambda t: ["keypoints", empty(t, "v.mp4"), "-o", t / "k.npz"],
         1, "v.mp4"),
    Case("keypoints-video-noise", lambda t: ["keypoints", noise(t, "v.mp4"), "-o", t / "k.npz"],
         1, "v.mp4"),
    Case("keypoints-input-txt", lambda t: ["keypoints", text(t, "p.txt", "x"), "-o",
                                           t / "k.npz"], 2, "p.txt"),
    Case("keypoints-input-missing", lambda t: ["keypoints", t / "none.png", "-o", t / "k.npz"],
         2, "none.png"),
    Case("keypoints-empty-folder", lambda t: ["keypoints", folder(t, "clips"), "-o",
                                              t / "cache"], 2, "clips"),
    Case("keypoints-folder-of-noise", lambda t: ["keypoints", folder_of_noise(t), "-o",
                                                 "cache"], 1, "none of its 2 clips",
         notes=("skipped ",)),
    Case("keypoints-out-json", lambda t: ["keypoints", PORTRAIT, "-o", t / "k.json"], 2,
         "k.json"),
    Case("keypoints-preview-gif", lambda t: ["keypoints", PORTRAIT, "-o", t / "k.npz",
                                             "--preview", t / "p.gif"], 2, "p.gif"),
    Case("keypoints-ffmpeg-missing", lambda t: ["keypoints", video_at(t, 25, "v.mp4"), "-o",
                                                t / "k.npz"], 1, "POSECAST_FFMPEG",
         env=(("POSECAST_FFMPEG", "/no/such/ffmpeg"),)),
    Case("keypoints-video-1000-fps", lambda t: ["keypoints", video_at(t, 1000), "-o",
                                                t / "k.npz"], 1, "1000 frames per second"),
    Case("keypoints-nobody", lambda t: ["keypoints", blank_png(t), "-o", t / "k.npz"], 1,
         "blank.png"),
    # ---------------------------------------------------------------------------------- motion
    Case("motion-arguments-swapped", lambda t: ["motion", PORTRAIT, SPEECH, "-o", t / "p.npz"],
         2, "the speech comes first"),
    Case("motion-audio-empty", lambda t: ["motion", empty(t, "a.wav"), PORTRAIT, "-o",
                                          t / "m.npz"], 1, "a.wav"),
    Case("motion-audio-inf-samples", lambda t: ["motion", float_wav(t, np.inf), PORTRAIT, "-o",
                                                t / "m.npz"], 1, "NaN or infinite"),
    Case("motion-portrait-noise", lambda t: ["motion", SPEECH, noise(t, "p.jpg"), "-o",
                                             t / "m.npz"], 1, "p.jpg"),
    Case("motion-out-txt", lambda t: ["motion", SPEECH, PORTRAIT, "-o", t / "m.txt"], 2,
         "m.txt"),
    Case("motion-model-no-weights", lambda t: ["motion", SPEECH, PORTRAIT, "-o", t / "m.npz",
                                               "--motion", motion_model(t)], 1,
         "not a posecast motion model"),
    Case("motion-model-weights-noise", lambda t: [
        "motion", SPEECH, PORTRAIT, "-o", t / "m.npz", "--motion",
        motion_model(t, config=json.dumps({"kind": "learned"}), weights=NOISE)], 1, "motion"),
    Case("motion-preview-avi", lambda t: ["motion", SPEECH, PORTRAIT, "-o", t / "m.npz",
                                          "--preview", t / "p.avi"], 2, "p.avi"),
    Case("motion-seed-negative", lambda t: ["motion", SPEECH, PORTRAIT, "-o", t / "m.npz",
                                            "--seed", "-1"], 2, "--seed"),
    # ------------------------------------------------------------------------------------ live
    Case("live-portrait-noise", lambda t: ["live", noise(t, "p.png"), "--audio", SPEECH, "-o",
                                           t / "l.mp4"], 1, "p.png"),
    Case("live-audio-noise", lambda t: ["live", PORTRAIT, "--audio", noise(t, "a.wav"), "-o",
                                        t / "l.mp4"], 1, "a.wav"),
    Case("live-audio-missing", lambda t: ["live", PORTRAIT, "--audio", t / "none.wav", "-o",
                                          t / "l.mp4"], 2, "none.wav"),
    Case("live-out-txt", lambda t: ["live", PORTRAIT, "--audio", SPEECH, "-o", t / "l.txt"], 2,
         "l.txt"),
    Case("live-serve-no-port", lambda t: ["live", PORTRAIT, "--audio", SPEECH, "--serve",
                                          "localhost"], 2, "HOST:PORT"),
    Case("live-token-short", lambda t: ["live", PORTRAIT, "--audio", SPEECH, "--serve",
                                        "127.0.0.1:0", "--token", "abc"], 2, "--token"),
    Case("live-pcm-format", lambda t: ["live", PORTRAIT, "--audio", "-", "--format", "u8",
                                       "-o", t / "l.mp4"], 2, "u8"),
    # ---------------------------------------------------------------------------- make-dataset
    Case("make-dataset-out-is-file", lambda t: ["make-dataset", text(t, "out", "x"), "--clips",
                                                "1"], 2, "out"),
    Case("make-dataset-out-under-a-file", lambda t: ["make-dataset", under_a_file(t, "d"),
                                                     "--clips", "1"], 2, "not_a_folder"),
    Case("make-dataset-more-held-out", lambda t: ["make-dataset", t / "d", "--drawn-people",
                                                  "1", "--held-out-people", "3"], 2,
         "held-out"),
    Case("make-dataset-overwrite-stranger", lambda t: ["make-dataset", dataset_of(
        t, "d", {"mine.txt": b"keep"}), "--clips", "1", "--overwrite"], 2,
         "not made by posecast"),
    # issue 32: a browser extension's folder holds a manifest.json too
    Case("make-dataset-overwrite-manifest-stranger", lambda t: ["make-dataset", dataset_of(
        t, "ext", {"manifest.json": b'{"manifest_version": 3}', "background.js": b"//"}),
        "--clips", "1", "--overwrite"], 2, "refusing to delete"),
    # ----------------------------------------------------------------------------------- train
    Case("train-revision-local-folder", lambda t: [
        "train", dataset_of(t), "--init-from", model(t, kind="teacher"), "--revision", "v1",
        "--output", t / "run"], 2, "is a local folder"),
    Case("train-dataset-missing", lambda t: ["train", t / "none", "--output", t / "run"], 2,
         "no such dataset"),
    Case("train-dataset-empty", lambda t: ["train", dataset_of(t), "--output", t / "run"], 2,
         "no video clips"),
    Case("train-dataset-noise-clips", lambda t: ["train", dataset_of(
        t, files={"a.mp4": NOISE, "b.mp4": b""}), "--output", t / "run", "--device", "cpu"], 1,
         "no usable clips", notes=("skipped ",)),
    Case("train-preset-bogus", lambda t: ["train", dataset_of(t), "--output", t / "run",
                                          "--preset", "huge"], 2, "huge"),
    Case("train-learning-rate-nan", lambda t: ["train", dataset_of(t), "--output", t / "run",
                                               "--learning-rate", "nan"], 2, "learning"),
    Case("train-learning-rate-negative", lambda t: ["train", dataset_of(t), "--output", t / "run",
                                                    "--learning-rate", "-1"], 2, "learning"),
    Case("train-region-alpha-bogus", lambda t: ["train", dataset_of(t), "--output", t / "run",
                                                "--region-alpha", "feet=2"], 2, "feet"),
    Case("train-resume-nothing", lambda t: ["train", clips(t), "--output", folder(t, "run"),
                                            "--resume"], 2, "checkpoint"),
    Case("train-init-from-garbage", lambda t: ["train", dataset_of(t), "--output", t / "run",
                                               "--init-from", model(t, kind="teacher",
                                                                    config="{")], 1,
         "config.json"),
    Case("train-out-is-file", lambda t: ["train", clips(t), "--output", text(t, "run", "x")], 2,
         "not a folder"),
    Case("train-overwrite-stranger", lambda t: ["train", clips(t), "--output", dataset_of(
        t, "mine", {"thesis.tex": b"keep"}), "--overwrite"], 2, "refusing to delete"),
    # issue 32: TensorFlow writes an index file named exactly `checkpoint`
    Case("train-overwrite-tensorflow-run", lambda t: ["train", clips(t), "--output", dataset_of(
        t, "tf", {"checkpoint": b'model_checkpoint_path: "ckpt-1"', "ckpt-1.index": b"x"}),
        "--overwrite"], 2, "refusing to delete"),
    # --------------------------------------------------------------------------------- distill
    Case("distill-config-not-json", lambda t: [
        "distill", dataset_of(t), "--teacher", model(t, kind="teacher"), "--output", t / "s",
        "--config", text(t, "c.json", "learning_rate = 1")], 2, "c.json"),
    Case("distill-config-bad-type", lambda t: [
        "distill", dataset_of(t), "--teacher", model(t, kind="teacher"), "--output", t / "s",
        "--config", text(t, "c.json", '{"learning_rate": "abc"}')], 2, "learning_rate"),
    Case("distill-config-unknown-key", lambda t: [
        "distill", dataset_of(t), "--teacher", model(t, kind="teacher"), "--output", t / "s",
        "--config", text(t, "c.json", '{"speed": 11}')], 2, "speed"),
    Case("distill-config-not-utf8", lambda t: [
        "distill", dataset_of(t), "--teacher", model(t, kind="teacher"), "--output", t / "s",
        "--config", text(t, "c.json", b"\xff\xfe{\x00")], 2, "c.json"),
    Case("distill-revision-local-folder", lambda t: [
        "distill", dataset_of(t), "--teacher", model(t, kind="teacher"), "--output", t / "s",
        "--revision", "v1"], 2, "is a local folder"),
    Case("distill-teacher-missing", lambda t: ["distill", dataset_of(t), "--teacher",
                                               t / "nothing", "--output", t / "s"], 2, "nothing"),
    Case("distill-teacher-heads-zero", lambda t: [
        "distill", dataset_of(t), "--teacher", model(t, kind="teacher", config={"heads": 0}),
        "--output", t / "s"], 1, "heads"),
    Case("distill-perceptual-bogus", lambda t: [
        "distill", clips(t), "--teacher", model(t, kind="teacher"), "--output", t / "s",
        "--perceptual", "nonsense"], 2, "perceptual term 'nonsense'"),
    Case("distill-learning-rate-inf", lambda t: [
        "distill", dataset_of(t), "--teacher", model(t, kind="teacher"), "--output", t / "s",
        "--learning-rate", "inf"], 2, "learning"),
    # issue 32: someone's model folder (a model.safetensors beside their own files)
    Case("distill-overwrite-stranger", lambda t: [
        "distill", clips(t), "--teacher", model(t, kind="teacher"), "--output", dataset_of(
            t, "theirs", {"model.safetensors": b"x", "train.py": b"#"}), "--overwrite"], 2,
         "refusing to delete"),
    # ---------------------------------------------------------------------------- train-motion
    Case("train-motion-dataset-empty", lambda t: ["train-motion", dataset_of(t), "--output",
                                                  t / "m"], 2, "data"),
    Case("train-motion-dataset-missing", lambda t: ["train-motion", t / "none", "--output",
                                                    t / "m"], 2, "none"),
    Case("train-motion-overwrite-stranger", lambda t: [
        "train-motion", clips(t), "--output", dataset_of(t, "m", {"train_log.jsonl": b"{}",
                                                                "diary.txt": b"keep"}),
        "--overwrite"], 2, "refusing to delete"),
    Case("train-motion-learning-rate-negative", lambda t: [
        "train-motion", clips(t), "--output", t / "m", "--learning-rate", "-0.1"], 2,
         "learning"),
    # ------------------------------------------------------------------------------------ eval
    Case("eval-outputs-missing", lambda t: ["eval", t / "none", "--references", folder(t, "r")],
         2, "none"),
    Case("eval-outputs-empty", lambda t: ["eval", folder(t, "o"), "--references",
                                          folder(t, "r")], 2, "o"),
    Case("eval-clip-noise", lambda t: ["eval", dataset_of(t, "o", {"a.mp4": NOISE}),
                                       "--references", dataset_of(t, "r", {"a.mp4": NOISE})],
         1, "a.mp4"),
    Case("eval-timings-garbage", lambda t: ["eval", dataset_of(t, "o", {
        "a.mp4": NOISE, "timings.json": b"{fps"}), "--references", folder(t, "r")], 1,
         "timings.json"),
    Case("eval-timings-list", lambda t: ["eval", dataset_of(t, "o", {
        "a.mp4": NOISE, "timings.json": b"[25, 30]"}), "--references", folder(t, "r")], 1,
         "timings.json"),
    Case("eval-timings-rate-text", lambda t: ["eval", dataset_of(t, "o", {
        "a.mp4": NOISE, "timings.json": b'{"a": "fast"}'}), "--references", folder(t, "r")], 1,
         "'a'"),
    Case("eval-out-txt", lambda t: ["eval", folder(t, "o"), "--references", folder(t, "r"),
                                    "-o", t / "scores.txt"], 2, "scores.txt"),
    # ---------------------------------------------------------------------- export and upload
    Case("export-run-missing", lambda t: ["export", t / "none", t / "out"], 2, "none"),
    Case("export-run-empty", lambda t: ["export", folder(t, "run"), t / "out"], 1,
         "not a posecast model or run folder"),
    Case("export-run-config-garbage", lambda t: ["export", model(t, config="]"), t / "out"], 1,
         "config.json"),
    Case("export-weights-noise", lambda t: ["export", model(t, weights=NOISE), t / "out"], 1,
         "not a readable safetensors file"),
    Case("export-out-exists", lambda t: ["export", model(t), folder(t, "out")], 2, "out"),
    Case("export-config-nested", lambda t: ["export", model(t, config=NESTED), t / "out"], 1,
         "config.json"),
    Case("export-state-garbage", lambda t: ["export", with_state(model(t), "[1, 2"),
                                            t / "out"], 1, "state.json"),
    Case("export-state-nested", lambda t: ["export", with_state(model(t), NESTED), t / "out"],
         1, "state.json"),
    Case("export-state-dataset-object", lambda t: [
        "export", with_state(model(t), '{"dataset": {"a": 1}, "step": 3}'), t / "out"], 1,
         "dataset"),
    # issue 32: most app and project folders hold a config.json
    Case("export-overwrite-app-folder", lambda t: ["export", model(t), dataset_of(
        t, "app", {"config.json": b"{}", "index.html": b"<p>"}), "--overwrite"], 2,
         "refusing to delete"),
    Case("export-overwrite-symlink", lambda t: ["export", model(t), symlink_to(
        dataset_of(t, "real", {"config.json": b"{}"}), t / "link"), "--overwrite"], 2,
         "symbolic link"),
    Case("upload-source-missing", lambda t: ["upload", t / "none", "me/model"], 2, "none"),
    Case("upload-weights-noise", lambda t: ["upload", model(t, weights=NOISE), "me/model"], 1,
         "not a readable safetensors file"),
    Case("upload-repo-id-bogus", lambda t: ["upload", model(t), "not a repo id"], 2,
         "not a repo id"),
    # --------------------------------------------------------------------------------- imports
    Case("import-lpips-noise", lambda t: ["import", "lpips", noise(t, "vgg.pth"),
                                          noise(t, "lin.pth"), "-o", t / "out"], 1, "vgg.pth"),
    Case("import-lpips-overwrite-stranger", lambda t: [
        "import", "lpips", noise(t, "vgg.pth"), noise(t, "lin.pth"), "-o", dataset_of(
            t, "w", {"lpips_vgg16.safetensors": b"x", "notes.txt": b"keep"}), "--overwrite"], 2,
         "refusing to delete"),
    Case("import-lpips-text", lambda t: ["import", "lpips", text(t, "vgg.pth", "hello\n"),
                                         text(t, "lin.pth", "hello\n"), "-o", t / "out"], 1,
         "vgg.pth"),
    Case("import-lpips-missing", lambda t: ["import", "lpips", t / "vgg.pth", t / "lin.pth",
                                            "-o", t / "out"], 2, "vgg.pth"),
    Case("import-mimicmotion-svd-missing", lambda t: [
        "import", "mimicmotion", "--svd", t / "svd", "--checkpoint", noise(t, "m.pth"), "-o",
        t / "out"], 2, "no such SVD model folder", notes=MIMICMOTION_NOTES),
    Case("import-mimicmotion-overwrite-stranger", lambda t: [
        "import", "mimicmotion", "--svd", t / "svd", "--checkpoint", noise(t, "m.pth"), "-o",
        dataset_of(t, "app", {"config.json": b"{}", "notes.txt": b"keep"}), "--overwrite"], 2,
         "refusing to delete", notes=MIMICMOTION_NOTES),
    Case("import-mimicmotion-svd-empty", lambda t: [
        "import", "mimicmotion", "--svd", folder(t, "svd"), "--checkpoint",
        noise(t, "m.pth"), "-o", t / "out"], 1, "lacks", notes=MIMICMOTION_NOTES),
    # ----------------------------------------------------------------------------------- bench
    Case("bench-render-keypoints-noise", lambda t: [
        "bench", "render", "--preset", "tiny", "--seconds", "0.2", "--skip-teacher",
        "--device", "cpu", "--portrait-keypoints", noise(t, "k.npz")], 1, "k.npz"),
    Case("bench-render-model-garbage", lambda t: [
        "bench", "render", "--model", model(t, config="{"), "--skip-teacher", "--device",
        "cpu"], 1, "config.json"),
    Case("bench-render-size-words", lambda t: [
        "bench", "render", "--preset", "tiny", "--size", "tall", "--device", "cpu"], 2,
         "--size"),
    Case("bench-attention-poses-noise", lambda t: ["bench", "attention", "--poses",
                                                   noise(t, "p.npz"), "--device", "cpu"], 1,
         "p.npz"),
    Case("bench-attention-block-size-7", lambda t: ["bench", "attention", "--block-size", "7",
                                                    "--device", "cpu"], 2, "multiple of 16"),
    Case("bench-attention-heads-zero", lambda t: ["bench", "attention", "--heads", "0",
                                                  "--device", "cpu"], 2, "--heads"),
    Case("bench-attention-frames-zero", lambda t: ["bench", "attention", "--frames", "0",
                                                   "--device", "cpu"], 2, "--frames"),
    Case("bench-attention-head-dim-negative", lambda t: ["bench", "attention", "--head-dim",
                                                         "-1", "--device", "cpu"], 2,
         "--head-dim"),
    Case("bench-attention-k-frames-words", lambda t: ["bench", "attention", "--k-frames", "x",
                                                      "--device", "cpu"], 2, "--k-frames"),
    Case("bench-attention-grids-empty", lambda t: ["bench", "attention", "--grids", "",
                                                   "--device", "cpu"], 2, "--grids"),
    Case("bench-teacher-preset-bogus", lambda t: ["bench", "teacher", "--preset", "huge",
                                                  "--device", "cpu"], 2, "huge"),
    Case("bench-teacher-size-words", lambda t: ["bench", "teacher", "--size", "tall", "--device",
                                                "cpu"], 2, "--size"),
]


@pytest.fixture(scope="module")
def tiny_random_student(tmp_path_factory) -> Path:
    """The starter student's architecture at its smallest (1 block of width 32), random."""
    import torch

    from posecast.assets import starter_model
    from posecast.config import DenoiserConfig
    from posecast.dit.denoiser import Denoiser
    from posecast.dit.pretrained import save_pretrained

    config = DenoiserConfig.load(starter_model() / "config.json")
    torch.manual_seed(0)
    return save_pretrained(Denoiser(config.replace(hidden_size=32, depth=1, heads=2)),
                           tmp_path_factory.mktemp("tiny") / "student")


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under `root` with its size and modification time (a file changed in place
    shows too)."""
    found = {}
    for path in root.rglob("*"):
        stat = path.lstat()
        found[str(path.relative_to(root))] = (stat.st_size if path.is_file() else -1,
                                              stat.st_mtime_ns)
    return found


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_bad_input_is_one_line_and_leaves_nothing(case, tmp_path, run_cli, monkeypatch,
                                                    tiny_random_student):
    inputs = tmp_path / "in"
    inputs.mkdir()
    args = [tiny_random_student if arg is TINY else arg for arg in case.args(inputs)]
    monkeypatch.chdir(tmp_path)  # a default output would land here and be seen
    for name, value in case.env:
        monkeypatch.setenv(name, value)
    before = _tree(tmp_path)
    result = run_cli(*args)
    *notes, last = result.stderr.splitlines() or [""]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert last.startswith("error: ") and result.stderr.endswith(last + "\n"), result.stderr
    assert all(note.startswith(case.notes) for note in notes) if case.notes else not notes, \
        result.stderr
    assert result.code == case.code, result.stderr
    assert case.says in last, last
    assert result.stdout == ""
    assert _tree(tmp_path) == before


def test_the_corpus_covers_every_command():
    """Each command of `posecast --help` has bad inputs in the corpus, and there are many."""
    import typer.main

    from posecast.cli import app

    group = typer.main.get_group(app)
    commands = set()
    for name, command in group.commands.items():
        subcommands = getattr(command, "commands", None)
        commands |= {f"{name}-{sub}" for sub in subcommands} if subcommands else {name}
    covered = {name for name in commands for case in CASES if case.id.startswith(name)}
    missing = commands - covered
    assert not missing
    assert len(CASES) >= 60 and len({case.id for case in CASES}) == len(CASES)

