"""The constants the Lua scripts take as arguments (arq's key prefixes, the result a cancelled
item gets, the admission poll), each checked where it lands on a real server.

They used to be spliced into the scripts' text; each test here fails if its script ignores the
argument or its caller passes the wrong one.
"""

from __future__ import annotations

from datetime import timedelta

from batchq import clock
from batchq.options import SubmitOptions
from batchq.records import ItemStatus
from batchq.settings import Settings
from batchq.store.admission import _SLOT_POLL_MS, Admission
from batchq.store.batches import BatchStore
from batchq.store.codec import decode_result
from batchq.store.dispatch import Dispatcher
from batchq.store.keys import (
    ARQ_IN_PROGRESS_PREFIX,
    ARQ_JOB_PREFIX,
    ARQ_RESULT_PREFIX,
    ARQ_RETRY_PREFIX,
    job_id,
)
from tests.helpers import items, queued_jobs, register_worker


async def _dispatched(
    store: BatchStore,
    settings: Settings,
    n: int,
    options: SubmitOptions | None = None,
    *,
    claimed: int = 0,
) -> tuple[str, list[str]]:
    """A new batch of ``n`` items, all of them dispatched, the first ``claimed`` of them claimed
    by a worker (:func:`_claimed`); its jobs in index order."""
    bid, _ = await store.submit(items(n), options)
    # A worker with slots enough for every test's window.
    await register_worker(store, "w", 100)
    await Dispatcher(store.scripts, settings).run()
    jobs = [job_id(bid, i) for i in range(n)]
    assert set(jobs) <= set(await queued_jobs(store))
    for jid in jobs[:claimed]:
        await _claimed(store, jid)
    return bid, jobs


async def _claimed(store: BatchStore, jid: str) -> None:
    await store.redis.set(ARQ_IN_PROGRESS_PREFIX + jid, b"1", px=600_000)


async def _dropped_unclaimed(store: BatchStore, *, kept: str, dropped: str) -> None:
    """The unclaimed job left arq's queue with its job key; the claimed one is untouched."""
    assert await store.redis.zscore(store.keys.queue, kept) is not None
    assert await store.redis.zscore(store.keys.queue, dropped) is None
    assert await store.redis.exists(ARQ_JOB_PREFIX + dropped) == 0
    assert await store.redis.exists(ARQ_JOB_PREFIX + kept) == 1


async def _result_status(store: BatchStore, bid: str, index: int) -> ItemStatus:
    raw = await store.redis.hget(store.keys.batch(bid).results, str(index))  # type: ignore[misc]
    assert raw is not None, "no result stored"
    return decode_result(index, None, raw).status


async def test_dispatch_writes_arqs_job_key_and_skips_a_job_arq_has_a_result_for(
    store: BatchStore, settings: Settings
) -> None:
    bid, _ = await store.submit(items(2))
    done = ARQ_RESULT_PREFIX + job_id(bid, 1)
    await store.redis.set(done, b"x", px=60_000)
    out = await Dispatcher(store.scripts, settings).run()
    assert out.sent == 1
    assert await store.redis.exists(ARQ_JOB_PREFIX + job_id(bid, 0)) == 1
    assert await store.redis.exists(ARQ_JOB_PREFIX + job_id(bid, 1)) == 0
    await store.redis.delete(done)


async def test_start_records_a_cancelled_item_with_the_cancelled_result(
    store: BatchStore, settings: Settings
) -> None:
    # At a worker already: the cancel leaves it to the start.
    bid, (jid,) = await _dispatched(store, settings, 1, claimed=1)
    await store.cancel(bid)
    now = clock.now_ms()
    assert await store.scripts.start(bid, 0, jid, now_ms=now, lease_until_ms=now) == (
        "cancelled",
        0,
    )
    assert await _result_status(store, bid, 0) == ItemStatus.CANCELLED


async def test_claim_takes_arqs_claim_and_try_counter_and_reads_its_job_key(
    store: BatchStore, settings: Settings
) -> None:
    _, (jid,) = await _dispatched(store, settings, 1)
    (claim,) = await store.scripts.claim(now_ms=clock.now_ms(), ttl_ms=30_000, limit=1)
    assert claim.job_id == jid and claim.job_try == 1
    assert claim.payload == await store.redis.get(ARQ_JOB_PREFIX + jid)
    assert 0 < await store.redis.pttl(ARQ_IN_PROGRESS_PREFIX + jid) <= 30_000
    assert await store.redis.get(ARQ_RETRY_PREFIX + jid) == b"1"


async def test_finish_retires_arqs_three_keys(store: BatchStore, settings: Settings) -> None:
    bid, (jid,) = await _dispatched(store, settings, 1)
    await store.scripts.claim(now_ms=clock.now_ms(), ttl_ms=30_000, limit=1)
    now = clock.now_ms()
    await store.scripts.start(bid, 0, jid, now_ms=now, lease_until_ms=now + 5000)
    arq_keys = [p + jid for p in (ARQ_IN_PROGRESS_PREFIX, ARQ_RETRY_PREFIX, ARQ_JOB_PREFIX)]
    assert await store.redis.exists(*arq_keys) == 3
    assert await store.scripts.finish(bid, 0, jid, "succeeded", '{"s":"succeeded"}', now_ms=now)
    assert await store.redis.exists(*arq_keys) == 0


