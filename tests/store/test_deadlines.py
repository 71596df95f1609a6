"""Deadlines, driven through the scripts against a real server: what expires, what finishes,
and that the counts stay exact through a chunked expiry, a repair and a retry."""

from __future__ import annotations

from datetime import timedelta

from batchq import clock
from batchq.options import SubmitOptions
from batchq.records import BatchState, Endpoint, Item, ItemError, ItemState, ItemStatus
from batchq.results.export import iter_results
from batchq.settings import Settings
from batchq.store.batches import BatchStore
from batchq.store.codec import encode_result
from batchq.store.deadlines import expire, expire_due
from batchq.store.dispatch import Dispatcher
from batchq.store.items import item_info
from batchq.store.keys import ARQ_JOB_PREFIX, parse_job_id
from tests.helpers import (
    claim,
    complete,
    counts_add_up,
    finish_all,
    items,
    of,
    queued_jobs,
    register_worker,
)


async def due_now(store: BatchStore, bid: str) -> None:
    past = clock.now_ms() - 1
    await store.redis.hset(store.keys.batch(bid).meta, "deadline", str(past))  # type: ignore[misc]
    await store.redis.zadd(store.keys.deadlines, {bid: past})


async def test_past_the_deadline_only_unstarted_items_expire(
    store: BatchStore, settings: Settings
) -> None:
    bid, _ = await store.submit(items(60), SubmitOptions(deadline=timedelta(hours=1)))
    await register_worker(store, "w", 3)  # window 6
    await Dispatcher(store.scripts, settings).run()
    jobs = of(bid, await queued_jobs(store))
    done, running, claimed, fresh, backoff, _ = jobs
    now = clock.now_ms()

    async def start(jid: str) -> None:
        await store.scripts.start(
            bid, parse_job_id(jid)[1], jid, now_ms=now, lease_until_ms=now + 60_000
        )

    for jid in (done, running, backoff):
        await claim(store, jid)
        await start(jid)
    ok = encode_result(ItemStatus.SUCCEEDED, response="r", attempts=1)
    await store.scripts.finish(bid, parse_job_id(done)[1], done, "succeeded", ok, now_ms=now)
    await store.redis.zrem(store.keys.queue, done)
    busy = ItemError(type="server_busy", message="busy", status_code=503)
    await store.control.release_failed(
        bid, parse_job_id(backoff)[1], backoff, score=now, attempt=1, error=busy, now_ms=now
    )
    await store.redis.delete("arq:in-progress:" + backoff)  # arq's Retry: back in the queue
    await claim(store, claimed)
    # A reaped item that never had an attempt waits in the redo list: it expires too.
    await store.redis.rpush(store.keys.batch(bid).redo, "7")  # type: ignore[misc]

    assert not await expire(store, bid)  # not due yet
    assert await expire_due(store) == []
    await due_now(store, bid)
    assert await expire_due(store) == [bid]
    assert await store.redis.zcard(store.keys.deadlines) == 0
    s = await store.status(bid)
    counts_add_up(s)
    # Running, claimed and backing-off items carry on; everything else expired.
    assert (s.succeeded, s.running, s.queued, s.expired) == (1, 1, 2, 56)
    assert s.state is BatchState.RUNNING and s.deadline
    assert of(bid, await queued_jobs(store)) == sorted(
        [running, claimed, backoff], key=lambda j: parse_job_id(j)[1]
    )
    assert not await store.redis.exists(ARQ_JOB_PREFIX + fresh)
    assert (await Dispatcher(store.scripts, settings).run()).sent == 0
    # The three finish; then the batch is final, as expired.
    for jid in (running, claimed, backoff):
        i = parse_job_id(jid)[1]
        if jid != running:
            await start(jid)
        await store.scripts.finish(bid, i, jid, "succeeded", ok, now_ms=now)
    s = await store.status(bid)
    assert (s.state, s.succeeded, s.expired) == (BatchState.EXPIRED, 4, 56) and s.finished_at
    rows = [r async for r in iter_results(store, bid)]
    assert len(rows) == 60
    expired = [r for r in rows if r.status is ItemStatus.EXPIRED]
    assert len(expired) == 56 and parse_job_id(fresh)[1] in {r.index for r in expired}
    assert expired[0].error and expired[0].error.type == "expired"
    assert "not started before the batch's deadline" in expired[0].error.message

    info = await item_info(store, bid, str(parse_job_id(fresh)[1]))
    assert (info.status, info.attempts, info.errors) == (ItemState.EXPIRED, 0, [])
    # Run them after all: the batch is running again, then completed.
    assert await store.retry(bid, statuses=[ItemStatus.EXPIRED]) == 56
    assert (await item_info(store, bid, str(parse_job_id(fresh)[1]))).errors == []  # no attempt
    s = await store.status(bid)
    assert (s.state, s.expired, s.queued) == (BatchState.RUNNING, 0, 56)
    await register_worker(store, "w", 50)
    await finish_all(store, settings, bid, {})
    s = await store.status(bid)
    assert (s.state, s.succeeded) == (BatchState.COMPLETED, 60)


