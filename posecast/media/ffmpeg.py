"""Every ffmpeg call of posecast: probing and decoding videos, decoding audio, writing MP4.

Commands are built with ffmpeg-python and run from argument lists (never shell strings). The
binary is imageio-ffmpeg's static build unless POSECAST_FFMPEG names another. That build ships
no ffprobe, so `probe_video` reads the stream header ffmpeg prints for `-i`.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

from posecast.errors import InputError, MediaError
from posecast.paths import atomic_output

FFMPEG_ENV = "POSECAST_FFMPEG"
# ffmpeg's internal context before a message, e.g. "[in#0 @ 0x55de16ed70c0] "
_FFMPEG_CONTEXT = re.compile(r"\[[^\]]*? @ 0x[0-9a-f]+\]\s*")


def ffmpeg_executable() -> str:
    """The ffmpeg binary: $POSECAST_FFMPEG, else the one bundled by imageio-ffmpeg."""
    override = os.environ.get(FFMPEG_ENV)
    if override:
        found = shutil.which(override)  # a path, or a name looked up on PATH
        if found is None:
            raise MediaError(f"{FFMPEG_ENV}={override}: no such program (or not executable); "
                             f"unset {FFMPEG_ENV} to use the ffmpeg bundled with posecast")
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_available() -> bool:
    """Whether an ffmpeg binary is found (a bare GPU machine may have none)."""
    try:
        ffmpeg_executable()
    except (MediaError, ImportError, RuntimeError):  # RuntimeError: imageio-ffmpeg's "no binary"
        return False
    return True


def _tail(stderr: bytes | str) -> str:
    """ffmpeg's last message, without its internal context, short enough for an error line."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = [_FFMPEG_CONTEXT.sub("", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line and line != "Conversion failed!"]
    return lines[-1][-200:] if lines else "ffmpeg printed nothing"


def _compile(stream) -> list[str]:
    return stream.global_args("-hide_banner", "-nostdin").compile(cmd=ffmpeg_executable())


def popen_ffmpeg(args: list[str], **kwargs) -> subprocess.Popen:
    try:
        return subprocess.Popen(args, **kwargs)
    except OSError as error:
        raise MediaError(f"cannot run ffmpeg at {args[0]} ({error}); reinstall imageio-ffmpeg or "
                         f"set {FFMPEG_ENV} to a working ffmpeg") from None


class StderrTail:
    """Drains a process's stderr on a thread (a full pipe would stall ffmpeg), keeping the end."""

    def __init__(self, pipe) -> None:
        self._chunks: collections.deque[bytes] = collections.deque(maxlen=16)
        self._thread = threading.Thread(target=self._drain, args=(pipe,), daemon=True)
        self._thread.start()

    def _drain(self, pipe) -> None:
        self._chunks.extend(iter(lambda: pipe.read(4096), b""))

    def text(self) -> str:
        self._thread.join(timeout=5)
        return _tail(b"".join(self._chunks))


def _feed(fd: int, samples: np.ndarray) -> None:
    """Write mono `samples` (N,) into the pipe `fd` as float32 in [-1, 1], 64k at a time (no
    second copy of a long recording), and close it: ffmpeg reads that as the end of the audio.
    A reader that stopped early (ffmpeg failed or was killed) ends the feed quietly; ffmpeg's
    exit status says why."""
    with contextlib.suppress(OSError), open(fd, "wb") as pipe:
        for start in range(0, len(samples), 1 << 16):
            pipe.write(np.clip(samples[start:start + (1 << 16)], -1.0, 1.0).astype("<f4")
                       .tobytes())


