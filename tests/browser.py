"""Headless Chromium driven over the DevTools protocol (its WebSocket, through aiohttp): what
tests/test_live.py and scripts/live_bench.py open the live page with. Debian's `chromium`
(.ci/run installs it); flags as this workplace's machines need them (no network behind)."""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import time
from pathlib import Path

CHROMIUM = shutil.which("chromium")  # Debian's, which .ci/run installs


class Browser:
    """Headless Chromium driven over the DevTools protocol (its WebSocket, with aiohttp)."""

    def __init__(self, profile: Path, flags: tuple[str, ...] = ()) -> None:
        profile.mkdir()
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--autoplay-policy=no-user-gesture-required",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", *flags, "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and len(port_file.read_text().splitlines()) >= 2:
                break
            time.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])
        self.loop = asyncio.new_event_loop()
        self.socket = self.loop.run_until_complete(self._connect())
        self.next_id = 0

    async def _connect(self):
        import aiohttp

        self.session = aiohttp.ClientSession()
        async with self.session.get(f"http://127.0.0.1:{self.port}/json/list") as response:
            targets = await response.json(content_type=None)
        page = next(target for target in targets if target["type"] == "page")
        return await self.session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)

    def call(self, method: str, **params) -> dict:
        async def exchange():
            self.next_id += 1
            await self.socket.send_json({"id": self.next_id, "method": method,
                                         "params": params})
            while True:
                message = await self.socket.receive_json(timeout=30)
                if message.get("id") == self.next_id:
                    return message.get("result", {})
        return self.loop.run_until_complete(exchange())

    def open(self, url: str) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=560, height=470,
                  deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=url)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        async def shut():
            await self.socket.close()
            await self.session.close()
        self.loop.run_until_complete(shut())
        self.loop.close()
        self.process.kill()
        self.process.wait()
