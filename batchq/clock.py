"""Every clock read goes through here, so tests can patch one place.

Wall-clock time is the Redis server's: workers run on many machines, and a lease written by one
whose clock runs two hours ahead would look valid to the others for two hours (or a worker two
hours behind would stamp ``started_at`` before ``created_at``). Each process measures the offset
of its own clock from the server's with ``TIME`` when it connects (:func:`sync`) and workers
measure it again with every heartbeat, so :func:`now_ms` is the server's time to within half a
round trip, in every process, without a round trip per read.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Protocol

__all__ = ["iso", "monotonic", "now_ms", "offset_ms", "sync"]

# The server's clock minus this machine's, in ms; 0 until the first sync.
_offset_ms = 0


class _TimeSource(Protocol):
    # redis-py's asyncio client, whose stubs type the reply loosely.
    def time(self) -> Any: ...


def now_ms() -> int:
    """Epoch milliseconds by the Redis server's clock (this machine's, before any sync)."""
    return int(time.time() * 1000) + _offset_ms


def offset_ms() -> int:
    """How far the server's clock is ahead of this machine's, in ms, as last measured."""
    return _offset_ms


async def sync(redis: _TimeSource) -> int:
    """Measure the server's clock against this machine's (one ``TIME``) and keep the offset
    for :func:`now_ms`; returns it. It also serves as the connection's ping."""
    global _offset_ms
    before = time.time()
    seconds, micros = await redis.time()
    after = time.time()
    # The server read its clock somewhere within the round trip: its middle is the best guess.
    local_ms = (before + after) * 500
    _offset_ms = round(int(seconds) * 1000 + int(micros) / 1000 - local_ms)
    return _offset_ms


def monotonic() -> float:
    """For durations within this process; never compared across machines."""
    return time.monotonic()


def iso(ms: int | str | bytes | None) -> str | None:
    """An epoch-milliseconds value as RFC 3339 UTC, or None."""
    if ms is None or ms in ("", b""):
        return None
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).isoformat(timespec="milliseconds")
