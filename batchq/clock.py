"""Every clock read goes through here, so tests can patch one place."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

__all__ = ["iso", "monotonic", "now_ms"]


def now_ms() -> int:
    return int(time.time() * 1000)


def monotonic() -> float:
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
