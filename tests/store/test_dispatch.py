"""The dispatcher and the bookkeeping scripts, driven directly against a real server."""

from __future__ import annotations

import json
from collections import Counter

from batchq import clock
from batchq.records import BatchState, Item, ItemStatus
from batchq.settings import Settings
from batchq.store.batches import BatchStore
from batchq.store.codec import encode_result
from batchq.store.dispatch import JOB_FUNCTION, Dispatcher
from batchq.store.keys import ARQ_IN_PROGRESS_PREFIX, ARQ_JOB_PREFIX, ARQ_RETRY_PREFIX, parse_job_id
from tests.helpers import complete, dispatched, items, queued_jobs, register_worker


async def reap(store: BatchStore, now: int) -> int:
    return await store.scripts.reap(now_ms=now, claim_ttl_ms=600_000, grace_ms=5_000)


async def test_window_is_twice_the_live_slots(store: BatchStore, settings: Settings) -> None:
    d = Dispatcher(store.scripts, settings)
    await store.submit(items(100))
    await register_worker(store, "w1", 4)
    await register_worker(store, "w2", 3)
    # A dead worker (deadline passed) does not count.
    await store.redis.zadd(store.keys.workers, {"dead": clock.now_ms() - 1})
    await store.redis.hset(store.keys.worker_slots, "dead", "50")  # type: ignore[misc]
    out = await d.run()
    assert (out.sent, out.in_queue, out.window) == (14, 14, 14)
    assert (await d.run()).sent == 0  # full window: nothing more
    jobs = await queued_jobs(store)
    assert len(jobs) == 14
    # The job payload is arq's JSON job shape, never pickle.
    payload = json.loads(await store.redis.get(ARQ_JOB_PREFIX + jobs[0]))
    bid, idx = parse_job_id(jobs[0])
    assert payload["f"] == JOB_FUNCTION and payload["a"] == [bid, idx] and payload["k"] == {}
    assert 0 < await store.redis.pttl(ARQ_JOB_PREFIX + jobs[0]) <= settings.job_ttl * 1000


async def test_round_robin_lets_a_small_batch_through(
    store: BatchStore, settings: Settings
) -> None:
    d = Dispatcher(store.scripts, settings)
    big, _ = await store.submit(items(1000))
    small, _ = await store.submit(items(5))
    await register_worker(store, "w", 2)  # window 4
    seen: Counter[str] = Counter()
    for _ in range(5):
        await d.run()
        for jid in await queued_jobs(store):
            seen[parse_job_id(jid)[0]] += 1
            await complete(store, jid)
    assert seen[small] == 5  # all of the small batch done in the first 10 dispatches
    assert seen[big] == 15
    assert (await store.status(small)).state is BatchState.COMPLETED


async def test_counters_add_up_and_duplicates_count_once(
    store: BatchStore, settings: Settings
) -> None:
    _, (bid,) = await dispatched(store, settings, 6, slots=10)
    jobs = await queued_jobs(store)
    assert len(jobs) == 6
    now = clock.now_ms()
    b, i = parse_job_id(jobs[0])
    # Two deliveries of the same job start together (arq is at-least-once).
    first = await store.scripts.start(b, i, jobs[0], now_ms=now, lease_until_ms=now + 9000)
    second = await store.scripts.start(b, i, jobs[0], now_ms=now, lease_until_ms=now + 9000)
    assert (first, second) == (("ok", 1), ("ok", 2))  # each start counts an attempt
    s = await store.status(bid)
    assert (s.running, s.queued, s.state) == (1, 5, BatchState.RUNNING)
    ok = encode_result(ItemStatus.SUCCEEDED, response="first")
    assert await store.scripts.finish(b, i, jobs[0], "succeeded", ok, now_ms=now)
    again = encode_result(ItemStatus.FAILED, response="second")
    assert not await store.scripts.finish(b, i, jobs[0], "failed", again, now_ms=now)
    s = await store.status(bid)
    assert (s.running, s.succeeded, s.failed, s.queued) == (0, 1, 0, 5)
    # A third delivery after the result exists does nothing at all.
    assert await store.scripts.start(b, i, jobs[0], now_ms=now, lease_until_ms=now) == ("final", 0)
    assert not await store.redis.hexists(store.keys.batch(bid).meta + ":tries", str(i))  # type: ignore[misc]
    assert (await store.status(bid)).running == 0
    for jid in jobs[1:4]:
        await complete(store, jid)
    for jid in jobs[4:]:
        await complete(store, jid, ItemStatus.FAILED)
    s = await store.status(bid)
    assert (s.succeeded, s.failed, s.queued, s.running) == (4, 2, 0, 0)
    assert s.state is BatchState.COMPLETED and s.finished_at
    assert not await store.redis.exists(store.keys.ready, store.keys.ready_level(0))


