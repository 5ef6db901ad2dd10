"""`posecast live`: a portrait that talks as the speech comes in, shown in a browser as it is
made and/or written as a fragmented MP4 to a file or stdout."""

from __future__ import annotations

import json
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from posecast.assets import starter_model
from posecast.cli.options import (
    Device,
    JsonSummary,
    Overwrite,
    Seed,
    in_panel,
    revision_option,
)
from posecast.cli.ui import json_summary as summary
from posecast.cli.ui import note, print_result, warn
from posecast.errors import UsageError
from posecast.paths import (
    AUDIO_EXTENSIONS,
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    atomic_output,
    require_file,
    require_output,
)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def parse_address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--serve {value}: give HOST:PORT, e.g. 127.0.0.1:8765")
    return host.strip("[]"), int(port)


def live_command(
    portrait: Annotated[Path, typer.Argument(help="The person (PNG, JPEG, WebP, TIFF, or a "
                                             "video: its first frame).", show_default=False)],
    audio: Annotated[str | None, typer.Option(
        "--audio", rich_help_panel="Speech",
        help="Speech: a file, played at real-time pace, or - for raw PCM on stdin "
        "(see --rate, --channels, --format).", show_default=False)] = None,
    mic: Annotated[bool, typer.Option(
        "--mic", rich_help_panel="Speech",
        help="Speech from the microphone of the browser that opens the page "
        "(needs --serve).")] = False,
    serve: Annotated[str | None, typer.Option(
        "--serve", rich_help_panel="Output",
        help="Serve the page at HOST:PORT (e.g. 127.0.0.1:8765; 0 as the port "
        "picks a free one).", show_default=False)] = None,
    output: Annotated[str | None, typer.Option(
        "--output", "-o", rich_help_panel="Output",
        help="Also write the fragmented MP4 here, or to stdout with -.",
        show_default=False)] = None,
    model: Annotated[str | None, typer.Option(
        rich_help_panel="Model",
        help="Student model folder or Hub repo id \\[default: the bundled starter].",
        show_default=False)] = None,
    revision: in_panel(revision_option("--model"), "Model") = None,
    rate: Annotated[int, typer.Option(help="Sample rate of PCM on stdin.", min=8000,
                                      max=192000, rich_help_panel="Speech")] = 16000,
    channels: Annotated[int, typer.Option(help="Channels of PCM on stdin.", min=1, max=8,
                                          rich_help_panel="Speech")] = 1,
    sample_format: Annotated[str, typer.Option(
        "--format", rich_help_panel="Speech",
        help="PCM on stdin: s16le or f32le.")] = "s16le",
    token: Annotated[str | None, typer.Option(
        rich_help_panel="Output",
        help="Require ?token=TOKEN on every request (made for you when --serve is not on "
        "loopback).", show_default=False)] = None,
    max_latency: Annotated[float, typer.Option(
        rich_help_panel="Model",
        help="Seconds a frame may be late before frames are dropped to catch up.", min=0.2,
        max=5.0)] = 1.0,
    fps: Annotated[float, typer.Option(help="Frames per second.", min=1.0, max=120.0,
                                       rich_help_panel="Model")] = 25.0,
    seed: in_panel(Seed, "Model") = 0,
    device: in_panel(Device, "Device") = "auto",
    json_summary: in_panel(JsonSummary, "Output") = False,
    overwrite: in_panel(Overwrite, "Output") = False,
) -> None:
    """Talk, and PORTRAIT talks back as you speak: lips, head, blinks and hand beats made
    chunk by chunk as the audio arrives, shown in a browser and/or written as a fragmented
    MP4, with the latency from audio in to frame out measured.

    Ends at the end of the audio, when the speaking page closes, or on Ctrl-C; the summary
    (with --json, one JSON object: on stderr's last line when stdout carries the video) gives
    latency p50/p95/max, frames made and dropped and the A/V offset.

    [bold]Examples[/bold]

      posecast live portrait.png --audio speech.wav --serve 127.0.0.1:8765

      posecast live portrait.png --mic --serve 127.0.0.1:8765

      tts | posecast live portrait.png --audio - --rate 22050 -o - | ffplay -
    """
    from posecast.devices import pick_device
    from posecast.families import load_renderer
    from posecast.live.fmp4 import FragmentedMp4
    from posecast.live.session import LiveSession
    from posecast.live.sources import FileSource, PcmSource
    from posecast.render import read_portrait

    require_file(portrait, "portrait", IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
    if (audio is not None) + mic != 1:
        raise UsageError("give the speech one way: --audio FILE, --audio - (PCM on stdin) or "
                         "--mic")
    if mic and serve is None:
        raise UsageError("--mic takes the browser's microphone: add --serve 127.0.0.1:PORT")
    if serve is None and output is None:
        raise UsageError("nothing to show the video on: add --serve HOST:PORT and/or -o FILE")
    if audio not in (None, "-"):
        require_file(Path(audio), "audio", AUDIO_EXTENSIONS + VIDEO_EXTENSIONS)
    to_stdout = output == "-"
    if output is not None and not to_stdout:
        require_output(Path(output), overwrite, (".mp4",), inputs=(portrait,))
    host = port = None
    if serve is not None:
        host, port = parse_address(serve)
        if token is None and host not in LOOPBACK:
            token = secrets.token_urlsafe(16)
        if token is not None and not re.fullmatch(r"[A-Za-z0-9_-]{8,}", token):
            raise UsageError("--token: at least 8 letters, digits, _ or -")
    say = warn if to_stdout or json_summary else note  # stdout may carry the video

    if audio == "-":  # the audio and the portrait's face, before the model loads
        if sys.stdin is None:
            raise UsageError("--audio -: there is no stdin to read PCM from")
        source = PcmSource(sys.stdin.buffer, rate, channels, sample_format)
    elif audio is not None:
        source = FileSource(audio)
    ready = read_portrait(portrait, on_note=warn)
    renderer = load_renderer(model or str(starter_model()), pick_device(device),
                             revision=revision, on_warning=warn)
    server = None
    if serve is not None:
        from posecast.live.server import LiveServer

        server = LiveServer(host, port, fps, token, mic)
        try:
            address = server.start()
        except OSError as error:
            raise UsageError(f"--serve {serve}: cannot listen there ({error.strerror})") \
                from None
        if mic:
            source = server.source
        elif isinstance(source, FileSource):  # played from when someone watches
            source.wait_for = server.viewer
        say(f"open {address} in a browser" + (" and press Speak" if mic else
                                              " (the audio starts when it is open)"
                                              if audio not in (None, "-") else ""))

    started = time.perf_counter()
    session = LiveSession(renderer, ready, source, fps, seed, max_latency,
                          on_status=lambda status: say(
                              f"live: {status['seconds']:.0f} s, latency "
                              f"{status['latency_s']} s, {status['frames_dropped']} dropped"))

    def run(sink) -> dict:
        gone = []  # the sink's reader went away (a closed pipe)

        def on_box(kind: str, box: bytes) -> None:
            if sink is not None and not gone:
                try:
                    sink.write(box)
                    sink.flush()
                except OSError:  # e.g. `| head -c`: the session ends as on Ctrl-C
                    gone.append(True)
                    session.stop.set()
            if server is not None:
                server.send_box(kind, box)

        encoder = FragmentedMp4(renderer.width, renderer.height, fps, 16000, on_box)
        dues = []
        offset = time.time() - time.perf_counter()  # perf_counter → Unix time

        def write(frame, samples, index, due) -> None:
            encoder.write(frame, samples)
            dues.append((index, due + offset))
            if server is not None and len(dues) >= renderer.student.chunk:
                server.send_dues(dues)
                dues.clear()

        try:
            figures = session.run(write)
        except KeyboardInterrupt:  # Ctrl-C ends a live session; what was made is kept
            figures = session.figures()
        finally:
            encoder.close() if session.frames else encoder.kill()
        return figures

    try:
        if to_stdout:
            figures = run(sys.stdout.buffer)
        elif output is not None:
            with atomic_output(Path(output)) as tmp, open(tmp, "wb") as sink:
                figures = run(sink)
        else:
            figures = run(None)
        if server is not None and mic is False:
            time.sleep(1.5)  # the page plays out the last fragments and reports once more
    finally:
        if server is not None:
            server.stop()
    figures.update(elapsed=round(time.perf_counter() - started, 3))
    if server is not None and server.report is not None:
        figures["page"] = server.report
    text = (f"live: {figures['frames']} frames ({figures['seconds']:.2f} s), latency "
            f"p50 {figures['latency_p50_s']} s, p95 {figures['latency_p95_s']} s, max "
            f"{figures['latency_max_s']} s, {figures['frames_dropped']} dropped")
    outputs = [output] if output not in (None, "-") else []
    if to_stdout and json_summary:  # stdout carries the video: the summary is stderr's last
        warn(text)
        sys.stderr.write(json.dumps(summary(figures, outputs)) + "\n")
    elif to_stdout:
        warn(text)
    else:
        print_result(text, figures, json_summary, outputs)
