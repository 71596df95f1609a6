"""A batch's results as they finish, each once, in no fixed order — without re-reading.

A result can only exist below the batch's dispatch cursor (``next``; after a cancel,
``cancel_from``): items past it have not been sent. So the reader keeps a cursor of its own,
``scanned``, and the set of indices below it that had no result when it last looked —
the items in flight or waiting for a retry, a few times the workers' slots, not the batch.
Each poll reads the batch's counters first (one HMGET); when they show no result it has not
yielded, the poll reads nothing else. Otherwise it asks for the pending indices (oldest
first) and then for the indices the cursor has passed since, a chunk per HMGET, and stops as
soon as it has found as many new results as the counters announced. The items (custom id,
model) are read only for the results found. A million-item batch thus costs each poll about
what is in flight, however far along it is.

Items cancelled before dispatch have no stored result (see :mod:`batchq.collect`); they are
yielded as cancelled once the cancel is seen.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from .batches import BatchStore
from .collect import decode_result
from .errors import BatchNotFound
from .keys import BatchKeys
from .models import Item, ItemResult

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
    def __init__(self, store: BatchStore, keys: BatchKeys, chunk: int) -> None:
        self.store = store
        self.keys = keys
        self.chunk = chunk

    async def found(self, indices: list[int]) -> tuple[list[ItemResult], list[int]]:
        """The results among ``indices`` (in their order), and the indices without one."""
        fields = [str(i) for i in indices]
        raw = await self.store.redis.hmget(self.keys.results, fields)  # type: ignore[misc]
        hits = [(i, r) for i, r in zip(indices, raw, strict=True) if r is not None]
        misses = [i for i, r in zip(indices, raw, strict=True) if r is None]
        items = await self.items([i for i, _ in hits])
        results = [decode_result(i, items[n], r) for n, (i, r) in enumerate(hits)]
        return results, misses

    async def items(self, indices: list[int]) -> list[Item | None]:
        if not indices:
            return []
        raw = await self.store.redis.hmget(self.keys.items, [str(i) for i in indices])  # type: ignore[misc]
        return [Item.loads(r) if r else None for r in raw]

    async def cancelled(self, start: int, end: int) -> AsyncIterator[list[ItemResult]]:
        for lo in range(start, end, self.chunk):
            indices = list(range(lo, min(lo + self.chunk, end)))
            items = await self.items(indices)
            yield [decode_result(i, item, None) for i, item in zip(indices, items, strict=True)]


def _chunks(indices: Iterable[int], size: int) -> Iterable[list[int]]:
    chunk: list[int] = []
    for i in indices:
        chunk.append(i)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def completed_pages(
    store: BatchStore, batch_id: str, *, poll: float = 0.5, chunk: int = 1000
) -> AsyncIterator[list[ItemResult]]:
    """Every result of the batch exactly once, in pages as they are found, polling every
    ``poll`` seconds; ends when the batch is finished and all its results are out.

    A page is never empty. Within a page results are in index order; across pages, in the
    order they were found, which is roughly the order they finished.
    """
    await store.meta(batch_id)  # an unknown id fails here, not after a poll
    reader = _Reader(store, store.keys.batch(batch_id), chunk)
    pending: set[int] = set()
    scanned = 0  # every index below this is yielded or in ``pending``
    yielded = 0  # stored results yielded
    tail_done = False
    while True:
        raw = await store.redis.hmget(reader.keys.meta, list(_COUNTERS))  # type: ignore[misc]
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
        stored = ok + failed + cancelled + expired - unstored
        if cancel_from >= 0 and not tail_done:
            tail_done = True
            async for page in reader.cancelled(cancel_from, total):
                yield page
        if stored > yielded:
            # Oldest first: the longest-pending items are the likeliest to be done.
            for indices in _chunks(sorted(pending), chunk):
                results, _ = await reader.found(indices)
                if results:
                    pending.difference_update(r.index for r in results)
                    yielded += len(results)
                    yield results
                if yielded >= stored:
                    break
            while scanned < bound and yielded < stored:
                end = min(scanned + chunk, bound)
                results, misses = await reader.found(list(range(scanned, end)))
                pending.update(misses)
                scanned = end
                if results:
                    yielded += len(results)
                    yield results
        elif not finished:
            # The counters say nothing new has a result: what the cursor passed is pending.
            pending.update(range(scanned, bound))
            scanned = max(scanned, bound)
        if finished:
            return
        await asyncio.sleep(poll)