async def test_release_returns_a_running_item_to_queued(
    store: BatchStore, settings: Settings
) -> None:
    _, (bid,) = await dispatched(store, settings, 1, slots=1)
    (jid,) = await queued_jobs(store)
    now = clock.now_ms()
    await store.scripts.start(bid, 0, jid, now_ms=now, lease_until_ms=now + 1000)
    assert (await store.status(bid)).running == 1
    await store.scripts.release(bid, jid, refund=True)
    await store.scripts.release(bid, jid, refund=True)  # idempotent; never below zero
    s = await store.status(bid)
    assert (s.running, s.queued) == (0, 1)
    again = await store.scripts.start(bid, 0, jid, now_ms=now, lease_until_ms=now + 1000)
    assert again == ("ok", 1)  # the refunded attempt did not count
    assert s.retried == 0  # a shutdown's release is no retry...
    await store.scripts.release(bid, jid, refund=True, retried=True)
    assert (await store.status(bid)).retried == 1  # ...a retry's is counted, once


async def test_cancel(store: BatchStore, settings: Settings) -> None:
    d, (bid, other) = await dispatched(store, settings, 50, 3, slots=2)  # window 4
    jobs = [j for j in await queued_jobs(store) if j.startswith(bid)]
    # One of them is running (a worker holds arq's in-progress key): it finishes normally.
    running = jobs[0]
    now = clock.now_ms()
    await store.redis.set("arq:in-progress:" + running, b"1", px=60_000)
    b, i = parse_job_id(running)
    await store.scripts.start(b, i, running, now_ms=now, lease_until_ms=now + 60_000)

    s = await store.cancel(bid)
    assert s.state is BatchState.CANCELLED
    assert (s.running, s.cancelled, s.queued, s.succeeded) == (1, 49, 0, 0)
    assert s.finished_at is None  # the running item is still going
    assert [j for j in await queued_jobs(store) if j.startswith(bid)] == [running]
    assert not await store.redis.exists(ARQ_JOB_PREFIX + jobs[1])
    # Nothing more of it is ever dispatched; the other batch goes on.
    for _ in range(3):
        await d.run()
        for jid in await queued_jobs(store):
            if jid != running:
                assert not jid.startswith(bid)
                await complete(store, jid)
    ok = encode_result(ItemStatus.SUCCEEDED, response="x")
    assert await store.scripts.finish(b, i, running, "succeeded", ok, now_ms=now)
    s = await store.status(bid)
    assert (s.succeeded, s.cancelled, s.total, s.running) == (1, 49, 50, 0)
    assert s.state is BatchState.CANCELLED and s.finished_at
    assert (await store.status(other)).state is BatchState.COMPLETED
    assert (await store.cancel(bid)).cancelled == 49  # a second cancel changes nothing


async def test_job_started_after_cancel_is_recorded_cancelled(
    store: BatchStore, settings: Settings
) -> None:
    _, (bid,) = await dispatched(store, settings, 2, slots=1)
    jid = (await queued_jobs(store))[0]
    # A worker already claimed it (in-progress) when the cancel arrived, but had not started.
    await store.redis.set("arq:in-progress:" + jid, b"1", px=60_000)
    await store.cancel(bid)
    b, i = parse_job_id(jid)
    now = clock.now_ms()
    assert await store.scripts.start(b, i, jid, now_ms=now, lease_until_ms=now) == ("cancelled", 0)
    s = await store.status(bid)
    assert (s.cancelled, s.running, s.state) == (2, 0, BatchState.CANCELLED)
    assert s.finished_at


async def test_reaper_requeues_items_of_a_dead_worker(
    store: BatchStore, settings: Settings
) -> None:
    d, (bid,) = await dispatched(store, settings, 3, slots=2)
    a, b, *_ = await queued_jobs(store)
    now = clock.now_ms()
    for jid in (a, b):
        # A worker claimed both (arq's lock for 10 minutes), then died: leases lapse in 1 s.
        await store.redis.set("arq:in-progress:" + jid, b"1", px=600_000)
        _, i = parse_job_id(jid)
        await store.scripts.start(bid, i, jid, now_ms=now, lease_until_ms=now + 1000)
    # b's job key is gone too (e.g. expired): it must come back through the batch.
    await store.redis.delete(ARQ_JOB_PREFIX + b)
    await store.redis.zrem(store.keys.queue, b)
    assert (await store.status(bid)).running == 2
    assert await reap(store, now + 999) == 0  # not lapsed yet
    assert await reap(store, now + 1001) == 2
    assert await reap(store, now + 1001) == 0
    s = await store.status(bid)
    assert (s.running, s.queued) == (0, 3)
    assert not await store.redis.exists("arq:in-progress:" + a, "arq:in-progress:" + b)
    assert await store.redis.zscore(store.keys.queue, a) == now + 1001
    await store.redis.zrem(store.keys.queue, a)  # as if it ran and finished elsewhere
    await store.redis.hset(store.keys.batch(bid).meta, "next", "3")  # type: ignore[misc]
    await d.run()
    assert b in await queued_jobs(store)  # re-dispatched from the redo list


