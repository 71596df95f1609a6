"""One item of a batch, found by its custom id: where it is, its attempts, its error history and
its result, read in one round trip while the batch runs.

The custom-id index holds only the ids that differ from the item's index (see
:meth:`batchq.store.batches.BatchStore.submit`); any other id is a decimal index, confirmed against
the stored item. Either way a lookup touches a few keys, never the whole batch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from batchq import clock
from batchq.errors import ItemNotFound
from batchq.records import AttemptError, Item, ItemInfo, ItemState, ItemStatus
from batchq.store.batches import BatchStore
from batchq.store.codec import decode_result
from batchq.store.keys import job_id

__all__ = ["find_indices", "item_info", "retry_items"]


async def find_indices(
    store: BatchStore, batch_id: str, custom_ids: Sequence[str]
) -> dict[str, int]:
    """Each custom id's index; :class:`ItemNotFound` names the first id the batch lacks."""
    meta = await store.meta(batch_id)
    total = int(meta["total"])
    bk = store.keys.batch(batch_id)
    out: dict[str, int] = {}
    for chunk in range(0, len(custom_ids), 1000):
        ids = list(custom_ids[chunk : chunk + 1000])
        found = await store.redis.hmget(bk.ids, ids)  # type: ignore[misc]
        maybe: dict[str, int] = {}
        for cid, raw in zip(ids, found, strict=True):
            if raw is not None:
                out[cid] = int(raw)
            elif cid.isdigit() and str(int(cid)) == cid and int(cid) < total:
                maybe[cid] = int(cid)
            else:
                raise ItemNotFound(batch_id, cid)
        if maybe:
            fields = [str(i) for i in maybe.values()]
            items = await store.redis.hmget(bk.items, fields)  # type: ignore[misc]
            for (cid, index), raw in zip(maybe.items(), items, strict=True):
                # The index is only the id when the line set no other one.
                if raw is None or Item.loads(raw).custom_id != cid:
                    raise ItemNotFound(batch_id, cid)
                out[cid] = index
    return out


async def retry_items(
    store: BatchStore,
    batch_id: str,
    *,
    statuses: Sequence[ItemStatus],
    custom_ids: Sequence[str] = (),
) -> int:
    """``batchq retry``: run again every final item with one of ``statuses`` and the items
    named by ``custom_ids``; how many. Every id is checked before anything changes: one
    unknown id (:class:`ItemNotFound`), nothing retried."""
    found = await find_indices(store, batch_id, custom_ids)
    return await store.retry(batch_id, statuses=statuses, indices=found.values())


async def item_info(store: BatchStore, batch_id: str, custom_id: str) -> ItemInfo:
    index = (await find_indices(store, batch_id, [custom_id]))[custom_id]
    bk = store.keys.batch(batch_id)
    field = str(index)
    async with store.redis.pipeline(transaction=False) as pipe:
        pipe.hget(bk.meta, "cancel_from")
        pipe.hget(bk.items, field)
        pipe.hget(bk.results, field)
        pipe.hget(bk.tries, field)
        pipe.hget(bk.errors, field)
        pipe.hget(bk.prior, field)
        pipe.zscore(store.keys.leases, job_id(batch_id, index))
        cancel_from, raw_item, raw_result, tries, history, prior, lease = await pipe.execute()
    earlier = int(prior or 0)
    errors = [_history_entry(e) for e in json.loads(history)] if history else []
    result = None
    if raw_result is not None:
        result = decode_result(index, Item.loads(raw_item), raw_result, prior=earlier)
        status = ItemState(result.status.value)
        attempts = result.attempts
        if result.error is not None and result.status is ItemStatus.FAILED:
            errors.append(
                AttemptError(
                    attempt=attempts,
                    type=result.error.type,
                    message=result.error.message,
                    status_code=result.error.status_code,
                )
            )
    else:
        attempts = earlier + int(tries or 0)
        if 0 <= int(cancel_from or -1) <= index:
            # Cancelled before it was ever dispatched: such items get no stored result.
            status = ItemState.CANCELLED
            result = decode_result(index, Item.loads(raw_item), None, prior=earlier)
        else:
            status = ItemState.RUNNING if lease is not None else ItemState.QUEUED
    return ItemInfo(
        batch_id=batch_id,
        index=index,
        custom_id=custom_id,
        status=status,
        attempts=attempts,
        errors=errors,
        result=result,
    )


def _history_entry(e: list[Any]) -> AttemptError:
    attempt, type_, message, code, at = e
    return AttemptError(
        attempt=attempt, type=type_, message=message, status_code=code, at=clock.iso(at)
    )
