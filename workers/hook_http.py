"""The HTTP side of a completion hook, hardened against its receiver: what a worker POSTs with
and how it reads the reply. :mod:`workers.notify` decides what to send and records what came.

A receiver is anyone's URL, so nothing it does may cost a worker more than a bounded moment:

- **one deadline per POST** (``notify_timeout``), from connecting to the last byte read, not per
  read: a receiver trickling a byte every few seconds is cut off there;
- **no body read past** :data:`READ_CAP` bytes (only the status line counts; a failure's first
  bytes make its error message), and nothing decompressed: ``Accept-Encoding: identity`` is
  sent and a gzip reply stays gzip, so a decompression bomb is a few KB of noise;
- **only allowed addresses** (:mod:`batchq.targets`): a literal IP is checked before the POST,
  a name on every address it resolves to, inside the resolver the connection then uses, so the
  checked address is the one connected to (a DNS answer that changes in between cannot slip
  a metadata address in);
- no redirects followed, no cookies kept, no proxy from the environment.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from batchq.settings import Settings
from batchq.targets import address_refusal, host_refusal

__all__ = ["READ_CAP", "Progress", "Reply", "TargetRefused", "hook_session", "post"]

# Enough for a receiver's error message; nothing a receiver sends beyond it is read.
READ_CAP = 4096


class TargetRefused(OSError):
    """The hook's target is an address :mod:`batchq.targets` refuses. An OSError because
    aiohttp hands a resolver's OSErrors on (as the ``os_error`` of a connector error)."""


@dataclass
class Progress:
    """How far one POST got: once its request headers are written, the receiver may act on
    it, and a POST cut short after that may have arrived."""

    started: bool = False


@dataclass(frozen=True)
class Reply:
    status: int
    excerpt: str = ""  # the start of a failure's body, printable, when it is plain text


class _CheckingResolver(AbstractResolver):
    """The system resolver, whose every answer must be an allowed address."""

    def __init__(self, inner: AbstractResolver, *, allow_private: bool) -> None:
        self._inner = inner
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            ip = ipaddress.ip_address(answer["host"].partition("%")[0])
            refusal = address_refusal(ip, allow_private=self._allow_private)
            if refusal is not None:
                raise TargetRefused(f"{host}: {refusal}")
        return answers

    async def close(self) -> None:
        await self._inner.close()


async def _headers_sent(
    session: aiohttp.ClientSession, ctx: SimpleNamespace, params: object
) -> None:
    progress = (ctx.trace_request_ctx or {}).get("progress")
    if isinstance(progress, Progress):
        progress.started = True


def hook_session(
    settings: Settings, *, resolver: AbstractResolver | None = None
) -> aiohttp.ClientSession:
    """The HTTP session a worker sends its hooks with: aiohttp, the stack that already talks to
    Ollama, so the runtime needs one HTTP library. Made inside the event loop. ``resolver``:
    the one whose answers are checked (the system's by default)."""
    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(_headers_sent)
    connector = aiohttp.TCPConnector(
        resolver=_CheckingResolver(
            resolver or aiohttp.ThreadedResolver(), allow_private=settings.notify_allow_private
        ),
        # One connection per POST: no receiver's kept-alive socket carries the next hook.
        force_close=True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        trace_configs=[trace],
        trust_env=False,
    )


async def post(
    client: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    settings: Settings,
    progress: Progress,
) -> Reply:
    """POST ``body`` (JSON) to ``url``; the reply's status and, for a failure, the start of
    its body. Raises :class:`TargetRefused`, ``TimeoutError`` past ``notify_timeout``, or
    aiohttp's errors."""
    refusal = host_refusal(url, allow_private=settings.notify_allow_private)
    if refusal is not None:
        raise TargetRefused(refusal)
    sent = {
        **headers,
        "Content-Type": "application/json",
        "Accept-Encoding": "identity",
    }
    trace_ctx: dict[str, Any] = {"progress": progress}
    try:
        async with client.post(
            url,
            data=body,
            headers=sent,
            # A redirect would repeat the POST somewhere the submitter did not name.
            allow_redirects=False,
            # Not rounded up to a whole second, as aiohttp does past 5 s by default.
            timeout=aiohttp.ClientTimeout(total=settings.notify_timeout, ceil_threshold=math.inf),
            trace_request_ctx=trace_ctx,
        ) as resp:
            if resp.status < 400:
                return Reply(resp.status)
            return Reply(resp.status, await _excerpt(resp))
    except aiohttp.ClientConnectorError as e:
        if isinstance(e.os_error, TargetRefused):
            raise e.os_error from None  # the resolver's refusal, as a literal's is raised
        raise


async def _excerpt(resp: aiohttp.ClientResponse) -> str:
    if resp.headers.get("Content-Encoding", "identity").lower() != "identity":
        return ""
    raw = bytearray()
    try:
        while len(raw) < READ_CAP:
            chunk = await resp.content.read(READ_CAP - len(raw))
            if not chunk:
                break
            raw += chunk
    except (aiohttp.ClientError, TimeoutError):
        pass  # what came before the deadline or the break is still worth showing
    text = raw.decode("utf-8", "replace")
    # It reaches logs and terminals: no control characters, one line.
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:200]
