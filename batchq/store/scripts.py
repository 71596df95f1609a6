"""The Lua scripts that keep batch bookkeeping atomic, called from Python.

Each multi-key update runs as one script so that counters, results, leases and arq's queue
never disagree, whatever the interleaving of workers, and whatever arq's at-least-once
delivery runs twice. The scripts are files in ``batchq/store/lua`` (``dispatch.lua``,
``start.lua``, ``finish.lua``, ...), each headed by its KEYS and ARGV; key names and arq's key
prefixes reach them from :mod:`batchq.store.keys` as arguments, never as literals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

from batchq.store.codec import text
from batchq.store.keys import (
    ARQ_IN_PROGRESS_PREFIX,
    ARQ_JOB_PREFIX,
    ARQ_RESULT_PREFIX,
    ARQ_RETRY_PREFIX,
    Keys,
)
from batchq.store.lua import SCRIPTS

__all__ = [
    "CANCELLED_PAYLOAD",
    "Claim",
    "DispatchOutcome",
    "ScriptCaller",
    "Scripts",
    "StartOutcome",
]

# What an item cancelled before it ran gets as its result.
CANCELLED_PAYLOAD = '{"s":"cancelled"}'


@dataclass(frozen=True, slots=True)
class DispatchOutcome:
    sent: int
    in_queue: int
    window: int
    active_batches: int


@dataclass(frozen=True, slots=True)
class Claim:
    """A job this worker claimed: what arq's ``run_job`` would read before running it."""

    job_id: str
    score: int
    payload: bytes | None  # None if the job's key is gone (expired)
    job_try: int
    model: str = ""  # the model its item names; '' for a batch dispatched without regard to it


StartOutcome = str  # 'ok' | 'final' | 'cancelled' | 'paused' | 'missing' | 'moved'


