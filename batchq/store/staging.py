"""A batch's items on their way in, before the commit makes the batch visible: read and encoded
on a thread a chunk at a time (:func:`chunks`), and stored by :class:`Staging`, which counts
them so that the commit can refuse a batch that lost some.

Staged items expire by themselves (the staging TTL), so a submit that dies half-way (killed,
Redis full, a bad line) leaves nothing behind for long. Every chunk renews the TTL: a slow
producer (``slow_command | batchq submit -``) keeps its batch as long as no gap between two
chunks outlasts it. A gap that does loses the chunks before it; the count shows it, and the
submission fails with :class:`~batchq.errors.SubmissionIncomplete` instead of committing a
batch whose first items workers would later fail as missing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterable
from typing import Any

from redis.asyncio import Redis

from batchq.errors import SubmissionIncomplete
from batchq.records import Item
from batchq.store.keys import BatchKeys

__all__ = ["STAGING_TTL_S", "Staging", "chunks"]

STAGING_TTL_S = 3600.0


class Staging:
    """The staged items of one submission: :meth:`add` stores a chunk, :meth:`check` tells
    whether all of them are still there."""

    def __init__(self, redis: Redis, bk: BatchKeys, ttl_s: float) -> None:
        self.redis = redis
        self.bk = bk
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self.ttl_s = ttl_s
        self.items = 0  # staged so far
        self.ids = 0  # custom ids in the id index so far

    async def add(self, items: dict[str, str], ids: dict[str, int]) -> None:
        """Store one chunk and renew the TTL of what came before; raise if some of that
        expired meanwhile."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self.bk.items, mapping=items)
            if ids:
                pipe.hset(self.bk.ids, mapping=ids)
            # Both keys every time: they then expire together, or not at all.
            pipe.pexpire(self.bk.items, self.ttl_ms)
            pipe.pexpire(self.bk.ids, self.ttl_ms)
            pipe.hlen(self.bk.items)
            res = await pipe.execute()
        self.items += len(items)
        self.ids += len(ids)
        # Item keys are indices, each written once: the hash holds exactly what was staged.
        self._raise_if_lost(int(res[-1]), ids_left=bool(res[-2]))

    async def check(self, client: Redis) -> None:
        """The same check, on ``client``: the commit's pipeline WATCHing both keys (in
        immediate mode), so that the commit fails if either expires after the check."""
        staged: Any = await client.hlen(self.bk.items)  # type: ignore[misc]
        ids_left: Any = await client.exists(self.bk.ids) if self.ids else 1
        self._raise_if_lost(int(staged), ids_left=bool(ids_left))

    def _raise_if_lost(self, staged: int, *, ids_left: bool) -> None:
        if staged != self.items or (self.ids and not ids_left):
            raise SubmissionIncomplete(min(staged, self.items), self.items, ttl_s=self.ttl_s)

    async def discard(self) -> None:
        await self.redis.unlink(self.bk.items, self.bk.ids)


async def chunks(
    items: Iterable[Item], size: int, models: set[str] | None = None
) -> AsyncIterator[tuple[dict[str, str], dict[str, int]]]:
    """``items`` as (index → stored form, custom id → index), ``size`` at a time, read and
    encoded on a thread.

    Parsing is most of a submission's CPU and the server's storing of each chunk most of the
    rest; on a thread the parser goes on while the event loop writes, so the two overlap
    instead of taking turns (the server works on another core). At most two chunks wait.
    The custom-id index (``batchq item``, ``retry --ids``) holds only ids that are not the
    item's own index: a file of bare prompts costs it nothing. ``models`` collects the models
    the items name (complete once the iteration ends).
    """
    Chunk = tuple[dict[str, str], dict[str, int]]
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Chunk | BaseException | None] = asyncio.Queue(maxsize=2)
    stop = threading.Event()

    def put(value: Chunk | BaseException | None) -> None:
        asyncio.run_coroutine_threadsafe(queue.put(value), loop).result()

    def produce() -> None:
        try:
            buf: dict[str, str] = {}
            ids: dict[str, int] = {}
            for n, item in enumerate(items):
                if stop.is_set():
                    return
                key = str(n)
                buf[key] = item.dumps()
                if item.custom_id != key:
                    ids[item.custom_id] = n
                if models is not None:
                    models.add(item.model)
                if len(buf) >= size:
                    put((buf, ids))
                    buf, ids = {}, {}
            if buf:
                put((buf, ids))
            put(None)
        except BaseException as e:  # the parser's InputError, mostly: raised in the caller
            put(e)

    producer = loop.run_in_executor(None, produce)
    try:
        while (got := await queue.get()) is not None:
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        stop.set()
        # Unblock a producer waiting on a full queue, then wait for it to notice the stop.
        while not producer.done():
            while not queue.empty():
                queue.get_nowait()
            await asyncio.sleep(0.001)
        await producer