async def test_a_chunked_expiry_is_resumable_and_repair_leaves_it_alone(
    store: BatchStore, settings: Settings
) -> None:
    bid, _ = await store.submit(items(2500), SubmitOptions(deadline=timedelta(hours=1)))
    await due_now(store, bid)
    payload = encode_result(ItemStatus.EXPIRED)
    left = await store.control.expire(bid, now_ms=clock.now_ms(), chunk=1000, payload=payload)
    assert left == 1500  # ...and the expiring worker dies here
    s = await store.status(bid)
    counts_add_up(s)
    assert (s.expired, s.queued, s.finished_at) == (1000, 1500, None)
    assert await store.repair(bid) == 0  # the rest are not lost, just not written yet
    assert (await Dispatcher(store.scripts, settings).run()).sent == 0
    assert await expire_due(store) == [bid]  # another worker finishes the job
    s = await store.status(bid)
    assert (s.state, s.expired) == (BatchState.EXPIRED, 2500) and s.finished_at


async def test_finished_cancelled_or_paused_batches_at_the_deadline(
    store: BatchStore, settings: Settings
) -> None:
    later = SubmitOptions(deadline=timedelta(hours=1))
    cancelled, _ = await store.submit(items(3), later)
    await store.cancel(cancelled)
    paused, _ = await store.submit(items(3), later)
    await register_worker(store, "w", 1)
    await Dispatcher(store.scripts, settings).run()
    await store.pause(paused)
    for bid in (cancelled, paused):
        await due_now(store, bid)
    assert sorted(await expire_due(store)) == sorted([cancelled, paused])
    s = await store.status(cancelled)
    assert (s.state, s.cancelled, s.expired) == (BatchState.CANCELLED, 3, 0)
    s = await store.status(paused)
    assert (s.state, s.expired, s.finished_at is not None) == (BatchState.EXPIRED, 3, True)
    assert await store.cancel(paused) == s  # final: a cancel changes nothing


async def test_parked_items_of_a_batch_of_several_models_expire(
    store: BatchStore, settings: Settings
) -> None:
    lines = [
        Item(str(i), Endpoint.GENERATE, {"model": "ab"[i % 2], "prompt": f"p{i}"})
        for i in range(10)
    ]
    bid, _ = await store.submit(lines, SubmitOptions(deadline=timedelta(hours=1)))
    await register_worker(store, "w", 1)  # window 2
    await Dispatcher(store.scripts, settings).run(models=["b"])  # 1 and 3 sent; 0 and 2 parked
    for jid in await queued_jobs(store):
        await complete(store, jid)
    await due_now(store, bid)
    assert await expire_due(store) == [bid]
    s = await store.status(bid)
    counts_add_up(s)
    assert (s.succeeded, s.expired) == (2, 8)
    assert s.state is BatchState.EXPIRED
    assert await store.redis.exists(f"{store.keys.batch(bid).meta}:park:0") == 0
