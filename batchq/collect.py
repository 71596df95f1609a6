"""Results of a batch, one per item, in input order, streamed in chunks (never loaded whole).

A stored result is compact (``{"s", "r", "e", "a", "m"}``, see :func:`encode_result`); the
custom id and model come from the item itself, so they are not stored twice.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import IO, Any

from . import clock
from .batches import BatchStore
from .models import TERMINAL_BATCH_STATES, BatchStatus, Item, ItemError, ItemResult, ItemStatus

__all__ = ["decode_result", "encode_result", "iter_results", "wait_finished", "write_results"]


def encode_result(
    status: ItemStatus,
    *,
    response: str | None = None,
    error: ItemError | None = None,
    attempts: int = 0,
    metrics: dict[str, Any] | None = None,
) -> str:
    d: dict[str, Any] = {"s": status.value, "a": attempts}
    if response is not None:
        d["r"] = response
    if error is not None:
        d["e"] = error.model_dump()
    if metrics:
        d["m"] = metrics
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False)


def decode_result(index: int, item: Item | None, raw: bytes | None) -> ItemResult:
    """A stored result as an output line; no stored result means cancelled before dispatch."""
    d: dict[str, Any] = json.loads(raw) if raw else {"s": ItemStatus.CANCELLED.value}
    return ItemResult(
        index=index,
        custom_id=item.custom_id if item else str(index),
        status=ItemStatus(d["s"]),
        response=d.get("r"),
        error=ItemError(**d["e"]) if d.get("e") else None,
        attempts=d.get("a", 0),
        model=item.model if item else None,
        metrics=d.get("m"),
    )


async def iter_results(
    store: BatchStore, batch_id: str, *, chunk: int = 1000
) -> AsyncIterator[ItemResult]:
    """Final results so far, in index order; items still pending are skipped."""
    meta = await store.meta(batch_id)
    total = int(meta["total"])
    cancel_from = int(meta.get("cancel_from", -1))
    bk = store.keys.batch(batch_id)
    for start in range(0, total, chunk):
        fields = [str(i) for i in range(start, min(start + chunk, total))]
        async with store.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(bk.items, fields)
            pipe.hmget(bk.results, fields)
            items, results = await pipe.execute()
        for offset, (raw_item, raw_result) in enumerate(zip(items, results, strict=True)):
            index = start + offset
            item = Item.loads(raw_item) if raw_item else None
            if raw_result is not None:
                yield decode_result(index, item, raw_result)
            elif 0 <= cancel_from <= index:
                # Cancelled before dispatch: no result was written for these, by design (a
                # cancel of a million-item batch stays O(window)).
                yield decode_result(index, item, None)


async def wait_finished(
    store: BatchStore,
    batch_id: str,
    *,
    interval: float = 0.5,
    max_wait: float | None = None,
    on_progress: Callable[[BatchStatus], object] | None = None,
) -> BatchStatus:
    """Poll the batch's counters until it is finished; ``on_progress`` sees the first status
    and every one that differs from the last it saw (so the final one too)."""
    deadline = None if max_wait is None else clock.monotonic() + max_wait
    seen: BatchStatus | None = None
    while True:
        status = await store.status(batch_id)
        if on_progress is not None and status != seen:
            seen = status
            on_progress(status)
        if status.state in TERMINAL_BATCH_STATES and status.finished_at:
            return status
        delay = interval
        if deadline is not None:
            left = deadline - clock.monotonic()
            if left <= 0:
                raise TimeoutError(f"batch {batch_id} did not finish within {max_wait} s")
            delay = min(interval, left)
        await asyncio.sleep(delay)


async def write_results(store: BatchStore, batch_id: str, out: IO[str]) -> int:
    n = 0
    async for r in iter_results(store, batch_id):
        out.write(r.model_dump_json())
        out.write("\n")
        n += 1
    return n
