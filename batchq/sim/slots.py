"""A simulated model's parallel slots, granted in FIFO order, and its residency pins."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

__all__ = ["ModelState"]


class ModelState:
    """Slots, residency pins and peak concurrency of one configured model."""

    __slots__ = ("busy", "idle", "peak", "refs", "waiters")

    def __init__(self) -> None:
        self.busy = 0  # slots held, i.e. requests being generated
        self.peak = 0
        self.refs = 0  # admitted requests pinning the model in memory
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.idle = asyncio.Event()
        self.idle.set()

    async def acquire(self, parallel: int) -> None:
        if self.busy < parallel and not self.waiters:
            self.busy += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed over just as we were cancelled
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(fut)
            raise

    def release(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # hand the slot straight over, so FIFO order holds
                return
        self.busy -= 1

    def unpin(self) -> None:
        self.refs -= 1
        if self.refs == 0:
            self.idle.set()
