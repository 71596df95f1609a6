"""A worker's side of ``--concurrency auto``: a gate per (host, model) in front of the shared
self-tuned limit of :mod:`batchq.store.autolimit`.

Jobs that find every slot taken queue here, in order, and one poller per gate asks Redis for
them: a worker with 30 jobs waiting sends one admission a poll, not 30, and a slot this worker
gives back is offered to its own next job at once, without waiting for the poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from redis.asyncio import Redis
from redis.exceptions import RedisError

from batchq import clock
from batchq.backends.base import Reply
from batchq.errors import BackendError
from batchq.settings import Settings
from batchq.store.autolimit import AutoLimit, Outcome, queue_wait_ms
from batchq.store.keys import Keys

__all__ = ["AutoGate", "AutoGates", "outcome_of"]

log = logging.getLogger("batchq.worker")

# How long a job waits before its gate asks Redis again when every slot is taken: slots of
# other workers free up on their release, which this worker does not see, so this is a poll.
_POLL_S = 0.02

# Failures that say the server has too much to do: the limit shrinks.
_OVERLOAD_KINDS = frozenset({"server_busy", "timeout"})


def outcome_of(result: Reply | BackendError | None) -> tuple[Outcome, float, float]:
    """What a request's end tells the limit: (outcome, queue wait ms, service ms)."""
    if isinstance(result, Reply):
        timing = queue_wait_ms(result.metrics)
        return ("none", 0.0, 0.0) if timing is None else ("ok", *timing)
    if isinstance(result, BackendError) and result.kind in _OVERLOAD_KINDS:
        return "overload", 0.0, 0.0
    return "none", 0.0, 0.0


class AutoGate:
    """This worker's waiters and slots for one (host, model)."""

    def __init__(self, limit: AutoLimit, lease_ms: int) -> None:
        self.limit = limit
        self.lease_ms = lease_ms
        self.held: dict[str, int] = {}  # token -> the requests in flight it was admitted with
        self.peak = 0  # most slots held at once since the last heartbeat read it
        self._waiters: deque[tuple[str, asyncio.Future[None]]] = deque()
        self._kick = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None

    async def acquire(self, token: str) -> None:
        """Wait for a slot of the shared limit; it is held until :meth:`release`."""
        if not self._waiters and await self._try(token):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((token, fut))
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # Admitted just as it was cancelled: give the slot back unused.
                await asyncio.shield(self.release(token, None))
            raise

    async def release(self, token: str, result: Reply | BackendError | None) -> None:
        """Give the slot back, teaching the limit what the request showed."""
        sent_with = self.held.pop(token, None)
        if sent_with is None:
            return
        outcome, wait, service = outcome_of(result)
        try:
            await self.limit.observe(
                token,
                outcome,
                now_ms=clock.now_ms(),
                wait_ms=wait,
                service_ms=service,
                sent_with=sent_with,
            )
        finally:
            self._kick.set()

    async def renew(self, until_ms: int) -> None:
        await self.limit.renew(set(self.held), until_ms)

    async def _try(self, token: str) -> bool:
        now = clock.now_ms()
        found = await self.limit.try_admit(token, now_ms=now, slot_until_ms=now + self.lease_ms)
        if found:
            self.held[token] = found
            self.peak = max(self.peak, len(self.held))
        return bool(found)

    async def _poll(self) -> None:
        while self._waiters:
            token, fut = self._waiters[0]
            if fut.done():  # its job was cancelled while waiting
                self._waiters.popleft()
                continue
            self._kick.clear()
            try:
                admitted = await self._try(token)
            except RedisError as e:
                log.warning("auto concurrency: admission failed: %s", e)
                admitted = False
            if admitted:
                self._waiters.popleft()
                if fut.done():
                    await self.release(token, None)
                else:
                    fut.set_result(None)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_POLL_S):
                    await self._kick.wait()


class AutoGates:
    """Every gate of one worker, made on first use."""

    def __init__(self, settings: Settings, redis: Redis, keys: Keys, lease_ms: int) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = keys
        self.lease_ms = lease_ms
        self.gates: dict[tuple[str, str], AutoGate] = {}

    def gate(self, url: str, model: str) -> AutoGate:
        key = (url, model)
        gate = self.gates.get(key)
        if gate is None:
            limit = AutoLimit(
                self.redis, self.keys, url, model, ceiling=self.settings.max_concurrency
            )
            gate = self.gates[key] = AutoGate(limit, self.lease_ms)
        return gate

    async def renew(self, until_ms: int) -> None:
        for gate in self.gates.values():
            await gate.renew(until_ms)

    def registered_slots(self) -> int:
        """What the worker registers in ``worker-slots`` (the dispatch window's size): the most
        requests it held at once since the last call, plus room to grow, within its ceiling."""
        peak = 0
        for gate in self.gates.values():
            peak += max(gate.peak, len(gate.held))
            gate.peak = len(gate.held)
        if not self.gates:
            peak = 2
        return max(1, min(self.settings.max_in_flight, peak + 1 + -(-peak // 4)))
