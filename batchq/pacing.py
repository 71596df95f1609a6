"""Pacing inside one worker: retry backoff and the per-worker request rate."""

from __future__ import annotations

import asyncio
import random

from batchq import clock

__all__ = ["RateLimiter", "backoff"]


def backoff(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with equal jitter, for the wait after failed ``attempt``.

    Half the delay is fixed so retries never come back at once; the other half is random so
    workers that failed together do not retry together.
    """
    delay = min(cap, base * (2 ** max(attempt - 1, 0)))
    return float(delay / 2 + (rng or random).uniform(0, delay / 2))


class RateLimiter:
    """At most ``rate`` request starts per second from this process (None: no limit)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = clock.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)
