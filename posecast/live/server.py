"""The live page: an aiohttp server on its own thread and event loop.

  GET /          the page (page/index.html), plain HTML and JavaScript, no build step
  GET /page.js   its script
  GET /ws        a WebSocket: to the browser, a JSON hello (codecs, fps, whether the mic is
                 wanted), the MP4 init segment, then every fragment as it is encoded and each
                 frame's due time (JSON); from the browser, its report (JSON) and, with --mic
                 only, its microphone's samples (float32 binary, after a JSON {"audio_rate"})

Why fragmented MP4 into Media Source Extensions, not WebRTC: the encoder already writes it for
`-o` (one encoding for file, stdout and page); it needs one light dependency (aiohttp), no
STUN/ICE or DTLS, and plays in any current browser; a live-edge jump in the page keeps its
buffer near 0.1 s. WebRTC would buy congestion control across networks, which a page on
127.0.0.1 does not need.

Safety: with a token (required, and made if not given, off loopback) every request must carry
it (`?token=`); the browser can send audio and its report, nothing else (no paths, no options).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
from importlib import resources

import numpy as np
from aiohttp import WSMsgType, web

from posecast.live.fmp4 import CODECS
from posecast.live.sources import PushSource

MAX_QUEUED = 400  # messages a slow viewer may lag by before it is dropped


def page_file(name: str) -> bytes:
    return resources.files("posecast.live").joinpath("page", name).read_bytes()


class LiveServer:
    """Serve the page on host:port; `send_box` and `send_dues` may be called from any
    thread. With `mic`, `source` is the PushSource the first browser's samples go to."""

    def __init__(self, host: str, port: int, fps: float, token: str | None = None,
                 mic: bool = False) -> None:
        self.host, self.port, self.fps, self.token = host, port, fps, token
        self.source = PushSource() if mic else None
        self.init_segment = b""  # ftyp + moov, set from the encoder's thread when whole
        self.pending_ftyp = b""
        self.pending_moof = b""
        self.clients: set[asyncio.Queue] = set()
        self.report: dict | None = None  # the latest page's own report
        self.mic_client = None
        self.viewer = threading.Event()  # set when the first page connects
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.failed: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, name="posecast-live-server",
                                       daemon=True)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Start serving; the page's address (with its token)."""
        self.thread.start()
        self.ready.wait()
        if self.failed is not None:
            raise self.failed
        query = f"?token={self.token}" if self.token else ""
        return f"http://{self.host}:{self.port}/{query}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/page.js", self._script)
        app.router.add_get("/ws", self._socket)
        self.runner = web.AppRunner(app, access_log=None)
        try:
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, self.host, self.port)
            self.loop.run_until_complete(site.start())
            if self.port == 0:  # the port the system chose
                self.port = site._server.sockets[0].getsockname()[1]
        except OSError as error:
            self.failed = error
            self.ready.set()
            return
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self._close_all)
            self.thread.join(timeout=5)

    def _close_all(self) -> None:
        for queue in self.clients:
            queue.put_nowait(None)
        self.loop.call_later(0.2, self.loop.stop)

    # ------------------------------------------------------------------ video out

    def send_box(self, kind: str, box: bytes) -> None:
        """An MP4 box from the encoder: the init segment is kept for every viewer; a
        fragment (moof + mdat) goes to every viewer connected."""
        if kind == "ftyp":
            self.pending_ftyp = box
        elif kind == "moov":  # the init segment exists whole, or not at all
            self.init_segment = self.pending_ftyp + box
        elif kind == "moof":
            self.pending_moof = box
        elif kind == "mdat":
            self._fan_out(self.pending_moof + box)
            self.pending_moof = b""

    def send_dues(self, dues: list[tuple[int, float]]) -> None:
        """Frames' indices and when their audio was due (Unix seconds): the page's latency."""
        self._fan_out(json.dumps({"dues": [[index, round(due * 1000, 1)]
                                           for index, due in dues]}))

    def _fan_out(self, message: bytes | str) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self._enqueue, message)

    def _enqueue(self, message: bytes | str) -> None:
        for queue in list(self.clients):
            if queue.qsize() > MAX_QUEUED:  # a viewer that cannot keep up is let go
                self.clients.discard(queue)
                queue.put_nowait(None)
            else:
                queue.put_nowait(message)

    # ------------------------------------------------------------------ requests

    def _allowed(self, request: web.Request) -> bool:
        return self.token is None or hmac.compare_digest(  # as bytes: any text may come
            request.query.get("token", "").encode(), self.token.encode())

    async def _index(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            raise web.HTTPForbidden(text="posecast live: a valid ?token= is needed")
        page = page_file("index.html")
        if self.token:  # its script is asked for with the same token
            page = page.replace(b'src="page.js"', b'src="page.js?token=' +
                                self.token.encode() + b'"')
        return web.Response(body=page, content_type="text/html")

    async def _script(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            raise web.HTTPForbidden(text="posecast live: a valid ?token= is needed")
        return web.Response(body=page_file("page.js"), content_type="text/javascript")

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        if not self._allowed(request):
            raise web.HTTPForbidden(text="posecast live: a valid ?token= is needed")
        socket = web.WebSocketResponse(heartbeat=10, max_msg_size=1 << 20)
        await socket.prepare(request)
        queue: asyncio.Queue = asyncio.Queue()
        await socket.send_str(json.dumps({"hello": {"codecs": CODECS, "fps": self.fps,
                                                    "mic": self.source is not None}}))
        self.clients.add(queue)  # fragments queue up behind the init segment
        self.viewer.set()
        sender = asyncio.ensure_future(self._send(socket, queue))
        try:
            await self._receive(socket)
        finally:
            self.clients.discard(queue)
            sender.cancel()
            if self.mic_client is socket and self.source is not None:
                self.source.end()  # the page that spoke closed: the audio is over
        return socket

    async def _send(self, socket: web.WebSocketResponse, queue: asyncio.Queue) -> None:
        """The init segment (once the encoder has written it: with the first frame, which
        may wait for this page's microphone), then every message queued."""
        while not self.init_segment:
            await asyncio.sleep(0.02)
        await socket.send_bytes(self.init_segment)
        while (message := await queue.get()) is not None:
            if isinstance(message, bytes):
                await socket.send_bytes(message)
            else:
                await socket.send_str(message)
        await socket.close()

    async def _receive(self, socket: web.WebSocketResponse) -> None:
        rate = None
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                try:
                    data = json.loads(message.data)
                except ValueError:
                    continue
                if isinstance(data, dict) and isinstance(data.get("report"), dict):
                    self.report = data["report"]
                elif isinstance(data, dict) and self.source is not None and \
                        isinstance(data.get("audio_rate"), int | float) and \
                        8000 <= data["audio_rate"] <= 192000 and self.mic_client in (None,
                                                                                     socket):
                    rate, self.mic_client = int(data["audio_rate"]), socket
            elif message.type == WSMsgType.BINARY:
                if self.source is None or rate is None or self.mic_client is not socket:
                    await socket.close(message=b"this page may send only its report")
                    return
                samples = np.frombuffer(message.data[:len(message.data) // 4 * 4], "<f4")
                self.source.push(np.nan_to_num(samples), rate)
