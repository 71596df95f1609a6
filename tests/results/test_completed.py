"""Tests of batchq.results.completed: each result once, as it finishes, for about the cost of what
is in flight — driven through the real dispatch, finish and cancel scripts on a real server."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from redis.asyncio.client import Pipeline

from batchq import clock
from batchq.errors import BatchNotFound
from batchq.records import Endpoint, Item, ItemError, ItemResult, ItemStatus
from batchq.results.completed import completed_pages
from batchq.results.export import iter_results
from batchq.store.batches import BatchStore
from batchq.store.codec import encode_result
from batchq.store.keys import job_id

N = 5000


def items(n: int) -> list[Item]:
    return [Item(f"c{i}", Endpoint.GENERATE, {"model": "m", "prompt": str(i)}) for i in range(n)]


async def dispatch(store: BatchStore, window: int) -> None:
    """The dispatcher's script, with a window as wide as ``window`` workers' slots."""
    await store.scripts.dispatch(
        now_ms=clock.now_ms(),
        job_ttl_ms=60_000,
        function="run_item",
        max_items=window,
        window_factor=1,
        min_window=window,
    )


async def finish(
    store: BatchStore, bid: str, *indices: int, status: ItemStatus = ItemStatus.SUCCEEDED
) -> None:
    """What a worker records for a finished item (``status``: succeeded or failed)."""
    for i in indices:
        if status is ItemStatus.FAILED:
            error = ItemError(type="http", message=f"e{i}", status_code=500)
            payload = encode_result(status, error=error, attempts=1)
        else:
            payload = encode_result(status, response=f"r{i}", attempts=1)
        await store.scripts.finish(
            bid, i, job_id(bid, i), status.value, payload, now_ms=clock.now_ms()
        )


class Reads:
    """Fields of the batch's results hash read through HMGET, counted."""

    def __init__(self, store: BatchStore, bid: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fields = 0
        results_key = store.keys.batch(bid).results
        real = store.redis.hmget

        async def spy(key: Any, keys: Any, *args: Any) -> Any:
            if key == results_key:
                self.fields += len(keys)
            return await real(key, keys, *args)  # type: ignore[misc]

        def spy_pipe(pipe: Pipeline, key: Any, keys: Any, *args: Any) -> Any:
            if key == results_key:
                self.fields += len(keys)
            return real_pipe(pipe, key, keys, *args)

        real_pipe = Pipeline.hmget
        monkeypatch.setattr(store.redis, "hmget", spy)
        # The reader reads results in a transaction with the reruns log.
        monkeypatch.setattr(Pipeline, "hmget", spy_pipe)


async def test_each_result_once_as_it_finishes_reading_only_what_is_in_flight(
    store: BatchStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    bid, _ = await store.submit(items(N), chunk=1000)
    reads = Reads(store, bid, monkeypatch)
    seen: list[ItemResult] = []
    pages: list[list[int]] = []
    found: asyncio.Queue[None] = asyncio.Queue()

    async def follow() -> None:
        async for page in completed_pages(store, bid, poll=0.01, chunk=16):
            assert page
            pages.append([r.index for r in page])
            seen.extend(page)
            found.put_nowait(None)

    async def until(count: int) -> None:
        async with asyncio.timeout(10):
            while len(seen) < count:
                await found.get()

    await dispatch(store, 40)  # cursor at 40
    await finish(store, bid, 31, 7, 12)
    task = asyncio.create_task(follow())
    await until(3)
    assert [r.index for r in seen] == [7, 12, 31]
    assert [(r.custom_id, r.response, r.model) for r in seen] == [
        ("c7", "r7", "m"),
        ("c12", "r12", "m"),
        ("c31", "r31", "m"),
    ]
    assert reads.fields == 32  # two chunks of 16: the scan stops at the third result

    # Nothing new: polls read the counters, not the results.
    before = reads.fields
    await asyncio.sleep(0.2)
    assert reads.fields == before

    # Older pending items and items past the old cursor finish together.
    await dispatch(store, 40)  # the window refills: cursor at 43
    await finish(store, bid, 0, 39, 41)
    await until(6)
    assert sorted(r.index for r in seen[3:]) == [0, 39, 41]
    assert reads.fields - before <= 3 * 43

    # A cancel: the 43 dispatched items not yet final get stored cancels; the rest of the
    # batch is cancelled without results, and yielded without reading any.
    assert (await store.cancel(bid)).finished_at
    async with asyncio.timeout(10):
        await task
    assert reads.fields < 5 * 43, "the reader scanned undispatched items"

    counts = Counter(r.index for r in seen)
    assert sorted(counts) == list(range(N)) and max(counts.values()) == 1
    by_index = {r.index: r for r in seen}
    assert [by_index[i].status for i in (0, 7, 12, 31, 39, 41)] == [ItemStatus.SUCCEEDED] * 6
    assert {r.status for i, r in by_index.items() if i not in (0, 7, 12, 31, 39, 41)} == {
        ItemStatus.CANCELLED
    }
    assert by_index[N - 1].custom_id == f"c{N - 1}"
    # The same results as the in-order reader, page by page in index order.
    assert sorted(seen, key=lambda r: r.index) == [r async for r in iter_results(store, bid)]
    assert all(page == sorted(page) for page in pages)


async def test_a_finished_batch_is_read_once_in_full(store: BatchStore) -> None:
    bid, _ = await store.submit(items(30))
    for start in (0, 10, 20):
        await dispatch(store, 10)
        await finish(store, bid, *reversed(range(start, start + 10)))
    got = [r async for page in completed_pages(store, bid, poll=0.01, chunk=7) for r in page]
    assert [r.index for r in got] == list(range(30))
    assert (await store.status(bid)).state == "completed"


async def test_an_unknown_batch(store: BatchStore) -> None:
    with pytest.raises(BatchNotFound):
        async for _ in completed_pages(store, "b_0000000000000000"):
            pass


def summary(page: list[ItemResult]) -> list[tuple[int, str, int]]:
    return [(r.index, r.status.value, r.attempts) for r in page]


async def test_a_retried_item_is_yielded_again_when_its_new_result_lands(
    store: BatchStore,
) -> None:
    bid, _ = await store.submit(items(4))
    await dispatch(store, 4)
    await finish(store, bid, 0)
    await finish(store, bid, 1, status=ItemStatus.FAILED)
    pages = completed_pages(store, bid, poll=0.01)
    # The generator waits at its yield while the caller acts: the order below is exact.
    assert summary(await anext(pages)) == [(0, "succeeded", 1), (1, "failed", 1)]
    # 1 was yielded, 2 fails and is taken out again before the reader saw it.
    await finish(store, bid, 2, status=ItemStatus.FAILED)
    assert await store.retry(bid, statuses=[ItemStatus.FAILED]) == 2
    await dispatch(store, 4)  # the re-runs go out again, under the same job ids
    await finish(store, bid, 3, 2, 1)
    rest = [r async for page in pages for r in page]
    # Their new results, once each; 2's failed run is never seen; attempts add up.
    assert summary(rest) == [(1, "succeeded", 2), (2, "succeeded", 2), (3, "succeeded", 1)]
    assert (await store.status(bid)).state == "completed"


async def test_a_retry_made_on_the_last_result_is_followed(store: BatchStore) -> None:
    """The batch is finished when its last result is yielded; retrying it there, in the
    consumer's loop, runs the batch again, and the reader waits for the new result."""
    bid, _ = await store.submit(items(2))
    await dispatch(store, 2)
    await finish(store, bid, 0)
    await finish(store, bid, 1, status=ItemStatus.FAILED)
    assert (await store.status(bid)).finished_at
    seen: list[tuple[int, str, int]] = []
    async with asyncio.timeout(10):
        async for page in completed_pages(store, bid, poll=0.01):
            seen += summary(page)
            if any(r.status is ItemStatus.FAILED for r in page):
                assert await store.retry(bid, statuses=[ItemStatus.FAILED]) == 1
                await dispatch(store, 2)
                await finish(store, bid, 1)
    assert seen == [(0, "succeeded", 1), (1, "failed", 1), (1, "succeeded", 2)]
