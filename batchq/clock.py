"""Every clock read goes through here, so tests can patch one place."""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["iso", "monotonic", "now_ms"]


def now_ms() -> int:
    return int(time.time() * 1000)


def monotonic() -> float:
    return time.monotonic()


def iso(ms: int | str | bytes | None) -> str | None:
    """An epoch-milliseconds value as RFC 3339 UTC, or None."""
    if ms is None or ms in ("", b""):
        return None
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).isoformat(timespec="milliseconds")
