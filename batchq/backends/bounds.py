"""How much of a reply batchq takes (:class:`~batchq.backends.base.ReplyLimits`): the readers
that enforce the limits as the bytes arrive, the breach errors, the cap on the error text a
server gets stored, and the range of the numbers it reports.

Every reader here costs time linear in the bytes read and holds at most its cap: a reply that
never ends, a line that never ends and a body of any size all stop at their limit.

Each breach fails the item at once (a :class:`~batchq.errors.PermanentBackendError` of its own
kind, whose message names the limit and the setting that raises it) rather than being retried:
the same prompt with the same options meets the same limit again, and a runaway generation
retried ``max_attempts`` times would hold a slot for hours to produce nothing. A user whose
replies are really that long raises the setting and runs ``batchq retry``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncGenerator, Iterable
from typing import Any

import aiohttp

from batchq.errors import PermanentBackendError

__all__ = [
    "BREACH_KINDS",
    "MAX_ERROR_CHARS",
    "cap_error",
    "clamp_metrics",
    "deadline_passed",
    "drain",
    "line_too_long",
    "lines",
    "read_at_most",
    "read_body",
    "text_too_long",
]

# error.type of each breach.
BREACH_KINDS = frozenset({"reply_deadline", "reply_too_long", "line_too_long", "body_too_large"})

# The most of a server's error text an item's result keeps: enough for any real message (a Go
# stack trace's first lines), and a 10 MB error body costs Redis 4 KB, not 10 MB.
MAX_ERROR_CHARS = 4096
_CUT_MARK = " [cut at {} characters]"

# What follows a stream's final chunk is read for at most this long, so that the connection can
# be kept alive when the body ends there (it does at once, from Ollama); a server that keeps it
# open past that gets it closed, and the answer stands.
_DRAIN_S = 1.0

# Token counts past this are a broken or hostile server's, not a model's; capped so that the
# batch's sums stay far inside Redis's 64-bit integers whatever it says (HINCRBY refuses more).
_MAX_COUNT = 2**31 - 1
# Nanoseconds (104 days): exact in a double, so in Lua and in a browser's JSON too.
_MAX_NS = 2**53 - 1
_MAX_REASON_CHARS = 100


def _bytes(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n} bytes"


def _breach(kind: str, what: str, setting: str) -> PermanentBackendError:
    return PermanentBackendError(
        f"{what} (BATCHQ_{setting.upper()}; raise it to allow more)", kind=kind
    )


def deadline_passed(seconds: float) -> PermanentBackendError:
    return _breach(
        "reply_deadline",
        f"no complete reply within {seconds:g} s, though it kept coming: a generation that "
        "does not end? (set num_predict)",
        "reply_deadline",
    )


def text_too_long(limit: int) -> PermanentBackendError:
    return _breach(
        "reply_too_long",
        f"generated text passed {_bytes(limit)}: a generation that does not end? (set num_predict)",
        "reply_max_text_bytes",
    )


def line_too_long(limit: int) -> PermanentBackendError:
    return _breach(
        "line_too_long", f"a line of the reply passed {_bytes(limit)}", "reply_max_line_bytes"
    )


def _body_too_large(limit: int) -> PermanentBackendError:
    return _breach(
        "body_too_large", f"the reply body passed {_bytes(limit)}", "reply_max_body_bytes"
    )


async def lines(content: aiohttp.StreamReader, max_line: int) -> AsyncGenerator[bytes, None]:
    """The body's lines (without their newline), none longer than ``max_line`` bytes.

    Split by hand: aiohttp's line iterator refuses lines over 128 KiB, and the final chunk of
    /api/generate carries the whole context as token ids, which a long prompt makes larger.
    Each byte is searched once and copied at most twice, however the network cuts the lines.
    """
    pending = bytearray()  # the start of a line that has not ended yet
    async for chunk in content.iter_any():
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if pending:
                pending += memoryview(chunk)[start:end]
                line = bytes(pending)
                pending.clear()
            else:
                line = chunk[start:end]
            if len(line) > max_line:
                raise line_too_long(max_line)
            yield line
            start = end + 1
        if len(pending) + len(chunk) - start > max_line:
            raise line_too_long(max_line)
        pending += memoryview(chunk)[start:]
    if pending:
        yield bytes(pending)


async def read_at_most(content: aiohttp.StreamReader, limit: int) -> tuple[bytearray, bool]:
    """Up to ``limit`` bytes of the body, and whether there was more."""
    buf = bytearray()
    while len(buf) <= limit:
        chunk = await content.read(limit + 1 - len(buf))
        if not chunk:
            return buf, False
        buf += chunk
    del buf[limit:]
    return buf, True


async def read_body(r: aiohttp.ClientResponse, limit: int) -> bytearray:
    """The whole body of a reply that is not streamed, refused past ``limit`` bytes (at once
    when its Content-Length says so)."""
    if r.content_length is not None and r.content_length > limit:
        raise _body_too_large(limit)
    body, more = await read_at_most(r.content, limit)
    if more:
        raise _body_too_large(limit)
    return body


async def drain(content: aiohttp.StreamReader, limit: int) -> None:
    """Read the rest of a body whose answer is complete, briefly and at most ``limit`` bytes:
    a body read to its end keeps the connection alive; one left unread closes it."""
    if content.at_eof():
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_DRAIN_S):
            left = limit
            while left > 0 and (chunk := await content.readany()):
                left -= len(chunk)


def cap_error(text: str) -> str:
    """A server's error text as an item keeps it: at most :data:`MAX_ERROR_CHARS`, and marked
    when it was cut."""
    if len(text) <= MAX_ERROR_CHARS:
        return text
    return text[:MAX_ERROR_CHARS] + _CUT_MARK.format(MAX_ERROR_CHARS)


def clamp_metrics(reply: dict[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """The reply's ``fields`` that are metrics batchq can store and add up: counts and
    nanoseconds as integers in range (a negative or absurd one clamped), the done reason as a
    short string; anything else (a string count, a list) is left out."""
    out: dict[str, Any] = {}
    for k in fields:
        v = reply.get(k)
        if isinstance(v, str):
            if k == "done_reason":
                out[k] = v[:_MAX_REASON_CHARS]
        elif isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v):
            top = _MAX_COUNT if k.endswith("_count") else _MAX_NS
            out[k] = top if v >= top else 0 if v <= 0 else int(v)  # +-Infinity parse too
    return out
