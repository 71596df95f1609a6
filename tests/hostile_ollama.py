"""A hostile Ollama stand-in over a real socket, for the tests of bounded replies and for
``bench/runaway.py``. Each reply misbehaves one way, picked by the first word of the request's
text (the prompt, the last chat message, the first embed input) when that word names a
behaviour, else by the server's mode. Everything it sends is made as it goes, so a reply
"without end" costs the server no memory.

    python -m tests.hostile_ollama --port 11500 --mode runaway --piece 1024
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

__all__ = ["BEHAVIOURS", "HUGE_COUNT", "Hostile", "serving"]

HUGE_COUNT = 10**30
_BLOCK = 64 << 10  # bytes per write of a long reply


def _line(obj: object) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def _final(**metrics: object) -> dict[str, Any]:
    return {"response": "", "done": True, "done_reason": "stop", "prompt_eval_count": 3,
            "eval_count": 2, "total_duration": 1000, **metrics}  # fmt: skip


def _text_of(body: dict[str, Any]) -> str:
    if "messages" in body:
        messages = body["messages"]
        return str(messages[-1].get("content", "")) if messages else ""
    value = body.get("prompt", body.get("input", ""))
    return str(value[0] if isinstance(value, list) and value else value)


@dataclass
class Hostile:
    """The server's behaviour. ``piece``: characters of text per streamed chunk of a reply
    that never ends, each ``char``; ``size``: bytes of a huge line, body or error;
    ``content_length``: a huge body announces its size; ``trickle``: seconds between the
    chunks of a slow one."""

    mode: str = "normal"
    piece: int = 8
    char: str = "x"  # what a reply that never ends repeats
    size: int = 10 << 20
    content_length: bool = False
    trickle: float = 0.2
    # Bytes each behaviour wrote (what reached the socket before the client let go), the
    # requests each got and ended, and the client ends (host, port) of every connection.
    written: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    ended: Counter[str] = field(default_factory=Counter)
    peers: set[tuple[str, int]] = field(default_factory=set)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/version", self._version)
        app.router.add_get("/api/ps", self._ps)
        app.router.add_post("/api/{endpoint}", self._reply)
        return app

    async def _version(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"version": "0.0.0-hostile"})

    async def _ps(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"models": []})

    async def _reply(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        word = _text_of(body).split(" ", 1)[0]
        name = word if word in BEHAVIOURS else self.mode
        self.requests[name] += 1
        if request.transport is not None:
            self.peers.add(request.transport.get_extra_info("peername")[:2])
        embed = request.match_info["endpoint"] == "embed"
        try:
            return await BEHAVIOURS[name](
                self, _Reply(request, name, self, embed, body.get("stream", True))
            )
        finally:
            self.ended[name] += 1


@dataclass
class _Reply:
    request: web.Request
    name: str
    server: Hostile
    embed: bool
    stream: bool
    resp: web.StreamResponse | None = None

    async def start(self, status: int = 200, length: int | None = None) -> None:
        self.resp = web.StreamResponse(status=status)
        if length is None:
            self.resp.enable_chunked_encoding()
        else:
            self.resp.content_length = length
        await self.resp.prepare(self.request)

    async def write(self, data: bytes) -> bool:
        """False once the client has gone."""
        assert self.resp is not None
        try:
            await self.resp.write(data)
        except (ConnectionError, RuntimeError):
            return False
        self.server.written[self.name] += len(data)
        await asyncio.sleep(0)  # a client that keeps up must not starve the other replies
        return True

    async def forever(self, make: Callable[[], bytes], pause: float = 0.0) -> web.StreamResponse:
        while await self.write(make()):
            if pause:
                await asyncio.sleep(pause)
        assert self.resp is not None
        return self.resp

    async def hold_open(self) -> web.StreamResponse:
        """Keep the connection open (the body unfinished) until the client closes it."""
        transport = self.request.transport
        # aiohttp gives a handler no event for a client that went away: look now and then.
        while transport is not None and not transport.is_closing():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert self.resp is not None
        return self.resp


async def _normal(s: Hostile, r: _Reply, **metrics: object) -> web.StreamResponse:
    if r.embed:
        return web.json_response({"embeddings": [[0.5, 0.25]], **_final(**metrics)})
    if not r.stream:
        return web.json_response({**_final(**metrics), "response": "ok"})
    await r.start()
    await r.write(_line({"response": "ok", "done": False}) + _line(_final(**metrics)))
    assert r.resp is not None
    await r.resp.write_eof()
    return r.resp


async def _long_text(s: Hostile, r: _Reply) -> web.StreamResponse:
    """A whole reply of ``size`` times ``char``, in one chunk or one body."""
    text = s.char * s.size
    if not r.stream:
        return web.json_response({**_final(), "response": text})
    await r.start()
    await r.write(_line({"response": text, "done": False}) + _line(_final()))
    assert r.resp is not None
    await r.resp.write_eof()
    return r.resp


async def _huge_count(s: Hostile, r: _Reply) -> web.StreamResponse:
    # Infinity parses too (json.loads takes it), and a count below zero means nothing.
    return await _normal(
        s, r, prompt_eval_count=HUGE_COUNT, eval_count=-5, total_duration=float("inf")
    )


async def _runaway(s: Hostile, r: _Reply) -> web.StreamResponse:
    await r.start()
    lines = _line({"response": s.char * s.piece, "done": False})
    block = lines * max(1, _BLOCK // len(lines))
    return await r.forever(lambda: block)


async def _trickle(s: Hostile, r: _Reply) -> web.StreamResponse:
    await r.start()
    line = _line({"response": "slow ", "done": False})
    return await r.forever(lambda: line, pause=s.trickle)


async def _endless_line(s: Hostile, r: _Reply) -> web.StreamResponse:
    await r.start()
    if not await r.write(b'{"response": "'):
        assert r.resp is not None
        return r.resp
    block = b"x" * _BLOCK
    return await r.forever(lambda: block)


async def _huge_body(s: Hostile, r: _Reply) -> web.StreamResponse:
    """``size`` bytes of valid JSON: one embedding that long."""
    head, tail = b'{"embeddings": [[', b"0.5]]}"
    numbers = (s.size - len(head) - len(tail)) // 4
    await r.start(length=len(head) + 4 * numbers + len(tail) if s.content_length else None)
    await r.write(head)
    left = numbers
    while left > 0:
        n = min(left, _BLOCK // 4)
        if not await r.write(b"0.5," * n):
            break
        left -= n
    else:
        await r.write(tail)
    assert r.resp is not None
    return r.resp


async def _error_body(s: Hostile, r: _Reply) -> web.StreamResponse:
    """A 500 whose ``{"error": ...}`` is ``size`` bytes long."""
    await r.start(status=500)
    await r.write(b'{"error": "runner failed: ')
    left = s.size
    while left > 0 and await r.write(b"E" * min(left, _BLOCK)):
        left -= _BLOCK
    await r.write(b'"}')
    assert r.resp is not None
    return r.resp


async def _error_line(s: Hostile, r: _Reply) -> web.StreamResponse:
    """A stream that starts, then reports a failure of ``size`` bytes as its last line."""
    await r.start()
    await r.write(_line({"response": "par", "done": False}))
    await r.write(_line({"error": "E" * s.size}))
    assert r.resp is not None
    return r.resp


async def _done_open(s: Hostile, r: _Reply) -> web.StreamResponse:
    await r.start()
    await r.write(_line({"response": "complete", "done": False}) + _line(_final()))
    return await r.hold_open()


BEHAVIOURS: dict[str, Callable[[Hostile, _Reply], Awaitable[web.StreamResponse]]] = {
    "normal": _normal,
    "huge_count": _huge_count,
    "long_text": _long_text,
    "runaway": _runaway,
    "trickle": _trickle,
    "endless_line": _endless_line,
    "huge_body": _huge_body,
    "error_body": _error_body,
    "error_line": _error_line,
    "done_open": _done_open,
}


@contextlib.asynccontextmanager
async def serving(hostile: Hostile) -> AsyncIterator[str]:
    """The stand-in in this event loop; yields its URL."""
    srv = TestServer(hostile.app(), host="127.0.0.1")
    await srv.start_server()
    try:
        yield str(srv.make_url("")).rstrip("/")
    finally:
        await srv.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", choices=sorted(BEHAVIOURS), default="normal")
    ap.add_argument("--piece", type=int, default=8)
    ap.add_argument("--char", default="x")
    ap.add_argument("--size", type=int, default=10 << 20)
    ap.add_argument("--trickle", type=float, default=0.2)
    a = ap.parse_args()
    hostile = Hostile(mode=a.mode, piece=a.piece, char=a.char, size=a.size, trickle=a.trickle)
    web.run_app(hostile.app(), host="127.0.0.1", port=a.port, print=None, shutdown_timeout=1)


if __name__ == "__main__":
    main()
