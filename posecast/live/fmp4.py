"""Frames and their audio → fragmented MP4, as they come (ffmpeg, H.264 baseline + AAC).

ffmpeg reads RGB frames on stdin and float32 mono samples on a second pipe, and writes an MP4
that needs no seeking: `ftyp` + `moov` first (the init segment), then a `moof` + `mdat`
fragment from each keyframe to the next, written when the next one arrives (x264's
zerolatency: no look-ahead, no B-frames). Every frame is a keyframe (`keyframe_every` 1), so a
fragment is one frame, out one frame later (a chunk's last frame: when the next chunk comes),
and a late-joining viewer starts at once. (ffmpeg's `frag_every_frame` writes a frame sooner
but gets its duration wrong when frames come in bursts: 30-120 "fps" for a 25 fps stream.)
`Mp4Boxes` cuts the byte stream into whole top-level boxes, so a browser's Media Source gets
the init segment and then whole fragments. A player gets H.264 "avc1.42E01E" (baseline,
level 3.0) and AAC-LC "mp4a.40.2" at 48 kHz (its 1,024-sample priming is 21 ms, under a frame).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Callable

import numpy as np

from posecast.errors import MediaError
from posecast.media.ffmpeg import StderrTail, ffmpeg_executable, popen_ffmpeg

CODECS = 'video/mp4; codecs="avc1.42E01E, mp4a.40.2"'


class Mp4Boxes:
    """Bytes in, whole top-level boxes out: `feed(data)` → [(type, box bytes), …]."""

    def __init__(self) -> None:
        self.pending = bytearray()

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        self.pending += data
        boxes = []
        while len(self.pending) >= 8:
            size = int.from_bytes(self.pending[:4], "big")
            kind = self.pending[4:8].decode("latin-1")
            header = 8
            if size == 1:  # a 64-bit size follows the type
                if len(self.pending) < 16:
                    break
                size, header = int.from_bytes(self.pending[8:16], "big"), 16
            if size < header:
                raise MediaError(f"ffmpeg wrote a malformed MP4 box ({kind!r}, {size} bytes)")
            if len(self.pending) < size:
                break
            boxes.append((kind, bytes(self.pending[:size])))
            del self.pending[:size]
        return boxes


class FragmentedMp4:
    """An ffmpeg process: `write(frame, samples)` per frame (the frame's (H, W, 3) uint8
    picture and its 1/fps seconds of 16 kHz audio), `close()` at the end. Every complete box
    goes to `on_box(type, bytes)` from a reader thread, the moment ffmpeg writes it."""

    def __init__(self, width: int, height: int, fps: float, sample_rate: int,
                 on_box: Callable[[str, bytes], None], keyframe_every: int = 1) -> None:
        audio_read, audio_write = os.pipe()
        args = [ffmpeg_executable(), "-hide_banner", "-nostdin", "-loglevel", "error",
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
                "-framerate", f"{fps}", "-i", "pipe:0",
                "-f", "f32le", "-ar", str(sample_rate), "-ac", "1", "-i", f"pipe:{audio_read}",
                "-map", "0:v", "-map", "1:a",
                "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
                "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
                "-profile:v", "baseline", "-level", "3.0", "-pix_fmt", "yuv420p",
                "-g", str(keyframe_every), "-c:a", "aac", "-ar", "48000", "-b:a", "64k",
                "-f", "mp4", "-movflags", "empty_moov+default_base_moof+frag_keyframe",
                "-flush_packets", "1", "pipe:1"]
        try:
            # its own session: a terminal's Ctrl-C reaches posecast alone, which ends ffmpeg
            # by closing its pipes (the fragments made so far stay whole)
            self.process = popen_ffmpeg(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, pass_fds=(audio_read,),
                                        start_new_session=True)
        except BaseException:
            os.close(audio_write)
            raise
        finally:
            os.close(audio_read)  # ffmpeg holds its own copy
        self.audio = open(audio_write, "wb", buffering=0)  # noqa: SIM115 (closed in close())
        self.on_box = on_box
        self.stderr = StderrTail(self.process.stderr)
        self.reader = threading.Thread(target=self._read, name="posecast-fmp4", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        boxes = Mp4Boxes()
        try:
            for data in iter(lambda: self.process.stdout.read1(1 << 16), b""):
                for kind, box in boxes.feed(data):
                    self.on_box(kind, box)
        except Exception:  # nobody reads ffmpeg's output now: end it, so writes fail, not stall
            self.kill()
            raise

    def write(self, frame: np.ndarray, samples: np.ndarray) -> None:
        try:
            self.process.stdin.write(np.ascontiguousarray(frame, np.uint8).tobytes())
            self.process.stdin.flush()
            self.audio.write(np.clip(samples, -1, 1).astype("<f4").tobytes())
        except OSError:  # ffmpeg stopped: its stderr says why
            self.process.wait()
            raise MediaError(f"ffmpeg stopped while encoding the live video "
                             f"({self.stderr.text()})") from None

    def close(self) -> None:
        """Flush what is encoded and wait for ffmpeg and the last boxes."""
        for pipe in (self.audio, self.process.stdin):
            with contextlib.suppress(OSError):
                pipe.close()
        status = self.process.wait()
        self.reader.join()
        if status != 0:
            raise MediaError(f"ffmpeg failed to finish the live video ({self.stderr.text()})")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
