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
        self._orphans: set[asyncio.Task[None]] = set()  # releases of slots nobody waits for

    @property
    def waiting(self) -> int:
        """This worker's requests waiting for a slot of this gate."""
        return sum(not fut.done() for _, fut in self._waiters)

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
        """Give the slot back, teaching the limit what the request showed; in the same call
        it goes to this worker's next waiting request if the limit allows."""
        sent_with = self.held.pop(token, None)
        if sent_with is None:
            return
        outcome, wait, service = outcome_of(result)
        head = self._head()
        now = clock.now_ms()
        try:
            _, found = await self.limit.observe(
                token,
                outcome,
                now_ms=now,
                wait_ms=wait,
                service_ms=service,
                sent_with=sent_with,
                next_token=head or "",
                next_until_ms=now + self.lease_ms,
            )
            # (Unless the poller admitted it meanwhile: the script then counted it held.)
            if head is not None and found and head not in self.held:
                self._granted(head, found)
        finally:
            self._kick.set()

    def _head(self) -> str | None:
        """The first waiter still waiting, if any."""
        while self._waiters and self._waiters[0][1].done():
            self._waiters.popleft()
        return self._waiters[0][0] if self._waiters else None

    def _granted(self, token: str, found: int) -> None:
        """``token`` holds a slot: wake its waiter (or give it back if it stopped waiting)."""
        self.held[token] = found
        self.peak = max(self.peak, len(self.held))
        for i, (waiter, fut) in enumerate(self._waiters):
            if waiter == token:
                del self._waiters[i]
                if not fut.done():
                    fut.set_result(None)
                    return
                break
        # Its job was cancelled while the slot was on its way: give it back unused.
        task = asyncio.create_task(self.release(token, None))
        self._orphans.add(task)
        task.add_done_callback(self._orphans.discard)

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
        while (token := self._head()) is not None:
            self._kick.clear()
            try:
                found = await self.limit.try_admit(
                    token, now_ms=(now := clock.now_ms()), slot_until_ms=now + self.lease_ms
                )
            except RedisError as e:
                log.warning("auto concurrency: admission failed: %s", e)
                found = 0
            if found:
                if token not in self.held:  # not already handed over by a release
                    self._granted(token, found)
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
        self.last_registered = 0  # what registered_slots() last measured (0: not yet)

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
        self.last_registered = max(1, min(self.settings.max_in_flight, peak + 1 + -(-peak // 4)))
        return self.last_registered