class ScriptCaller:
    """Runs the registry's scripts on one client, by name. It holds each script it has run:
    the registry keeps a script only while someone does, and registering one again hashes its
    text, a cost on every job."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._held: dict[str, AsyncScript] = {}

    async def _run(
        self, name: str, keys: list[str], args: list[Any], *, client: Redis | Pipeline | None = None
    ) -> Any:
        """Run the script ``name``; ``client``: a pipeline or transaction to queue it in
        instead (then it returns the pipeline)."""
        script = self._held.get(name)
        if script is None:
            script = self._held[name] = SCRIPTS.script(self.redis, name)
        return await cast(Any, script)(keys=keys, args=args, client=client)


class Scripts(ScriptCaller):
    """The scripts registered on one client; EVALSHA with a transparent reload."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        super().__init__(redis)
        self.keys = keys

    async def dispatch(
        self,
        *,
        now_ms: int,
        job_ttl_ms: int,
        function: str,
        max_items: int,
        window_factor: float,
        min_window: int,
        models: Sequence[str] = (),
    ) -> DispatchOutcome:
        """``models``: dispatch only batches of these models (and the wildcards), each with
        a window of its own; none: every batch, one window (see dispatch.lua)."""
        k = self.keys
        res = await self._run(
            "dispatch",
            [k.ready, k.queue, k.workers, k.worker_slots, k.legacy_active],
            [
                now_ms,
                k.batch_prefix(),
                job_ttl_ms,
                function,
                max_items,
                window_factor,
                min_window,
                ARQ_JOB_PREFIX,
                ARQ_RESULT_PREFIX,
                len(models),
                *models,
            ],
        )
        sent, in_queue, window, active = (int(x) for x in res)
        return DispatchOutcome(sent, in_queue, window, active)

    async def join(self, batch_id: str, *, client: Redis | Pipeline | None = None) -> None:
        """Ready the batch for dispatch at its level's smallest pass (:mod:`batchq.store.stride`);
        ``client``: e.g. a transaction to do it in."""
        k = self.keys
        await self._run(
            "join",
            keys=[k.ready, k.batch(batch_id).meta],
            args=[batch_id],
            client=client,
        )

    async def begin(
        self,
        batch_id: str,
        index: int,
        jid: str,
        *,
        now_ms: int,
        lease_until_ms: int,
        endpoint: str = "",
        model: str = "",
    ) -> tuple[StartOutcome, int, bytes | None]:
        """Take the item's lease; returns ('ok', attempt number, the stored item) or why not
        to run it. ``endpoint`` (an endpoint id) and ``model``: 'moved' if that host no longer
        serves that model (see :mod:`batchq.store.models`)."""
        k = self.keys
        bk = k.batch(batch_id)
        res = await self._run(
            "start",
            [bk.meta, bk.results, k.leases, k.ready, k.queue, bk.items, k.serving, k.open],
            [batch_id, index, jid, now_ms, lease_until_ms, CANCELLED_PAYLOAD, endpoint, model],
        )
        if isinstance(res, list):
            return text(res[0]), int(res[1]), res[2] if len(res) > 2 else None
        return text(res), 0, None

    async def start(
        self, batch_id: str, index: int, jid: str, *, now_ms: int, lease_until_ms: int
    ) -> tuple[StartOutcome, int]:
        """:meth:`begin` without the item."""
        outcome, attempt, _ = await self.begin(
            batch_id, index, jid, now_ms=now_ms, lease_until_ms=lease_until_ms
        )
        return outcome, attempt

    async def claim(
        self,
        *,
        now_ms: int,
        ttl_ms: int,
        limit: int,
        scan: int = 1000,
        models: Sequence[str] = (),
    ) -> list[Claim]:
        """Claim up to ``limit`` due jobs for this worker, as arq does (its in-progress key,
        with ``ttl_ms``, and its try counter), looking at most at ``scan`` of them; with
        ``models``, only jobs of those models and the wildcards (see claim.lua)."""
        if limit <= 0:
            return []
        res = await self._run(
            "claim",
            [self.keys.queue],
            [
                now_ms,
                ttl_ms,
                limit,
                scan,
                ARQ_IN_PROGRESS_PREFIX,
                ARQ_RETRY_PREFIX,
                ARQ_JOB_PREFIX,
                self.keys.batch_prefix(),
                len(models),
                *models,
            ],
        )
        return [
            Claim(
                text(res[i]),
                int(float(res[i + 1])),
                res[i + 2] or None,
                int(res[i + 3]),
                text(res[i + 4]),
            )
            for i in range(0, len(res), 5)
        ]

    async def finish(
        self,
        batch_id: str,
        index: int,
        jid: str,
        status: str,
        payload: str | bytes,
        *,
        now_ms: int,
        tokens: tuple[int, int] = (0, 0),
    ) -> bool:
        """Record the item's result once; ``tokens`` (prompt, output) add to the batch's."""
        bk = self.keys.batch(batch_id)
        res = await self._run(
            "finish",
            [
                bk.meta,
                bk.results,
                self.keys.leases,
                self.keys.ready,
                self.keys.queue,
                self.keys.open,
            ],
            [
                batch_id,
                index,
                jid,
                status,
                payload,
                now_ms,
                *tokens,
                ARQ_IN_PROGRESS_PREFIX,
                ARQ_RETRY_PREFIX,
                ARQ_JOB_PREFIX,
            ],
        )
        return bool(int(res))

    async def release(
        self,
        batch_id: str,
        jid: str,
        *,
        score: int | None = None,
        refund: bool = False,
        retried: bool = False,
    ) -> None:
        """Give up the lease; with ``score``, make the job due again at that queue score; with
        ``refund``, the attempt it started does not count; with ``retried``, count the job in
        the batch's retries."""
        await self._run(
            "release",
            [self.keys.batch(batch_id).meta, self.keys.leases, self.keys.queue, self.keys.open],
            [jid, "" if score is None else score, "1" if refund else "0", "1" if retried else "0"],
        )

    async def reap(
        self, *, now_ms: int, claim_ttl_ms: int, grace_ms: int, limit: int = 1000
    ) -> int:
        """Re-queue items whose worker died: lapsed leases, and arq claims older than
        ``grace_ms`` that never got a lease (``claim_ttl_ms``: the TTL arq gives a claim)."""
        k = self.keys
        res = await self._run(
            "reap",
            [k.leases, k.queue, k.ready, k.workers, k.worker_slots, k.open],
            [
                now_ms,
                k.batch_prefix(),
                limit,
                claim_ttl_ms,
                grace_ms,
                ARQ_IN_PROGRESS_PREFIX,
                ARQ_JOB_PREFIX,
                CANCELLED_PAYLOAD,
            ],
        )
        return int(res)

    async def repair_range(self, batch_id: str, start: int, end: int, *, now_ms: int) -> int:
        """Re-queue the lost items among indices [start, end); -1 if there is no such batch."""
        k = self.keys
        bk = k.batch(batch_id)
        res = await self._run(
            "repair",
            [bk.meta, bk.results, bk.redo, k.queue, k.leases, k.ready, k.open],
            [
                batch_id,
                start,
                end,
                now_ms,
                ARQ_IN_PROGRESS_PREFIX,
                ARQ_JOB_PREFIX,
                CANCELLED_PAYLOAD,
            ],
        )
        return int(res)