async def test_reaper_finishes_cancelled_items(store: BatchStore, settings: Settings) -> None:
    _, (bid,) = await dispatched(store, settings, 1, slots=1)
    (jid,) = await queued_jobs(store)
    now = clock.now_ms()
    await store.redis.set("arq:in-progress:" + jid, b"1", px=600_000)
    await store.scripts.start(bid, 0, jid, now_ms=now, lease_until_ms=now + 10)
    await store.cancel(bid)
    assert (await store.status(bid)).finished_at is None  # its one item is "running"
    assert await reap(store, now + 20) == 1
    s = await store.status(bid)
    assert (s.cancelled, s.running) == (1, 0) and s.finished_at


async def test_reaper_frees_claims_that_never_got_a_lease(
    store: BatchStore, settings: Settings
) -> None:
    await store.submit(items(2))
    await register_worker(store, "w", 1)
    await store.redis.zadd(store.keys.workers, {"long-dead": clock.now_ms() - 120_000})
    await store.redis.hset(store.keys.worker_slots, "long-dead", "8")  # type: ignore[misc]
    await Dispatcher(store.scripts, settings).run()
    old, fresh = await queued_jobs(store)
    # arq claimed both (600 s TTL); the claimer of `old` died 6 s ago before taking a lease.
    await store.redis.set("arq:in-progress:" + old, b"1", px=594_000)
    await store.redis.set("arq:in-progress:" + fresh, b"1", px=599_900)
    now = clock.now_ms()
    assert await reap(store, now) == 1
    assert not await store.redis.exists("arq:in-progress:" + old)
    assert await store.redis.exists("arq:in-progress:" + fresh)
    assert await store.redis.zscore(store.keys.queue, old) == now
    assert await store.redis.zscore(store.keys.workers, "long-dead") is None
    assert await store.redis.hget(store.keys.worker_slots, "long-dead") is None  # type: ignore[misc]
    assert await store.redis.zscore(store.keys.workers, "w") is not None


async def test_claim_takes_due_unclaimed_jobs_up_to_the_limit(
    store: BatchStore, settings: Settings
) -> None:
    await dispatched(store, settings, 6, slots=3, worker="w1")
    jobs = await queued_jobs(store)
    r = store.redis
    now = clock.now_ms()
    # One claimed elsewhere already, one not due yet (a retry's backoff), one gone.
    await r.set(ARQ_IN_PROGRESS_PREFIX + jobs[0], b"1", px=60_000)
    await r.zadd(store.keys.queue, {jobs[1]: now + 60_000})
    claimed = await store.scripts.claim(now_ms=now, ttl_ms=30_000, limit=3)
    assert [c.job_id for c in claimed] == jobs[2:5]
    for c in claimed:
        assert c.score == int(float(await r.zscore(store.keys.queue, c.job_id) or 0))
        assert 29_000 < await r.pttl(ARQ_IN_PROGRESS_PREFIX + c.job_id) <= 30_000
        # What arq's run_job would read: the payload, and the try counter, now 1.
        assert c.payload == await r.get(ARQ_JOB_PREFIX + c.job_id) and c.job_try == 1
    again = await store.scripts.claim(now_ms=now, ttl_ms=30_000, limit=10)
    assert [c.job_id for c in again] == jobs[5:]
    assert await store.scripts.claim(now_ms=now, ttl_ms=30_000, limit=10) == []
    # The job that was not due is taken once it is.
    late = await store.scripts.claim(now_ms=now + 60_000, ttl_ms=30_000, limit=10)
    assert [c.job_id for c in late] == [jobs[1]]
    # A job whose key lapsed is still claimed (arq's path then records it), without payload.
    await r.delete(ARQ_IN_PROGRESS_PREFIX + jobs[1], ARQ_JOB_PREFIX + jobs[1])
    (gone,) = await store.scripts.claim(now_ms=now + 60_000, ttl_ms=30_000, limit=10)
    assert (gone.job_id, gone.payload, gone.job_try) == (jobs[1], None, 2)


async def test_begin_returns_the_item_and_finish_retires_arqs_keys(
    store: BatchStore, settings: Settings
) -> None:
    await dispatched(store, settings, 1, slots=1, worker="w1")
    (jid,) = await queued_jobs(store)
    bid, idx = parse_job_id(jid)
    r = store.redis
    now = clock.now_ms()
    await r.set(ARQ_RETRY_PREFIX + jid, b"1")
    await store.scripts.claim(now_ms=now, ttl_ms=30_000, limit=1)
    outcome, attempt, raw = await store.scripts.begin(
        bid, idx, jid, now_ms=now, lease_until_ms=now + 5000
    )
    assert (outcome, attempt) == ("ok", 1)
    assert raw is not None and Item.loads(raw).body["prompt"] == "p0"
    ok = encode_result(ItemStatus.SUCCEEDED, response="r")
    assert await store.scripts.finish(bid, idx, jid, "succeeded", ok, now_ms=now)
    assert await queued_jobs(store) == []
    prefixes = (ARQ_JOB_PREFIX, ARQ_IN_PROGRESS_PREFIX, ARQ_RETRY_PREFIX)
    assert await r.exists(*(p + jid for p in prefixes)) == 0