# ----------------------------------------------------------------------------------------- probe


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says. `duration` is in seconds (0 when the header gives none)."""

    width: int
    height: int
    fps: float
    duration: float
    has_audio: bool


_VIDEO_STREAM = re.compile(r"Stream #\S+.*?: Video: .*?(\d{2,5})x(\d{2,5})")
_FPS = re.compile(r"(\d+(?:\.\d+)?)(k?)\s*(?:fps|tbr)")  # ffmpeg writes 1000 fps as "1k fps"
_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_ROTATION = re.compile(r"rotat\w* of (-?\d+(?:\.\d+)?) degrees|rotate\s*:\s*(-?\d+)")


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Size (as displayed, rotation applied), frame rate, duration and audio presence."""
    path = Path(path)
    result = subprocess.run([ffmpeg_executable(), "-hide_banner", "-nostdin", "-i", str(path)],
                            capture_output=True, check=False)
    header = result.stderr.decode("utf-8", "replace")
    video_lines = [line for line in header.splitlines() if ": Video: " in line]
    match = _VIDEO_STREAM.search(video_lines[0]) if video_lines else None
    if match is None:
        raise InputError(f"{path}: no video stream could be read (ffmpeg: {_tail(header)}); "
                         "give a video with a picture track, or re-export it as MP4")
    width, height = int(match.group(1)), int(match.group(2))
    fps_match = _FPS.search(video_lines[0])
    fps = float(fps_match.group(1)) * (1000 if fps_match.group(2) else 1) if fps_match else 25.0
    rotation = _ROTATION.search(header)
    if rotation is not None:
        degrees = float(rotation.group(1) or rotation.group(2))
        if round(abs(degrees)) % 180 == 90:  # ffmpeg auto-rotates when decoding
            width, height = height, width
    duration_match = _DURATION.search(header)
    duration = 0.0
    if duration_match:
        hours, minutes, seconds = duration_match.groups()
        duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    has_audio = any(": Audio: " in line for line in header.splitlines())
    return VideoInfo(width, height, fps, duration, has_audio)


# ---------------------------------------------------------------------------------------- decode


def iter_video_frames(path: str | os.PathLike,
                      info: VideoInfo | None = None) -> Iterator[np.ndarray]:
    """Yield a video's frames as (H, W, 3) uint8 RGB arrays, one at a time (memory stays flat)."""
    path = Path(path)
    info = info or probe_video(path)
    args = _compile(ffmpeg.input(str(path)).output("pipe:", format="rawvideo", pix_fmt="rgb24")
                    .global_args("-loglevel", "error"))
    process = popen_ffmpeg(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL)
    stderr = StderrTail(process.stderr)
    frame_bytes = info.width * info.height * 3
    try:
        while True:
            buffer = process.stdout.read(frame_bytes)
            if len(buffer) < frame_bytes:
                break
            yield np.frombuffer(buffer, np.uint8).reshape(info.height, info.width, 3)
    finally:
        process.stdout.close()
        if process.poll() is None:
            process.kill()
        returncode = process.wait()
    if returncode != 0:
        raise MediaError(f"{path}: the video is damaged or cut short (ffmpeg: {stderr.text()}); "
                         "re-export or re-download it")


