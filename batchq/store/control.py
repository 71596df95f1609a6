"""The Lua scripts behind controlling a batch while it runs: cancel, pause and resume,
re-running items, deadlines, and each item's error history.

They sit beside :mod:`batchq.store.scripts` and keep its invariants: one result per item, counters
that always add up, and no item lost between batchq's cursor, its redo list and arq's queue.
The scripts are files in ``batchq/store/lua`` (``cancel.lua``, ``pause.lua``, ...); key names
and arq's key prefixes reach them from :mod:`batchq.store.keys` as arguments.
"""

from __future__ import annotations

from redis.asyncio import Redis

from batchq.records import ItemError
from batchq.store.codec import text
from batchq.store.keys import ARQ_IN_PROGRESS_PREFIX, ARQ_JOB_PREFIX, Keys
from batchq.store.scripts import CANCELLED_PAYLOAD, ScriptCaller

__all__ = ["ERROR_HISTORY", "ControlScripts"]

# Failed attempts kept per item, the latest ones. Only items that fail have an entry at all.
ERROR_HISTORY = 10
# Ollama's messages can be long (a runner's crash log); the final error keeps it whole.
_MESSAGE_CHARS = 300


class ControlScripts(ScriptCaller):
    """The control scripts registered on one client; EVALSHA with a transparent reload."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        super().__init__(redis)
        self.keys = keys

    async def cancel(self, batch_id: str, *, now_ms: int) -> str | None:
        """The batch's state afterwards ('cancelled' unless it was already final); None if
        there is no such batch."""
        bk = self.keys.batch(batch_id)
        res = await self._run(
            "cancel",
            [bk.meta, bk.results, bk.redo, self.keys.ready, self.keys.queue, self.keys.open],
            [batch_id, now_ms, CANCELLED_PAYLOAD, ARQ_IN_PROGRESS_PREFIX, ARQ_JOB_PREFIX],
        )
        return None if res is None else text(res)

    async def pause(self, batch_id: str, *, now_ms: int) -> str | None:
        """The batch's state afterwards ('paused' unless it was already final); None if there
        is no such batch."""
        k = self.keys
        bk = k.batch(batch_id)
        res = await self._run(
            "pause",
            [bk.meta, bk.results, bk.redo, k.queue, k.ready, k.open],
            [batch_id, now_ms, ARQ_IN_PROGRESS_PREFIX, ARQ_JOB_PREFIX],
        )
        return None if res is None else text(res)

    async def resume(self, batch_id: str, *, now_ms: int) -> str | None:
        k = self.keys
        res = await self._run(
            "resume",
            [k.batch(batch_id).meta, k.queue, k.leases, k.ready, k.open],
            [batch_id, now_ms, ARQ_IN_PROGRESS_PREFIX],
        )
        return None if res is None else text(res)

    async def release_failed(
        self,
        batch_id: str,
        index: int,
        jid: str,
        *,
        score: int,
        attempt: int,
        error: ItemError,
        now_ms: int,
    ) -> None:
        """Give up the lease of a failed attempt that will be retried (making the job due at
        ``score`` again, as :meth:`Scripts.release` does), keep its error, and count the
        retry in the batch's ``retried``."""
        k = self.keys
        bk = k.batch(batch_id)
        code = "" if error.status_code is None else error.status_code
        await self._run(
            "release_failed",
            [bk.meta, k.leases, k.queue, bk.errors, bk.prior, k.open],
            [
                jid,
                score,
                index,
                attempt,
                error.type,
                error.message[:_MESSAGE_CHARS],
                code,
                now_ms,
                ERROR_HISTORY,
            ],
        )

    async def retry_stage(
        self,
        batch_id: str,
        *,
        statuses: str,
        now_ms: int,
        span: tuple[int, int] | None = None,
        indices: list[int] | None = None,
    ) -> int:
        """Take the final items with one of ``statuses`` ('*': any) among ``span`` (first,
        end) or ``indices`` out of the results, for :meth:`retry_commit` to dispatch again.
        How many; -1: no such batch; -2: the batch is cancelled."""
        k = self.keys
        bk = k.batch(batch_id)
        select: list[int | str] = ["range", *span] if span else ["list", *(indices or [])]
        res = await self._run(
            "retry_stage",
            [bk.meta, bk.results, bk.retrying, bk.errors, bk.prior, bk.tries, k.open, bk.reruns],
            [batch_id, now_ms, statuses, ERROR_HISTORY, *select],
        )
        return int(res)

    async def retry_commit(self, batch_id: str) -> int:
        """Dispatch the staged items again; how many."""
        bk = self.keys.batch(batch_id)
        res = await self._run(
            "retry_commit", [bk.meta, bk.retrying, bk.redo, self.keys.ready], [batch_id]
        )
        return int(res)

    async def expire(self, batch_id: str, *, now_ms: int, chunk: int, payload: str | bytes) -> int:
        """One step of expiring a batch past its deadline; how many results are left to
        write (0: done), -1 if there is no such batch, -2 if the deadline is not due."""
        bk, k = self.keys.batch(batch_id), self.keys
        keys = [bk.meta, bk.results, bk.redo, bk.tries, k.queue, k.ready, k.open]
        args = [batch_id, now_ms, chunk, payload, ARQ_IN_PROGRESS_PREFIX, ARQ_JOB_PREFIX]
        return int(await self._run("expire", keys, args))
