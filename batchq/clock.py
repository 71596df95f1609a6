"""Every clock read goes through here, so tests can patch one place.

Wall-clock time is the Redis server's: workers run on many machines, and a lease written by one
whose clock runs two hours ahead would look valid to the others for two hours (or a worker two
hours behind would stamp ``started_at`` before ``created_at``). Each process measures the offset
of its own clock from the server's with ``TIME`` when it connects (:func:`sync`) and workers
measure it again with every heartbeat, so :func:`now_ms` is the server's time to within half a
round trip, in every process, without a round trip per read.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
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


# The moments a datetime can show; a stored value beyond them shows as the nearest one.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_MIN_MS = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // _MS
_MAX_MS = (datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC) - _EPOCH) // _MS


def iso(ms: object) -> str | None:
    """An epoch-milliseconds value as RFC 3339 UTC; None for None, empty or not a number.

    Never raises: what is read back is whatever was stored (by any version, any client, or by
    hand), and one bad value must not break the listing of every batch. A number beyond what a
    datetime can show (year 1 to 9999) shows as the nearest such moment.
    """
    if isinstance(ms, bytes):
        try:
            ms = ms.decode("ascii")
        except UnicodeDecodeError:
            return None
    if isinstance(ms, bool) or not isinstance(ms, int | float | str) or ms == "":
        return None
    try:
        value = int(ms)
    except (ValueError, OverflowError):  # "1.7e+12" (as Lua may write a number), inf
        try:
            number = float(ms)
        except ValueError:
            return None
        if math.isnan(number):
            return None
        value = (_MAX_MS if number > 0 else _MIN_MS) if math.isinf(number) else int(number)
    value = min(max(value, _MIN_MS), _MAX_MS)
    moment = _EPOCH + timedelta(milliseconds=value)
    return moment.isoformat(timespec="milliseconds")
