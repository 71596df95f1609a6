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

__all__ = ["STAGING_TTL_S", "ModelCodes", "Staging", "chunks"]

STAGING_TTL_S = 3600.0


class ModelCodes:
    """The models a submission's items name, in order of first use: each one's code (its
    place in :attr:`names`, one byte in the batch's ``codes`` string) and how many items name
    it. Past :data:`MAX` models the rest share the code ``MAX`` and :attr:`overflow` is set:
    such a batch is dispatched without regard to models (see batchq.store.models)."""

    MAX = 255

    def __init__(self) -> None:
        self.names: list[str] = []
        self.counts: list[int] = []
        self.overflow = False
        self._codes: dict[str, int] = {}

    def code(self, model: str) -> int:
        c = self._codes.get(model)
        if c is None:
            if len(self.names) >= self.MAX:
                self.overflow = True
                return self.MAX
            c = self._codes[model] = len(self.names)
            self.names.append(model)
            self.counts.append(0)
        self.counts[c] += 1
        return c


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
        self.coded = 0  # model codes written so far

    async def add(self, items: dict[str, str], ids: dict[str, int], codes: bytes = b"") -> None:
        """Store one chunk (``codes``: its items' model codes, see :class:`ModelCodes`) and
        renew the TTL of what came before; raise if some of that expired meanwhile."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self.bk.items, mapping=items)
            if ids:
                pipe.hset(self.bk.ids, mapping=ids)
            if codes:
                pipe.setrange(self.bk.codes, self.items, codes)
            # Every key every time: they then expire together, or not at all.
            pipe.pexpire(self.bk.items, self.ttl_ms)
            pipe.pexpire(self.bk.ids, self.ttl_ms)
            pipe.pexpire(self.bk.codes, self.ttl_ms)
            pipe.hlen(self.bk.items)
            res = await pipe.execute()
        self.items += len(items)
        self.ids += len(ids)
        self.coded += len(codes)
        # Item keys are indices, each written once: the hash holds exactly what was staged.
        self._raise_if_lost(int(res[-1]), ids_left=bool(res[-3]))

    async def check(self, client: Redis) -> None:
        """The same check, on ``client``: the commit's pipeline WATCHing both keys (in
        immediate mode), so that the commit fails if either expires after the check."""
        staged: Any = await client.hlen(self.bk.items)  # type: ignore[misc]
        ids_left: Any = await client.exists(self.bk.ids) if self.ids else 1
        self._raise_if_lost(int(staged), ids_left=bool(ids_left))
        coded: Any = await client.strlen(self.bk.codes) if self.coded else 0
        if coded != self.coded:
            raise SubmissionIncomplete(min(int(coded), self.items), self.items, ttl_s=self.ttl_s)

    def _raise_if_lost(self, staged: int, *, ids_left: bool) -> None:
        if staged != self.items or (self.ids and not ids_left):
            raise SubmissionIncomplete(min(staged, self.items), self.items, ttl_s=self.ttl_s)

    async def discard(self) -> None:
        await self.redis.unlink(self.bk.items, self.bk.ids, self.bk.codes)


async def chunks(
    items: Iterable[Item], size: int, models: ModelCodes | None = None
) -> AsyncIterator[tuple[dict[str, str], dict[str, int], bytes]]:
    """``items`` as (index → stored form, custom id → index, their model codes), ``size`` at
    a time, read and encoded on a thread.

    Parsing is most of a submission's CPU and the server's storing of each chunk most of the
    rest; on a thread the parser goes on while the event loop writes, so the two overlap
    instead of taking turns (the server works on another core). At most two chunks wait.
    The custom-id index (``batchq item``, ``retry --ids``) holds only ids that are not the
    item's own index: a file of bare prompts costs it nothing. ``models`` collects the models
    the items name (complete once the iteration ends); without it the codes are empty.
    """
    Chunk = tuple[dict[str, str], dict[str, int], bytes]
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Chunk | BaseException | None] = asyncio.Queue(maxsize=2)
    stop = threading.Event()

    def put(value: Chunk | BaseException | None) -> None:
        asyncio.run_coroutine_threadsafe(queue.put(value), loop).result()

    def produce() -> None:
        try:
            buf: dict[str, str] = {}
            ids: dict[str, int] = {}
            codes = bytearray()
            for n, item in enumerate(items):
                if stop.is_set():
                    return
                key = str(n)
                buf[key] = item.dumps()
                if item.custom_id != key:
                    ids[item.custom_id] = n
                if models is not None:
                    codes.append(models.code(item.model))
                if len(buf) >= size:
                    put((buf, ids, bytes(codes)))
                    buf, ids, codes = {}, {}, bytearray()
            if buf:
                put((buf, ids, bytes(codes)))
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
