"""Hostile webhook receivers on a real socket (asyncio streams, no HTTP library between them
and the worker), for the hook sender's fault tests: each reads the request, records it, then
answers the way ``respond`` says: trickling, never ending, or with a body meant to hurt."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

__all__ = [
    "RawReceiver",
    "Request",
    "bomb_reply",
    "gzip_bomb",
    "huge_body",
    "plain",
    "raw_receiver",
    "trickled_body",
    "trickled_head",
]


@dataclass(frozen=True)
class Request:
    line: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


@dataclass
class RawReceiver:
    respond: Callable[[RawReceiver, asyncio.StreamWriter], Awaitable[None]]
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0  # bytes of replies written
    # Set when the sender went away (the connection closed under a write) or the reply ended.
    done: asyncio.Event = field(default_factory=asyncio.Event)
    sender_left: bool = False
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.sent += len(data)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *rest = head.decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in rest if h)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Request(line, headers, body))
            self.arrived.set()
            await self.respond(self, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.sender_left = True
        except asyncio.CancelledError:
            # The receiver closing under a reply still trickling: the handler's end, quietly
            # (asyncio's server logs a handler that ends cancelled as an error).
            pass
        finally:
            self.done.set()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def raw_receiver(
    respond: Callable[[RawReceiver, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[RawReceiver]:
    rec = RawReceiver(respond)
    server = await asyncio.start_server(rec._serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    rec.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield rec
    finally:
        server.close()
        for task in rec._handlers:
            task.cancel()
        await asyncio.gather(*rec._handlers, return_exceptions=True)


def trickled_head(interval: float, length: int) -> Callable[..., Awaitable[None]]:
    """A status line and headers that never end: one byte every ``interval`` s, ``length``
    bytes in all (each read is quick; only a deadline over the whole reply stops it)."""

    async def respond(rec: RawReceiver, writer: asyncio.StreamWriter) -> None:
        head = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * length
        for i in range(length):
            await rec.write(writer, head[i : i + 1])
            await asyncio.sleep(interval)

    return respond


def trickled_body(interval: float, length: int) -> Callable[..., Awaitable[None]]:
    """A 500 whose headers come at once and whose body one byte every ``interval`` s."""

    async def respond(rec: RawReceiver, writer: asyncio.StreamWriter) -> None:
        await rec.write(writer, b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n" % length)
        for _ in range(length):
            await rec.write(writer, b"x")
            await asyncio.sleep(interval)

    return respond


def huge_body(status: int, size: int, chunk: int = 1 << 16) -> Callable[..., Awaitable[None]]:
    """A reply of ``size`` bytes of text (it starts ``error:``), written as fast as it is
    taken."""

    async def respond(rec: RawReceiver, writer: asyncio.StreamWriter) -> None:
        await rec.write(writer, b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n" % (status, size))
        await rec.write(writer, b"error: \x1b[31mred\x1b[0m " + b"y" * (chunk - 20))
        left = size - chunk
        while left > 0:
            await rec.write(writer, b"y" * min(chunk, left))
            left -= chunk

    return respond


def plain(status: int) -> Callable[..., Awaitable[None]]:
    """An empty reply with ``status``: a well-behaved receiver."""

    async def respond(rec: RawReceiver, writer: asyncio.StreamWriter) -> None:
        await rec.write(writer, b"HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n" % status)

    return respond


def gzip_bomb(expanded: int) -> bytes:
    """A gzip stream of ``expanded`` bytes of "A": a thousandth of that on the wire."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"A" * (1 << 20)
    parts = [z.compress(block) for _ in range(expanded >> 20)]
    return b"".join([*parts, z.flush()])


def bomb_reply(status: int, bomb: bytes) -> Callable[..., Awaitable[None]]:
    async def respond(rec: RawReceiver, writer: asyncio.StreamWriter) -> None:
        head = b"HTTP/1.1 %d X\r\nContent-Encoding: gzip\r\nContent-Type: text/plain\r\n" % status
        await rec.write(writer, head + b"Content-Length: %d\r\n\r\n" % len(bomb) + bomb)

    return respond
