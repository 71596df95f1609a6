"""A batch's results as they finish, in no fixed order — without re-reading.

A result can only exist below the batch's dispatch cursor (``next``; after a cancel,
``cancel_from``): items past it have not been sent. So the reader keeps a cursor of its own,
``scanned``, and the set of indices below it that had no result when it last looked —
the items in flight or waiting for a retry, a few times the workers' slots, not the batch.
Each poll reads the batch's counters first (one HMGET); when they show no result it has not
accounted for, the poll reads nothing else. Otherwise it asks for the pending indices (oldest
first) and then for the indices the cursor has passed since, a chunk per HMGET, and stops as
soon as it has found as many new results as the counters announced. The items (custom id,
model) are read only for the results found. A million-item batch thus costs each poll about
what is in flight, however far along it is.

``batchq retry`` takes final results out again. Every index it takes out is appended to the
batch's reruns log, read in the same transaction as the counters and every chunk of results,
so the reader sees each removal in order with the results: an item whose result it yielded
goes back to pending, and its new result is yielded when it lands (a re-run item is yielded
once per result it had while the reader looked). A result removed before the reader saw it is
counted as accounted for and never yielded. The counters net out removals; results ever
written are the counters plus the log's length, which is what the reader compares with.

Items cancelled before dispatch have no stored result (see :mod:`batchq.results.export`); they are
yielded as cancelled once the cancel is seen.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterable
from typing import cast

from batchq.errors import BatchNotFound
from batchq.records import Item, ItemResult
from batchq.store.batches import BatchStore
from batchq.store.codec import decode_result
from batchq.store.keys import BatchKeys

__all__ = ["completed_pages"]

_COUNTERS = (
    "total",
    "next",
    "cancel_from",
    "succeeded",
    "failed",
    "cancelled",
    "expired",
    "finished_at",
)


class _Reader:
    """Where the reader is: ``scanned`` (every index below is yielded or pending), the
    ``pending`` indices, ``accounted`` (stored results yielded, or removed unseen) and how
    much of the reruns log it has read."""

    def __init__(self, store: BatchStore, keys: BatchKeys, chunk: int) -> None:
        self.store = store
        self.keys = keys
        self.chunk = chunk
        self.pending: set[int] = set()
        self.scanned = 0
        self.accounted = 0
        self.log_seen = 0

    async def _hmget(self, key: str, fields: list[str]) -> list[bytes | None]:
        """``fields`` of ``key`` and the log's new entries, atomically: the removals are
        applied before what was read, as they happened before it."""
        async with self.store.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(key, fields)
            pipe.lrange(self.keys.reruns, self.log_seen, -1)
            raw, reruns = await pipe.execute()
        for entry in reruns:
            index = int(entry)
            if index < self.scanned and index not in self.pending:
                self.pending.add(index)  # what was yielded is gone: the new run's is due
            else:
                self.accounted += 1  # removed before this reader saw it
        self.log_seen += len(reruns)
        return cast(list[bytes | None], raw)

    async def log_length(self) -> int:
        return int(await self.store.redis.llen(self.keys.reruns))  # type: ignore[misc]

    async def counters(self) -> list[bytes | None]:
        return await self._hmget(self.keys.meta, list(_COUNTERS))

    async def found(self, indices: list[int]) -> list[ItemResult]:
        """The results among ``indices`` (in their order); the others become pending."""
        raw = await self._hmget(self.keys.results, [str(i) for i in indices])
        hits = [(i, r) for i, r in zip(indices, raw, strict=True) if r is not None]
        self.pending.update(i for i, r in zip(indices, raw, strict=True) if r is None)
        self.pending.difference_update(i for i, _ in hits)
        self.accounted += len(hits)
        items, prior = await self.items([i for i, _ in hits], prior=True)
        return [decode_result(i, items[n], r, prior=prior[n]) for n, (i, r) in enumerate(hits)]

    async def items(
        self, indices: list[int], *, prior: bool = False
    ) -> tuple[list[Item | None], list[int]]:
        """The items at ``indices``, and (if asked) the attempts of their earlier runs."""
        if not indices:
            return [], []
        fields = [str(i) for i in indices]
        async with self.store.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self.keys.items, fields)
            if prior:
                pipe.hmget(self.keys.prior, fields)
            raw, *rest = await pipe.execute()
        earlier = [int(p or 0) for p in rest[0]] if rest else [0] * len(fields)
        return [Item.loads(r) if r else None for r in raw], earlier

    async def cancelled(self, start: int, end: int) -> AsyncIterator[list[ItemResult]]:
        for lo in range(start, end, self.chunk):
            indices = list(range(lo, min(lo + self.chunk, end)))
            items, _ = await self.items(indices)
            yield [decode_result(i, item, None) for i, item in zip(indices, items, strict=True)]


def _chunks(indices: Iterable[int], size: int) -> Iterable[list[int]]:
    it = iter(indices)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


async def completed_pages(
    store: BatchStore, batch_id: str, *, poll: float = 0.5, chunk: int = 1000
) -> AsyncIterator[list[ItemResult]]:
    """Every result of the batch once, in pages as they are found, polling every ``poll``
    seconds; ends when the batch is finished and all its results are out. An item that
    :meth:`BatchStore.retry` runs again is yielded again with its new result.

    A page is never empty. Within a page results are in index order; across pages, in the
    order they were found, which is roughly the order they finished.
    """
    await store.meta(batch_id)  # an unknown id fails here, not after a poll
    reader = _Reader(store, store.keys.batch(batch_id), chunk)
    tail_done = False
    while True:
        raw = await reader.counters()
        if raw[0] is None:
            raise BatchNotFound(batch_id)
        total, nxt, ok, failed, cancelled, expired = (int(raw[i] or 0) for i in (0, 1, 3, 4, 5, 6))
        cancel_from = int(raw[2] or -1)
        finished = raw[7] is not None
        # After a cancel, [cancel_from, total) is counted as cancelled without stored results.
        bound, unstored = (cancel_from, total - cancel_from) if cancel_from >= 0 else (nxt, 0)
        if finished and cancel_from < 0:
            # Only a safety net: results past the cursor would break the invariant above, and
            # the scan stops at the last result the counters announce.
            bound = total
        written = ok + failed + cancelled + expired - unstored + reader.log_seen
        if cancel_from >= 0 and not tail_done:
            tail_done = True
            async for page in reader.cancelled(cancel_from, total):
                yield page
        if written > reader.accounted:
            # Oldest first: the longest-pending items are the likeliest to be done.
            for indices in _chunks(sorted(reader.pending), chunk):
                if results := await reader.found(indices):
                    yield results
                if reader.accounted >= written:
                    break
            while reader.scanned < bound and reader.accounted < written:
                end = min(reader.scanned + chunk, bound)
                results = await reader.found(list(range(reader.scanned, end)))
                reader.scanned = end
                if results:
                    yield results
        elif not finished:
            # The counters say nothing new has a result: what the cursor passed is pending.
            reader.pending.update(range(reader.scanned, bound))
            reader.scanned = max(reader.scanned, bound)
        # Checked after the consumer had the last page: an item it retried on seeing its
        # result makes the batch run again, and the reader follows it.
        if finished and await reader.log_length() == reader.log_seen:
            return
        await asyncio.sleep(poll)