def decode_audio(path: str | os.PathLike, sample_rate: int, channels: int = 1) -> np.ndarray:
    """Decode the first audio stream of any container ffmpeg reads to float32 at
    `sample_rate`: mono (N,) when `channels` is 1 (ffmpeg mixes), else (N, channels)."""
    path = Path(path)
    args = _compile(ffmpeg.input(str(path)).output(
        "pipe:", format="f32le", acodec="pcm_f32le", ac=channels, ar=sample_rate, vn=None)
        .global_args("-loglevel", "error"))
    result = subprocess.run(args, capture_output=True, stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        stderr = result.stderr.decode("utf-8", "replace")
        if "does not contain any stream" in stderr or "matches no streams" in stderr:
            problem, fix = "the file has no audio track", "give the speech, or a video with sound"
        elif "Invalid data found when processing input" in stderr:
            problem = "not audio or video that ffmpeg can read, or badly damaged"
            fix = "re-export it as WAV or MP3"
        else:
            problem, fix = f"ffmpeg: {_tail(stderr)}", "re-export it as WAV or MP3"
        raise InputError(f"{path}: no readable audio ({problem}); {fix}")
    samples = np.frombuffer(result.stdout, np.float32).copy()
    if channels == 1:
        return samples
    return samples[: len(samples) - len(samples) % channels].reshape(-1, channels)


@dataclass(frozen=True)
class AudioHeader:
    """What an audio stream's header declares (before any decoding). `seconds` is 0 when the
    container gives no duration; `channels` is 0 when ffmpeg names a layout we do not know."""

    sample_rate: int
    channels: int
    seconds: float


_AUDIO_STREAM = re.compile(r": Audio: [^,]*, (\d+) Hz, ([^,]+)")
_LAYOUTS = {"mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "quad": 4, "4.0": 4, "4.1": 5,
            "5.0": 5, "5.0(side)": 5, "5.1": 6, "5.1(side)": 6, "6.1": 7, "7.1": 8}


def probe_audio(path: str | os.PathLike) -> AudioHeader | None:
    """The first audio stream's rate, channels and the container's duration, from the header
    ffmpeg prints for `-i` (no decoding); None when ffmpeg finds no audio stream."""
    result = subprocess.run(
        [ffmpeg_executable(), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True, check=False)
    header = result.stderr.decode("utf-8", "replace")
    match = _AUDIO_STREAM.search(header)
    if match is None:
        return None
    layout = match.group(2).strip()
    counted = re.fullmatch(r"(\d+) channels.*", layout)
    channels = int(counted.group(1)) if counted else _LAYOUTS.get(layout.split(" ")[0], 0)
    duration = _DURATION.search(header)
    seconds = 0.0
    if duration:
        hours, minutes, rest = duration.groups()
        seconds = int(hours) * 3600 + int(minutes) * 60 + float(rest)
    return AudioHeader(int(match.group(1)), channels, seconds)


# ---------------------------------------------------------------------------------------- encode


# The rates ffmpeg's AAC encoder takes; another rate is resampled to 48 kHz.
AAC_SAMPLE_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000,
                    88200, 96000)


class Mp4Stream:
    """An ffmpeg process encoding RGB frames to H.264 (yuv420p) + AAC; made by `write_mp4`."""

    def __init__(self, name: Path, tmp_path: Path, fps: float, audio, crf: int,
                 preset: str) -> None:
        self.name = name  # the user's output path, for messages
        self.fps = float(fps)
        self.frames_written = 0
        # With audio the video is ceil(audio seconds × fps) frames (at least one).
        self.target_frames = \
            max(1, math.ceil(round(audio.duration * self.fps, 6))) if audio is not None else None
        self._tmp_path, self._audio = tmp_path, audio
        self._crf, self._preset = crf, preset
        self._last_frame: np.ndarray | None = None
        self._process: subprocess.Popen | None = None
        self._audio_feed: threading.Thread | None = None

    def _start(self, height: int, width: int) -> None:
        video = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}",
                             framerate=self.fps)
        streams = [video.filter("pad", "ceil(iw/2)*2", "ceil(ih/2)*2")]
        options = dict(vcodec="libx264", pix_fmt="yuv420p", crf=self._crf, preset=self._preset,
                       movflags="+faststart", r=self.fps)
        audio_read = None
        soundtrack = self._audio.source if self._audio is not None else None
        if soundtrack is not None:
            # The user's own recording, at its own rate and channels (the clip is only the
            # 16 kHz mono analysis copy): AAC at 128 kb/s per channel pair.
            audio_input = ffmpeg.input(str(soundtrack.path))
            options.update(audio_bitrate=f"{128 * math.ceil(soundtrack.channels / 2)}k")
            if soundtrack.sample_rate not in AAC_SAMPLE_RATES:
                options.update(ar=48_000)
        elif self._audio is not None:
            # Audio made in code reaches ffmpeg through a second pipe (raw float32 samples,
            # fed by a thread), so nothing is written to a temporary folder a kill would leave.
            audio_read, audio_write = os.pipe()
            audio_input = ffmpeg.input(f"pipe:{audio_read}", format="f32le", ac=1,
                                       ar=self._audio.sample_rate)
            options.update(audio_bitrate="128k")
        if self._audio is not None:
            # apad + an explicit -t: the audio is padded with silence up to the last frame
            # (and a longer recording is cut there).
            streams.append(audio_input.audio.filter("apad"))
            options.update(acodec="aac", t=f"{self.target_frames / self.fps:.6f}")
        args = _compile(ffmpeg.output(*streams, str(self._tmp_path), format="mp4", **options)
                        .global_args("-loglevel", "error", "-y"))
        try:
            self._process = popen_ffmpeg(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE,
                                   pass_fds=() if audio_read is None else (audio_read,))
        except BaseException:
            if audio_read is not None:
                os.close(audio_write)
            raise
        finally:
            if audio_read is not None:
                os.close(audio_read)  # ffmpeg holds its own copy
        if audio_read is not None:
            self._audio_feed = threading.Thread(target=_feed, daemon=True,
                                                args=(audio_write, self._audio.samples))
            self._audio_feed.start()
        self._stderr = StderrTail(self._process.stderr)
        self._shape = (height, width, 3)

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame; every frame has the first frame's size."""
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) frame, got shape {frame.shape}")
        if self._process is None:
            self._start(frame.shape[0], frame.shape[1])
        elif frame.shape != self._shape:
            raise ValueError(f"frame size changed from {self._shape} to {frame.shape}")
        self._last_frame = frame
        if self.target_frames is None or self.frames_written < self.target_frames:
            self._send(frame)

    def _send(self, frame: np.ndarray) -> None:
        try:
            self._process.stdin.write(frame.tobytes())
        except OSError:  # BrokenPipeError: ffmpeg died; its stderr says why
            self._process.wait()
            raise MediaError(f"{self.name}: ffmpeg stopped while encoding "
                             f"({self._stderr.text()})") from None
        self.frames_written += 1

    def finish(self) -> None:
        """Pad to the audio's length, close the pipe and wait for ffmpeg."""
        if self._process is None:
            raise MediaError(f"{self.name}: no frames were produced, so no video was written")
        while self.target_frames is not None and self.frames_written < self.target_frames:
            self._send(self._last_frame)
        with contextlib.suppress(OSError):  # ffmpeg died with frames buffered: see its exit code
            self._process.stdin.close()
        if self._process.wait() != 0:
            raise MediaError(f"{self.name}: ffmpeg failed to write the MP4 ({self._stderr.text()})")

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        if self._audio_feed is not None:  # its pipe's reader is gone, so it ends at once
            self._audio_feed.join(timeout=5)


@contextlib.contextmanager
def write_mp4(path: str | os.PathLike, fps: float, audio=None, crf: int = 18,
              preset: str = "veryfast") -> Iterator[Mp4Stream]:
    """Stream frames into an MP4 at `path`, which appears only when the file is complete.

    Frames go to ffmpeg as they are written, so memory does not grow with length. With `audio`
    (an AudioClip) the video is exactly ceil(audio seconds × fps) frames: missing frames repeat
    the last one, extra frames are dropped, and the audio is padded with silence to the last
    frame, so the file lasts as long as the audio within one frame. A clip read from a file
    (`audio.source`) puts that file's own audio in the MP4, not the mono analysis copy. Odd
    sizes get one black pixel row/column (yuv420p needs even sizes).

        with write_mp4("talk.mp4", fps=25, audio=clip) as mp4:
            for frame in frames:
                mp4.write(frame)
    """
    path = Path(path)
    with atomic_output(path) as tmp_path:
        stream = Mp4Stream(path, tmp_path, fps, audio, crf, preset)
        try:
            yield stream
            stream.finish()
        finally:
            stream.kill()
