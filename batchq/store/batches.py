"""Batch bookkeeping in Redis: creating a batch, its status, the list, and cancelling.

A batch is a metadata hash with O(1) counters, a hash of items by index, a hash of results by
index and a short list of indices to dispatch again. Items are not in arq's queue until the
dispatcher moves them there a small window at a time (see :mod:`batchq.store.dispatch`).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError, WatchError

from batchq import clock
from batchq.errors import BatchNotFound, BatchStateError, InputError
from batchq.options import DEFAULT_PRIORITY, DEFAULT_WEIGHT, SubmitOptions
from batchq.records import BatchState, BatchStatus, Item, ItemStatus
from batchq.store.codec import text
from batchq.store.control import ControlScripts
from batchq.store.keys import BATCH_ID_RE, Keys
from batchq.store.scripts import Scripts
from batchq.store.staging import STAGING_TTL_S, ModelCodes, Staging, chunks

__all__ = ["BatchStore", "new_batch_id"]


def new_batch_id() -> str:
    return "b_" + secrets.token_hex(8)


class BatchStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = Scripts(redis, keys)
        self.control = ControlScripts(redis, keys)

    # -- submission ---------------------------------------------------------------------------

    async def submit(
        self,
        items: Iterable[Item],
        options: SubmitOptions | None = None,
        *,
        chunk: int = 1000,
        durable: bool = True,
        staging_ttl: float = STAGING_TTL_S,
    ) -> tuple[str, int]:
        """Store every item, then make the batch visible in one transaction.

        ``items`` is consumed lazily, so a parser that raises on line N aborts the submission
        with nothing enqueued: staged items are deleted (and would expire anyway). Staged
        items live ``staging_ttl`` seconds after the latest chunk; if some expire before the
        commit, it raises :class:`SubmissionIncomplete` (see :mod:`batchq.store.staging`).
        ``options``: its name, metadata, deadline (see :mod:`batchq.store.deadlines`), the URL
        a worker POSTs the final status to (see :mod:`batchq.store.hooks`), and its place in
        the dispatch order (see :mod:`batchq.store.stride`).
        """
        opts = options or SubmitOptions()
        extra: dict[str, str] = {}
        if opts.metadata:
            extra["metadata"] = json.dumps(dict(opts.metadata), ensure_ascii=False)
        if opts.deadline_ms is not None:
            extra["deadline"] = str(opts.deadline_ms)
        if opts.notify:
            extra["notify"] = opts.notify
            # The script that closes the batch announces it in this set.
            extra["hooks"] = self.keys.hooks
        batch_id = new_batch_id()
        bk = self.keys.batch(batch_id)
        staging = Staging(self.redis, bk, staging_ttl)
        models = ModelCodes()
        try:
            async for buf, ids, codes in chunks(items, chunk, models):
                await staging.add(buf, ids, codes)
            total = staging.items
            if total == 0:
                raise InputError("the input has no items")
            # Dispatched by model (batchq.store.models): one model in the hash; several by
            # their codes, one byte an item.
            several = len(models.names) > 1 and not models.overflow
            if len(models.names) == 1:
                extra["model"] = models.names[0]
            elif several:
                extra["models"] = json.dumps(models.names, ensure_ascii=False)
                for c, n in enumerate(models.counts):
                    extra[f"n:{c}"] = str(n)
            now = clock.now_ms()
            async with self.redis.pipeline(transaction=True) as tx:
                # Watched, the staged items cannot expire between the check and the commit.
                await tx.watch(bk.items, bk.ids, bk.codes)
                await staging.check(tx)
                tx.multi()  # type: ignore[no-untyped-call]
                tx.hset(
                    bk.meta,
                    mapping={
                        "name": opts.name or "",
                        "state": BatchState.QUEUED.value,
                        "total": total,
                        "next": 0,
                        "running": 0,
                        "succeeded": 0,
                        "failed": 0,
                        "cancelled": 0,
                        "expired": 0,
                        "cancel_from": -1,
                        "created_at": now,
                        "priority": opts.priority,
                        "weight": repr(opts.weight),
                        "active": 0,
                        **extra,
                    },
                )
                tx.persist(bk.items)
                tx.persist(bk.ids)
                if several:
                    tx.persist(bk.codes)
                else:
                    tx.unlink(bk.codes)
                tx.zadd(self.keys.batches, {batch_id: now})
                tx.zadd(self.keys.open, {batch_id: now})
                if opts.deadline_ms is not None:
                    tx.zadd(self.keys.deadlines, {batch_id: opts.deadline_ms})
                # Ready at its level's smallest pass, atomically with the rest.
                await self.scripts.join(batch_id, client=tx)
                try:
                    await tx.execute()
                except WatchError:
                    # Only their expiry changes staged items: the check now says so.
                    await staging.check(self.redis)
                    raise
        except BaseException:
            with contextlib.suppress(RedisError):  # else the staging TTL removes them
                await staging.discard()
            raise
        if durable:
            # WAITAOF and WAIT wait for the writes of the connection they are sent on, and the
            # transaction took whichever pooled connection was free: a write after it on a
            # connection of its own, later in the AOF and the replication stream than the
            # commit, is what the wait is for.
            async with self.redis.client() as conn:
                await conn.incr(self.keys.committed)
                await self.wait_durable(client=conn)
        return batch_id, total

    async def wait_durable(self, timeout_ms: int = 5000, *, client: Redis | None = None) -> bool:
        """Wait until the writes made on ``client`` (default: the store's) are fsynced to the
        server's AOF (Redis ≥ 7.2, Valkey) and held by every replica connected to it.

        Returns False where the server cannot promise it (no WAITAOF, AOF off, or a replica
        that did not answer in time): then the batch survives a crash of the server process
        but not necessarily of the machine, nor a failover to a replica that lacks it.
        """
        r = client or self.redis
        replicas = int((await r.info("replication")).get("connected_slaves", 0))
        try:
            res = await r.execute_command("WAITAOF", 1, 0, timeout_ms)  # type: ignore[no-untyped-call]
            on_disk = bool(res and int(res[0]) >= 1)
        except ResponseError:
            on_disk = False
        if not replicas:
            return on_disk
        # Replication is asynchronous: without this, a failover (Sentinel) soon after submit
        # could promote a replica that never received the batch submit reported as stored.
        acked = await r.execute_command("WAIT", replicas, timeout_ms)  # type: ignore[no-untyped-call]
        return on_disk and int(acked) >= replicas

    # -- reading ------------------------------------------------------------------------------

    async def meta(self, batch_id: str) -> dict[str, str]:
        _check_id(batch_id)
        raw: dict[bytes, bytes] = await self.redis.hgetall(self.keys.batch(batch_id).meta)  # type: ignore[misc]
        if not raw:
            raise BatchNotFound(batch_id)
        return {text(k): text(v) for k, v in raw.items()}

    async def status(self, batch_id: str) -> BatchStatus:
        return _status(batch_id, await self.meta(batch_id))

    async def recent(self, limit: int = 50) -> list[BatchStatus]:
        ids = [text(b) for b in await self.redis.zrevrange(self.keys.batches, 0, limit - 1)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for bid in ids:
                pipe.hgetall(self.keys.batch(bid).meta)
            metas: list[dict[Any, Any]] = await pipe.execute()
        out = []
        for bid, raw in zip(ids, metas, strict=True):
            if raw:
                out.append(_status(bid, {text(k): text(v) for k, v in raw.items()}))
        return out

    # -- control ------------------------------------------------------------------------------

    async def repair(self, batch_id: str, *, chunk: int = 1000) -> int:
        """Find items that are neither final, queued, running nor claimed, and dispatch them
        again under the same job ids. Safe at any time: it touches only lost items."""
        total = int((await self.meta(batch_id))["total"])
        found = 0
        for start in range(0, total, chunk):
            n = await self.scripts.repair_range(
                batch_id, start, start + chunk, now_ms=clock.now_ms()
            )
            if n < 0:
                raise BatchNotFound(batch_id)
            found += n
        return found

    async def idle_batches(self, idle_ms: int) -> list[str]:
        """Unfinished batches without progress for ``idle_ms``."""
        raw = await self.redis.zrangebyscore(self.keys.open, "-inf", clock.now_ms() - idle_ms)
        return [text(b) for b in raw]

    async def cancel(self, batch_id: str) -> BatchStatus:
        _check_id(batch_id)
        res = await self.control.cancel(batch_id, now_ms=clock.now_ms())
        if res is None:
            raise BatchNotFound(batch_id)
        return await self.status(batch_id)

    async def pause(self, batch_id: str) -> BatchStatus:
        """Dispatch nothing more of the batch until :meth:`resume`; requests already sent to
        Ollama finish. Pausing a paused batch changes nothing."""
        _check_id(batch_id)
        res = await self.control.pause(batch_id, now_ms=clock.now_ms())
        if res is None:
            raise BatchNotFound(batch_id)
        if res != BatchState.PAUSED.value:
            raise BatchStateError(batch_id, res, "nothing left to pause")
        return await self.status(batch_id)

    async def retry(
        self,
        batch_id: str,
        *,
        statuses: Iterable[ItemStatus] = (),
        indices: Iterable[int] = (),
        chunk: int = 1000,
    ) -> int:
        """Run final items again under the same batch id: every item whose result has one of
        ``statuses``, and the ``indices`` whatever their final status. Items that are not
        final yet are left alone. Returns how many will run again.

        Each one's result is replaced when its new run finishes; until then it counts as
        queued. Its attempts add up across runs, each run with ``max_attempts`` of its own; the
        error of its last run joins its error history. A finished batch runs and finishes
        again; a paused one runs them on resume. A cancelled batch cannot be retried.
        """
        meta = await self.meta(batch_id)
        if meta["state"] == BatchState.CANCELLED.value:
            raise BatchStateError(batch_id, meta["state"], "a cancelled batch cannot be retried")
        wanted = sorted({ItemStatus(s).value for s in statuses})
        chosen = sorted(set(indices))
        total = int(meta["total"])
        # A scan ends early once it has met as many items as the counters held.
        left = sum(int(meta.get(s, 0)) for s in wanted)
        n = 0
        try:
            for start in range(0, total if wanted else 0, chunk):
                if left <= 0:
                    break
                got = await self._retry_stage(
                    batch_id, ",".join(wanted), span=(start, start + chunk)
                )
                n += got
                left -= got
            for start in range(0, len(chosen), chunk):
                n += await self._retry_stage(batch_id, "*", indices=chosen[start : start + chunk])
        finally:
            # Even after an error, what was staged runs (or the repairer finds it).
            if n:
                await self.control.retry_commit(batch_id)
        return n

    async def _retry_stage(
        self,
        batch_id: str,
        statuses: str,
        *,
        span: tuple[int, int] | None = None,
        indices: list[int] | None = None,
    ) -> int:
        n = await self.control.retry_stage(
            batch_id, statuses=statuses, now_ms=clock.now_ms(), span=span, indices=indices
        )
        if n == -1:
            raise BatchNotFound(batch_id)
        if n == -2:
            raise BatchStateError(batch_id, "cancelled", "a cancelled batch cannot be retried")
        return n

    async def resume(self, batch_id: str) -> BatchStatus:
        """Dispatch a paused batch again, from where it stopped. A batch that is not paused
        is left as it is."""
        _check_id(batch_id)
        if await self.control.resume(batch_id, now_ms=clock.now_ms()) is None:
            raise BatchNotFound(batch_id)
        return await self.status(batch_id)


def _check_id(batch_id: str) -> None:
    # Also keeps a malformed id from reaching key names.
    if not BATCH_ID_RE.match(batch_id):
        raise BatchNotFound(batch_id)


def _status(batch_id: str, m: dict[str, str]) -> BatchStatus:
    total = int(m["total"])
    running = int(m.get("running", 0))
    succeeded = int(m.get("succeeded", 0))
    failed = int(m.get("failed", 0))
    cancelled = int(m.get("cancelled", 0))
    expired = int(m.get("expired", 0))
    return BatchStatus(
        batch_id=batch_id,
        name=m.get("name") or None,
        metadata=json.loads(m["metadata"]) if m.get("metadata") else {},
        state=BatchState(m["state"]),
        total=total,
        queued=total - running - succeeded - failed - cancelled - expired,
        running=running,
        succeeded=succeeded,
        failed=failed,
        cancelled=cancelled,
        expired=expired,
        created_at=clock.iso(m.get("created_at")),
        started_at=clock.iso(m.get("started_at")),
        finished_at=clock.iso(m.get("finished_at")),
        retried=int(m.get("retried", 0)),
        tokens_in=int(m.get("tokens_in", 0)),
        tokens_out=int(m.get("tokens_out", 0)),
        deadline=clock.iso(m.get("deadline")),
        notify=_hook_state(m),
        priority=int(m.get("priority", DEFAULT_PRIORITY)),
        weight=float(m.get("weight", DEFAULT_WEIGHT)),
    )


def _hook_state(m: dict[str, str]) -> str | None:
    if not m.get("notify"):
        return None
    finished = m.get("finished_at")
    if not finished:
        return "waiting"
    if m.get("hook_for") != finished:
        return "pending"  # this completion has not been claimed yet
    return m.get("hook_state") or "pending"
