from __future__ import annotations

import asyncio
import random

from batchq.pacing import RateLimiter, backoff


def test_backoff_grows_caps_and_jitters() -> None:
    rng = random.Random(1)
    for attempt, full in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 30.0)]:
        samples = [backoff(attempt, 1.0, 30.0, rng) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in samples)
        assert max(samples) - min(samples) > full / 4  # jittered, not constant


async def test_rate_limiter_spaces_starts() -> None:
    limiter = RateLimiter(50.0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.gather(*(limiter.wait() for _ in range(11)))
    # Ten intervals of 20 ms must have passed (a lower bound; never an upper one).
    assert loop.time() - t0 >= 0.19


async def test_no_rate_means_no_wait() -> None:
    limiter = RateLimiter(None)
    for _ in range(1000):
        await limiter.wait()