async def test_reap_uses_arqs_claim_and_job_keys_and_the_cancelled_result(
    store: BatchStore, settings: Settings
) -> None:
    bid, (stale, lapsed) = await _dispatched(store, settings, 2)
    other, (cancelled,) = await _dispatched(store, settings, 1)
    now = clock.now_ms()
    # A claim 10 s old (TTL 600 s, 590 s left) that never got a lease.
    await store.redis.set(ARQ_IN_PROGRESS_PREFIX + stale, b"1", px=590_000)
    for b, jid in ((bid, lapsed), (other, cancelled)):
        await _claimed(store, jid)
        await store.scripts.start(b, int(jid[-1]), jid, now_ms=now, lease_until_ms=now + 10)
    await store.redis.hset(store.keys.batch(other).meta, "state", "cancelled")  # type: ignore[misc]
    n = await store.scripts.reap(now_ms=now + 20, claim_ttl_ms=600_000, grace_ms=5_000)
    assert n == 3
    assert await store.redis.exists(*(ARQ_IN_PROGRESS_PREFIX + j for j in (stale, lapsed))) == 0
    # The lapsed job still has its job key: due again in arq's queue rather than redone.
    assert await store.redis.zscore(store.keys.queue, lapsed) == now + 20
    assert await store.redis.lrange(store.keys.batch(bid).redo, 0, -1) == []  # type: ignore[misc]
    assert await _result_status(store, other, 0) == ItemStatus.CANCELLED


async def test_repair_spares_claimed_items_drops_lost_jobs_and_cancels_with_the_result(
    store: BatchStore, settings: Settings
) -> None:
    bid, (claimed, lost) = await _dispatched(store, settings, 2, claimed=1)
    # Out of arq's queue and not running: lost, though its job key is still there.
    await store.redis.zrem(store.keys.queue, claimed, lost)
    assert await store.scripts.repair_range(bid, 0, 2, now_ms=clock.now_ms()) == 1
    assert await store.redis.exists(ARQ_JOB_PREFIX + lost) == 0
    assert await store.redis.exists(ARQ_JOB_PREFIX + claimed) == 1
    assert await store.redis.lrange(store.keys.batch(bid).redo, 0, -1) == [b"1"]  # type: ignore[misc]

    other, (gone,) = await _dispatched(store, settings, 1)
    await store.redis.zrem(store.keys.queue, gone)
    await store.redis.hset(store.keys.batch(other).meta, "state", "cancelled")  # type: ignore[misc]
    assert await store.scripts.repair_range(other, 0, 1, now_ms=clock.now_ms()) == 1
    assert await _result_status(store, other, 0) == ItemStatus.CANCELLED


async def test_cancel_drops_unclaimed_jobs_with_their_keys_and_stores_the_cancelled_result(
    store: BatchStore, settings: Settings
) -> None:
    bid, (claimed, waiting) = await _dispatched(store, settings, 2, claimed=1)
    assert await store.control.cancel(bid, now_ms=clock.now_ms()) == "cancelled"
    await _dropped_unclaimed(store, kept=claimed, dropped=waiting)
    assert await _result_status(store, bid, 1) == ItemStatus.CANCELLED

    # Paused, its job is back in the redo list: it gets its result from there.
    more, _ = await _dispatched(store, settings, 1)
    await store.control.pause(more, now_ms=clock.now_ms())
    assert await store.control.cancel(more, now_ms=clock.now_ms()) == "cancelled"
    assert await _result_status(store, more, 0) == ItemStatus.CANCELLED


async def test_pause_takes_back_unclaimed_jobs_only(store: BatchStore, settings: Settings) -> None:
    bid, (claimed, waiting) = await _dispatched(store, settings, 2, claimed=1)
    assert await store.control.pause(bid, now_ms=clock.now_ms()) == "paused"
    await _dropped_unclaimed(store, kept=claimed, dropped=waiting)
    assert await store.redis.lrange(store.keys.batch(bid).redo, 0, -1) == [b"1"]  # type: ignore[misc]


async def test_resume_makes_parked_jobs_due_but_not_claimed_ones(
    store: BatchStore, settings: Settings
) -> None:
    bid, (claimed, parked) = await _dispatched(store, settings, 2, claimed=2)
    await store.control.pause(bid, now_ms=clock.now_ms())
    # The start script said 'paused' to both workers: one parked its job far ahead and let
    # go of the claim; the other still holds its claim.
    far = clock.now_ms() + 10**9
    await store.redis.zadd(store.keys.queue, {claimed: far, parked: far})
    await store.redis.delete(ARQ_IN_PROGRESS_PREFIX + parked)
    now = clock.now_ms()
    assert await store.control.resume(bid, now_ms=now) == "queued"
    assert await store.redis.zscore(store.keys.queue, parked) == now
    assert await store.redis.zscore(store.keys.queue, claimed) == far


async def test_expire_drops_unclaimed_jobs_with_their_keys_and_spares_claimed_ones(
    store: BatchStore, settings: Settings
) -> None:
    options = SubmitOptions(deadline=timedelta(minutes=1))
    bid, (claimed, waiting) = await _dispatched(store, settings, 2, options, claimed=1)
    assert options.deadline_ms is not None
    deadline = options.deadline_ms
    payload = '{"s":"expired"}'
    assert await store.control.expire(bid, now_ms=deadline + 1, chunk=10, payload=payload) == 0
    await _dropped_unclaimed(store, kept=claimed, dropped=waiting)
    assert await _result_status(store, bid, 1) == ItemStatus.EXPIRED


async def test_admit_asks_a_request_over_the_concurrency_cap_to_poll(store: BatchStore) -> None:
    adm = Admission(store.redis, store.keys, "http://gpu-1:11434")
    await adm.configure(concurrency=1)
    now = clock.now_ms()
    assert await adm.try_admit("a", now_ms=now, slot_until_ms=now + 60_000) == 0
    assert await adm.try_admit("b", now_ms=now, slot_until_ms=now + 60_000) == _SLOT_POLL_MS
