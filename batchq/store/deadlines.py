"""Deadlines: past a batch's deadline its items that were never attempted become ``expired``
(a final status, with a result line that says so); attempted ones finish.

Every worker looks for due deadlines on its heartbeat (see :mod:`workers.housekeeping`); the
expiry is idempotent and resumable, so several workers at once, or one killed half-way, leave
each item expired exactly once.
"""

from __future__ import annotations

from batchq import clock
from batchq.errors import BatchNotFound
from batchq.records import ItemError, ItemStatus
from batchq.store.batches import BatchStore
from batchq.store.codec import encode_result, text

__all__ = ["expire", "expire_due"]


async def expire(store: BatchStore, batch_id: str, *, chunk: int = 1000) -> bool:
    """Expire what the deadline left of the batch; False if it is not due yet."""
    meta = await store.meta(batch_id)
    error = ItemError(
        type="expired",
        message=f"not started before the batch's deadline, {clock.iso(meta.get('deadline'))}",
    )
    payload = encode_result(ItemStatus.EXPIRED, error=error)
    while True:
        left = await store.control.expire(
            batch_id, now_ms=clock.now_ms(), chunk=chunk, payload=payload
        )
        if left == -1:
            raise BatchNotFound(batch_id)
        if left == -2:
            return False
        if left == 0:
            return True


async def expire_due(store: BatchStore) -> list[str]:
    """Expire every batch whose deadline has passed; the ones acted on."""
    due = await store.redis.zrangebyscore(store.keys.deadlines, "-inf", clock.now_ms())
    done = []
    for raw in due:
        batch_id = text(raw)
        try:
            expired = await expire(store, batch_id)
        except BatchNotFound:
            expired = True
        if expired:
            await store.redis.zrem(store.keys.deadlines, batch_id)
            done.append(batch_id)
    return done
