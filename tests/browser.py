"""A real headless Chromium, driven over the DevTools protocol with aiohttp's websocket client:
the tests of ``batchq serve``'s page evaluate JavaScript in it (the DOM, computed styles,
layout) and take screenshots, as a user's browser would render the page."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

__all__ = ["Page", "chromium", "open_page"]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


class Page:
    """One browser tab."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._id = 0
        self._events: list[str] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        await self._ws.send_json({"id": self._id, "method": method, "params": params})
        while True:
            data = await self._receive()
            if data.get("id") == self._id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                result: dict[str, Any] = data["result"]
                return result

    async def _receive(self) -> dict[str, Any]:
        async with asyncio.timeout(60):
            msg = await self._ws.receive()
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"the browser closed its connection: {msg}")
        data: dict[str, Any] = json.loads(msg.data)
        if "method" in data:
            self._events.append(data["method"])
        return data

    async def _event(self, method: str) -> None:
        while method not in self._events:
            await self._receive()
        self._events.remove(method)

    async def eval(self, expression: str) -> Any:
        reply = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str, within_s: float = 30) -> None:
        """Until ``expression`` is true in the page (checked there, every 50 ms)."""
        check = (
            f"if ({expression}) resolve(true); else if (Date.now() > end) resolve(false); "
            "else setTimeout(check, 50);"
        )
        ok = await self.eval(
            f"new Promise(resolve => {{ const end = Date.now() + {within_s * 1000}; "
            f"(function check() {{ {check} }})(); }})"
        )
        assert ok, f"not true within {within_s} s: {expression}"

    async def goto(self, url: str, width: int, height: int = 900) -> None:
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        await self.send("Page.enable")
        await self.send("Page.navigate", url=url)
        await self._event("Page.loadEventFired")

    async def screenshot(self) -> bytes:
        """The whole page, as PNG."""
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return base64.b64decode(shot["data"])


@contextlib.asynccontextmanager
async def open_page(profile: Path) -> AsyncIterator[Page]:
    """A fresh headless Chromium with its profile in ``profile``, and its blank tab."""
    browser = chromium()
    assert browser
    proc = await asyncio.create_subprocess_exec(
        browser,
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr
    drain: asyncio.Task[bytes] | None = None
    try:
        async with asyncio.timeout(60):
            while not (line := await proc.stderr.readline()).startswith(b"DevTools listening"):
                assert line, "Chromium exited before it listened"
        # ws://127.0.0.1:PORT/devtools/browser/ID: the port serves the tabs' list too.
        port = int(line.split(b"/")[2].split(b":")[1])
        drain = asyncio.create_task(proc.stderr.read())  # its logs must not fill the pipe
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as reply:
                targets = await reply.json()
            [tab] = [t for t in targets if t["type"] == "page"]
            async with http.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield Page(ws)
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            async with asyncio.timeout(20):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if drain is not None:
            await drain
