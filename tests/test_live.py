"""`posecast live` end to end: PCM on stdin to fragmented MP4 on stdout (decodable while it
is being written), a file to a file, the page's server (its token, what a browser may send),
and a real browser (headless Chromium) playing the page."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_json, syllables

from posecast.media.ffmpeg import ffmpeg_executable

PORTRAIT = Path(__file__).parent.parent / "examples" / "astronaut.png"


def _decoded_frames(mp4: bytes) -> int:
    """Video frames ffmpeg decodes from (possibly partial) fragmented MP4 bytes."""
    result = subprocess.run([ffmpeg_executable(), "-v", "error", "-i", "pipe:0", "-map", "0:v",
                             "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24",
                             "pipe:1"], input=mp4, capture_output=True)
    return len(result.stdout) // (64 * 64 * 3)


def _audio_seconds(mp4: bytes) -> float:
    result = subprocess.run([ffmpeg_executable(), "-v", "error", "-i", "pipe:0", "-map", "0:a",
                             "-f", "f32le", "-ac", "1", "-ar", "48000", "pipe:1"], input=mp4,
                            capture_output=True)
    return len(result.stdout) / 4 / 48000


def test_pcm_on_stdin_becomes_a_fragmented_mp4_on_stdout():
    """2 s of stereo s16le at 22,050 Hz, written at real-time pace: MP4 bytes come out while
    the speech goes on and ffmpeg decodes what has come so far; at the end the video has
    ceil(2 s × 25) = 50 frames and 2 s of audio; the summary is stderr's last line."""
    rate = 22_050
    mono = syllables(2.0, rate)
    pcm = (np.stack([mono, mono], 1) * 32767).astype("<i2").tobytes()
    process = subprocess.Popen([sys.executable, "-m", "posecast", "live", str(PORTRAIT),
                                "--audio", "-", "--rate", str(rate), "--channels", "2", "-o", "-",
                                "--json", "--device", "cpu"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)

    def speak() -> None:
        step = rate // 50 * 4  # 20 ms of stereo s16
        for start in range(0, len(pcm), step):
            process.stdin.write(pcm[start:start + step])
            process.stdin.flush()
            time.sleep(0.02)
        process.stdin.close()

    threading.Thread(target=speak, daemon=True).start()
    received, partial = bytearray(), None
    for data in iter(lambda: process.stdout.read1(1 << 16), b""):
        received += data
        if partial is None and _decoded_frames(bytes(received)) >= 10:
            partial = (bytes(received), process.poll())  # what a player has mid-speech
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0, stderr
    assert partial is not None and partial[1] is None  # decodable before the process ended
    assert _decoded_frames(bytes(received)) == 50
    assert abs(_audio_seconds(bytes(received)) - 50 / 25) < 0.05
    summary = cli_json(stderr.strip().splitlines()[-1], "live")
    assert summary["frames"] == 50 and summary["outputs"] == []
    assert 0 < summary["latency_p50_s"] <= summary["latency_p95_s"] <= summary["latency_max_s"]
    assert summary["av_offset_s"] <= 1 / 25


def test_a_file_played_live_into_a_file(run_cli, tmp_path):
    import soundfile

    audio, out = tmp_path / "speech.wav", tmp_path / "live.mp4"
    soundfile.write(audio, syllables(1.5, 16_000), 16_000)
    started = time.perf_counter()
    result = run_cli("live", PORTRAIT, "--audio", audio, "-o", out, "--json", "--device", "cpu")
    assert result.code == 0, result.stderr
    assert time.perf_counter() - started >= 1.4  # played at real-time pace
    summary = cli_json(result.stdout, "live")
    assert summary["outputs"] == [str(out)] and summary["frames"] == 38  # ceil(1.5 × 25)
    data = out.read_bytes()
    # the audio lasts as long as the video (1.52 s) to within AAC's priming and last frame
    assert _decoded_frames(data) == 38 and abs(_audio_seconds(data) - 38 / 25) < 0.05
    assert summary["lookahead_s"] == pytest.approx(0.12)


def test_ctrl_c_ends_a_live_session_cleanly(tmp_path, speech_path):
    """Ctrl-C mid-speech, as a terminal sends it (SIGINT to the whole process group, ffmpeg
    included): exit 0, the summary, and an MP4 of what was made so far."""
    import signal

    out = tmp_path / "live.mp4"
    process = subprocess.Popen([sys.executable, "-m", "posecast", "live", str(PORTRAIT),
                                "--audio", str(speech_path), "-o", str(out), "--json",
                                "--device", "cpu"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(4.0)  # start-up, then about 2 s of speech
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    summary = cli_json(stdout, "live")
    assert 10 <= summary["frames"] < 199
    assert _decoded_frames(out.read_bytes()) == summary["frames"]


def test_live_refuses_what_it_cannot_do(run_cli, tmp_path):
    result = run_cli("live", PORTRAIT, "--audio", "-")
    assert result.code == 2 and "nothing to show the video on" in result.stderr
    result = run_cli("live", PORTRAIT, "--mic", "-o", tmp_path / "x.mp4")
    assert result.code == 2 and "--mic takes the browser's microphone" in result.stderr
    result = run_cli("live", PORTRAIT, "--serve", "127.0.0.1:99999", "--audio", "-")
    assert result.code == 2 and "HOST:PORT" in result.stderr
    # a chunk of 4 frames at 25 fps waits 0.12 s for its last frame's audio, 0.12 s more for
    # the motion's look-ahead: a bound under that would hold frames in every chunk
    result = run_cli("live", PORTRAIT, "--audio", PORTRAIT.parent / "speech.wav", "-o",
                     tmp_path / "x.mp4", "--max-latency", "0.3", "--device", "cpu")
    assert result.code == 2 and "needs at least 0.34 s" in result.stderr, result.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_pcm_is_made_playable_and_a_broken_stream_ends_the_audio():
    """NaN and infinities in f32le PCM become silence, loud samples are clipped; a stream
    that fails mid-read ends the audio and says why (the session raises it as one line)."""
    import io

    from posecast.live.sources import PcmSource

    samples = np.array([0.5, np.nan, np.inf, -np.inf, 3.0, -0.25] * 200, "<f4")
    source = PcmSource(io.BytesIO(samples.tobytes()), 16_000, 1, "f32le")
    source.start()
    pieces = []
    while (piece := source.pieces.get(timeout=10)) is not None:
        pieces.append(piece[1])
    heard = np.concatenate(pieces)
    np.testing.assert_array_equal(heard, np.tile([0.5, 0, 0, 0, 1.0, -0.25], 200))
    assert source.error is None

    class Broken(io.RawIOBase):
        def readinto(self, buffer):
            raise OSError(5, "Input/output error")

    source = PcmSource(Broken(), 16_000)
    source.start()
    assert source.pieces.get(timeout=10) is None
    assert "Input/output error" in source.error


# ------------------------------------------------------------------ the server


def _get(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def test_the_page_needs_its_token_and_the_browser_may_send_only_audio():
    import aiohttp

    from posecast.live.server import LiveServer

    server = LiveServer("127.0.0.1", 0, 25.0, token="secret_token", mic=True)
    base = server.start().split("?")[0]
    server.send_box("ftyp", b"\0\0\0\x08ftyp")
    server.send_box("moov", b"\0\0\0\x08moov")
    try:
        assert _get(base)[0] == 403 and _get(base + "page.js")[0] == 403
        assert _get(base + "?token=wrong")[0] == 403
        assert _get(base + "?token=%C3%A9")[0] == 403  # not ASCII: refused, not a crash
        status, page = _get(base + "?token=secret_token")
        assert status == 200 and 'src="page.js?token=secret_token"' in page

        async def talk() -> None:
            async with aiohttp.ClientSession() as session, \
                    session.ws_connect(base.replace("http", "ws") + "ws"):
                pytest.fail("a socket without the token was accepted")
        with pytest.raises(aiohttp.WSServerHandshakeError):
            asyncio.run(talk())

        async def speak() -> tuple[dict, bytes]:
            url = base.replace("http", "ws") + "ws?token=secret_token"
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(url) as socket:
                    hello = json.loads((await socket.receive(timeout=10)).data)
                    init = (await socket.receive(timeout=10)).data
                    await socket.send_bytes(np.zeros(480, "<f4").tobytes())  # no rate yet
                    closed = await socket.receive(timeout=10)
                async with session.ws_connect(url) as socket:
                    await socket.receive(timeout=10)
                    await socket.receive(timeout=10)
                    await socket.send_str(json.dumps({"audio_rate": 48000}))
                    await socket.send_bytes(np.full(4800, 0.5, "<f4").tobytes())  # 0.1 s
                    await socket.send_str(json.dumps({"report": {"frames_shown": 3}}))
                    await asyncio.sleep(0.3)
                return hello, init, closed.type

        hello, init, closed = asyncio.run(speak())
        assert hello == {"hello": {"codecs": 'video/mp4; codecs="avc1.42E01E, mp4a.40.2"',
                                   "fps": 25.0, "mic": True}}
        assert init == b"\0\0\0\x08ftyp\0\0\0\x08moov"
        assert closed == aiohttp.WSMsgType.CLOSE  # audio before its rate: let go
        assert server.report == {"frames_shown": 3}
        pieces = []
        while not server.source.pieces.empty():
            piece = server.source.pieces.get()
            if piece is None:
                break
            pieces.append(piece[1])
        heard = np.concatenate(pieces)
        assert 1400 <= len(heard) <= 1600  # 0.1 s at 16 kHz (the resampler holds a few)
    finally:
        server.stop()


def test_a_page_without_mic_may_not_send_audio():
    import aiohttp

    from posecast.live.server import LiveServer

    server = LiveServer("127.0.0.1", 0, 25.0)
    url = server.start().replace("http", "ws") + "ws"
    server.send_box("ftyp", b"\0\0\0\x08ftyp")  # the moov comes after the page connects
    threading.Timer(0.3, server.send_box, ("moov", b"\0\0\0\x08moov")).start()

    async def speak():
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as socket:
            await socket.receive(timeout=10)
            init = (await socket.receive(timeout=10)).data
            await socket.send_str(json.dumps({"audio_rate": 48000}))
            await socket.send_bytes(np.zeros(480, "<f4").tobytes())
            return init, (await socket.receive(timeout=10)).type

    try:
        init, closed = asyncio.run(speak())
        assert init == b"\0\0\0\x08ftyp\0\0\0\x08moov"  # never the ftyp alone
        assert closed == aiohttp.WSMsgType.CLOSE
        assert server.source is None
    finally:
        server.stop()


def test_mp4_boxes_come_out_whole_whatever_the_reads():
    from posecast.errors import MediaError
    from posecast.live.fmp4 import Mp4Boxes

    boxes = [b"\0\0\0\x0cftypabcd", b"\0\0\0\x08moov",
             b"\0\0\0\x01mdat" + (24).to_bytes(8, "big") + b"12345678"]
    stream = b"".join(boxes)
    for cut in range(1, len(stream)):
        splitter = Mp4Boxes()
        out = splitter.feed(stream[:cut]) + splitter.feed(stream[cut:])
        assert [box for _, box in out] == boxes
        assert [kind for kind, _ in out] == ["ftyp", "moov", "mdat"]
    # a 64-bit size smaller than its own 16-byte header is ffmpeg's error, said in one line
    with pytest.raises(MediaError, match="malformed"):
        Mp4Boxes().feed(b"\0\0\0\x01mdat" + (12).to_bytes(8, "big") + b"1234")


# ------------------------------------------------------------------ a real browser

from browser import CHROMIUM, Browser  # noqa: E402  (the tests' own Chromium driver)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian's `chromium`; .ci/run "
                    "installs it)")
def test_a_browser_plays_the_live_page(tmp_path, speech_path):
    """Headless Chromium opens the page that `posecast live --audio FILE --serve` serves and
    plays it; its own report (frames shown, latency from audio due to frame shown) reaches
    the summary. A screenshot mid-speech goes to $POSECAST_SCREENSHOT when set (the README's)."""
    import soundfile

    samples, rate = soundfile.read(speech_path, dtype="float32")
    audio = tmp_path / "speech.wav"
    soundfile.write(audio, samples[:int(4.0 * rate)], rate)  # 4 s of the bundled speech
    live = subprocess.Popen([sys.executable, "-m", "posecast", "live", str(PORTRAIT),
                             "--audio", str(audio), "--serve", "127.0.0.1:0", "--json",
                             "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = live.stderr.readline()
        assert line.startswith("open http://127.0.0.1:"), line
        page = line.split()[1]
        browser = Browser(tmp_path / "chromium")
        try:
            browser.open(page)
            time.sleep(2.5)
            screenshot = browser.screenshot()
            (tmp_path / "page.png").write_bytes(screenshot)
            if os.environ.get("POSECAST_SCREENSHOT"):
                Path(os.environ["POSECAST_SCREENSHOT"]).write_bytes(screenshot)
            stdout, stderr = live.communicate(timeout=60)
        finally:
            browser.close()
    finally:
        if live.poll() is None:
            live.kill()
    assert live.returncode == 0, stderr
    summary = cli_json(stdout, "live")
    report = summary["page"]
    assert summary["frames"] == 100
    assert report["frames_shown"] >= 0.8 * summary["frames"], report
    assert report["frames_timed"] >= 0.5 * summary["frames"], report
    assert 0 < report["latency_p50_s"] <= report["latency_p95_s"] < 5, report
    assert screenshot.startswith(b"\x89PNG")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian's `chromium`; .ci/run "
                    "installs it)")
def test_a_browser_microphone_drives_the_portrait(tmp_path, speech_path):
    """`--mic`: Chromium's fake microphone plays the bundled speech into the page, the page
    sends it, the portrait talks back in the same page; closing the page ends the session."""
    live = subprocess.Popen([sys.executable, "-m", "posecast", "live", str(PORTRAIT), "--mic",
                             "--serve", "127.0.0.1:0", "--json", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        page = live.stderr.readline().split()[1]
        browser = Browser(tmp_path / "chromium", (
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={speech_path}"))
        try:
            browser.open(page + "?mic=auto")
            time.sleep(5.0)
        finally:
            browser.close()  # the speaking page goes: the audio is over
        stdout, stderr = live.communicate(timeout=60)
    finally:
        if live.poll() is None:
            live.kill()
    assert live.returncode == 0, stderr
    summary = cli_json(stdout, "live")
    assert summary["frames"] >= 50, summary  # 2 s or more of the 5 s spoken
    assert summary["page"]["mic_seconds_sent"] >= 2.0, summary["page"]
    assert summary["page"]["frames_shown"] >= 25, summary["page"]


# ------------------------------------------------------------------ the loop on its clock


@pytest.fixture(scope="module")
def starter_renderer():
    import torch

    from posecast.assets import starter_model
    from posecast.families import load_renderer

    return load_renderer(str(starter_model()), torch.device("cpu"))


def _session(renderer, source, **settings):
    from posecast.live.session import LiveSession
    from posecast.render import read_portrait

    session = LiveSession(renderer, read_portrait(PORTRAIT), source, 25.0, **settings)
    written = []
    figures = session.run(lambda frame, samples, index, due: written.append(
        (index, len(samples), time.perf_counter())))
    return session, figures, written


def test_a_slow_machine_drops_frames_but_keeps_time(starter_renderer, monkeypatch):
    """A student 2.5× slower than real time: frames are dropped to stay within the latency
    bound (plus the chunk that noticed), and still every frame of the audio is written, each
    with its own 1/25 s of audio."""
    from posecast.live.sources import FileSource
    from posecast.motion.features import SAMPLE_RATE

    chunks = starter_renderer.chunks

    def slow(*args, **kwargs):
        for chunk in chunks(*args, **kwargs):
            time.sleep(0.4)  # a chunk of 4 frames is 0.16 s of video
            yield chunk

    monkeypatch.setattr(starter_renderer, "chunks", slow)
    source = FileSource(PORTRAIT.parent / "speech.wav")
    source.samples = source.samples[:3 * SAMPLE_RATE]
    session, figures, written = _session(starter_renderer, source, max_latency=0.6)
    assert figures["frames"] == len(written) == 75
    assert [index for index, _, _ in written] == list(range(75))
    assert all(count == 640 for _, count, _ in written)
    assert figures["frames_dropped"] > 20
    assert figures["latency_max_s"] < 0.6 + 0.4 + 0.2
    assert figures["av_offset_s"] <= 1 / 25


def test_a_pause_in_live_audio_is_silence_and_the_video_goes_on(starter_renderer):
    """1 s of speech, 1 s with nothing pushed, 1 s of speech: silence stands in FILL_AFTER
    into the pause, so the pause's frames are sent in its time (without the silence they
    would wait for the speech after it, 0.5 s later or more), and the video covers speech and
    pause."""
    from posecast.live.session import FILL_AFTER
    from posecast.live.sources import PushSource

    source = PushSource()
    speech = syllables(1.0, 16_000)

    def speak() -> None:
        started = time.perf_counter()
        for second in (0, 2):  # speech in seconds 0-1 and 2-3
            for piece, start in enumerate(range(0, len(speech), 320)):
                due = started + second + (piece + 1) * 0.02
                time.sleep(max(0.0, due - time.perf_counter()))
                source.push(speech[start:start + 320], 16_000)
        source.end()

    threading.Thread(target=speak, daemon=True).start()
    session, figures, written = _session(starter_renderer, source)
    assert 1.0 - FILL_AFTER - 0.1 <= session.silence <= 1.0
    assert figures["frames"] == int(np.ceil((2.0 + session.silence) * 25 - 1e-6))
    sent = {index: at - written[0][2] for index, _, at in written}
    for index in range(30, 41):  # frames of 1.2-1.6 s: in the pause
        assert sent[index] < index / 25 + 0.45, (index, sent[index])


@pytest.mark.soak
def test_ten_minutes_live_keep_time_and_memory_flat(starter_renderer):
    """A 10-minute soak (`pytest -m soak`, not in the default run: it takes 10 minutes): speech
    and pauses pushed at real-time pace; every frame is sent, memory (resident) grows by less
    than 50 MB between the first minute and the tenth, and latency stays bounded (on an idle
    machine: what else runs takes the student's CPU)."""
    import resource

    from posecast.live.sources import PushSource

    minutes = float(os.environ.get("POSECAST_SOAK_MINUTES", "10"))
    source, speech = PushSource(), syllables(4.0, 16_000)
    resident = {}

    def speak() -> None:
        started = time.perf_counter()
        for piece in range(int(minutes * 60 / 0.02)):
            if piece % 500 < 400:  # 8 s of speech, then 2 s of pause
                start = (piece % 200) * 320
                source.push(speech[start:start + 320], 16_000)
            if piece == int(60 / 0.02):
                resident["first minute"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            time.sleep(max(0.0, started + (piece + 1) * 0.02 - time.perf_counter()))
        source.end()

    threading.Thread(target=speak, daemon=True).start()
    session, figures, written = _session(starter_renderer, source)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - resident["first minute"]) / 1024
    print(f"soak: {minutes:g} min, {figures}, peak resident grew {grown:.1f} MB after minute 1")
    assert figures["frames"] == len(written) >= minutes * 60 * 25 - 25
    assert grown < 50, f"{grown:.0f} MB"
    assert figures["latency_p95_s"] < 1.0
