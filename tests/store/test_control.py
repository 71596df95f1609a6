"""Pause, resume, retry and error history, driven through the scripts against a real server: what a
worker sees at each step, with at-least-once deliveries and other batches around."""

from __future__ import annotations

import json

import pytest

from batchq import clock
from batchq.errors import BatchNotFound, BatchStateError
from batchq.records import BatchState, ItemError, ItemStatus
from batchq.results.export import iter_results
from batchq.settings import Settings
from batchq.store.batches import BatchStore
from batchq.store.codec import encode_result
from batchq.store.dispatch import Dispatcher
from batchq.store.items import item_info
from batchq.store.keys import ARQ_JOB_PREFIX, parse_job_id
from tests.helpers import (
    claim,
    complete,
    counts_add_up,
    dispatched,
    finish_all,
    items,
    of,
    queued_jobs,
    run_batch,
)


async def redo(store: BatchStore, bid: str) -> list[int]:
    return [int(x) for x in await store.redis.lrange(store.keys.batch(bid).redo, 0, -1)]  # type: ignore[misc]


async def test_pause_takes_the_window_back_and_dispatches_nothing(
    store: BatchStore, settings: Settings
) -> None:
    # Window 6: 3 of each batch.
    d, (bid, other) = await dispatched(store, settings, 20, 4, slots=3)
    mine = of(bid, await queued_jobs(store))
    assert len(mine) == 3
    running, claimed, waiting = mine
    now = clock.now_ms()
    await claim(store, running)
    await store.scripts.start(
        bid, parse_job_id(running)[1], running, now_ms=now, lease_until_ms=now + 60_000
    )
    await claim(store, claimed)

    s = await store.pause(bid)
    assert s.state is BatchState.PAUSED and (s.running, s.queued) == (1, 19)
    counts_add_up(s)
    assert (await store.pause(bid)).state is BatchState.PAUSED  # idempotent
    # The unclaimed job is back in the batch; the claimed and running ones stay with arq.
    assert of(bid, await queued_jobs(store)) == [running, claimed]
    assert not await store.redis.exists(ARQ_JOB_PREFIX + waiting)
    assert await redo(store, bid) == [parse_job_id(waiting)[1]]
    assert await store.redis.zscore(store.keys.open, bid) is None  # no idle repair while paused
    # The claimed job starts after the pause: not run, no attempt, no lease.
    i = parse_job_id(claimed)[1]
    assert await store.scripts.start(bid, i, claimed, now_ms=now, lease_until_ms=now + 9) == (
        "paused",
        0,
    )
    assert (await store.status(bid)).running == 1
    # Nothing of it is dispatched while the other batch runs to its end.
    for _ in range(4):
        await d.run()
        for jid in of(other, await queued_jobs(store)):
            await complete(store, jid)
    assert of(bid, await queued_jobs(store)) == [running, claimed]
    assert (await store.status(other)).state is BatchState.COMPLETED
    # The running item finishes normally.
    ok = encode_result(ItemStatus.SUCCEEDED, response="x", attempts=1)
    i = parse_job_id(running)[1]
    assert await store.scripts.finish(bid, i, running, "succeeded", ok, now_ms=now)
    await store.redis.zrem(store.keys.queue, running)
    s = await store.status(bid)
    assert (s.state, s.succeeded, s.running, s.queued) == (BatchState.PAUSED, 1, 0, 19)


async def test_resume_continues_where_it_stopped(store: BatchStore, settings: Settings) -> None:
    d, (bid,) = await dispatched(store, settings, 10, slots=2)  # window 4
    first = of(bid, await queued_jobs(store))
    await complete(store, first[0])
    parked = first[1]
    await claim(store, parked)
    await store.pause(bid)
    # The worker that claimed it parks it: arq's Retry puts it far in the future, unclaimed.
    now = clock.now_ms()
    i = parse_job_id(parked)[1]
    assert (await store.scripts.start(bid, i, parked, now_ms=now, lease_until_ms=now))[
        0
    ] == "paused"
    await store.redis.delete("arq:in-progress:" + parked)
    await store.redis.zadd(store.keys.queue, {parked: now + 600_000})
    assert (await d.run()).sent == 0

    s = await store.resume(bid)
    assert s.state is BatchState.RUNNING
    assert await store.redis.zscore(store.keys.open, bid) is not None
    assert (await store.redis.zscore(store.keys.queue, parked) or 0) <= clock.now_ms()
    done = {first[0]}
    for _ in range(10):
        await d.run()
        for jid in of(bid, await queued_jobs(store)):
            assert jid not in done  # every item runs once, the parked one included
            await complete(store, jid)
            done.add(jid)
    s = await store.status(bid)
    assert (s.state, s.succeeded, s.queued) == (BatchState.COMPLETED, 10, 0) and s.finished_at
    assert len(done) == 10


async def test_pause_and_resume_edge_cases(store: BatchStore, settings: Settings) -> None:
    fresh, _ = await store.submit(items(2))
    s = await store.pause(fresh)
    assert s.state is BatchState.PAUSED and s.started_at is None
    assert (await store.resume(fresh)).state is BatchState.QUEUED  # never started
    assert (await store.resume(fresh)).state is BatchState.QUEUED  # not paused: unchanged
    await store.pause(fresh)
    s = await store.cancel(fresh)  # a paused batch can be cancelled, and then it is final
    assert (s.state, s.cancelled) == (BatchState.CANCELLED, 2) and s.finished_at
    with pytest.raises(BatchStateError, match="is cancelled: nothing left to pause"):
        await store.pause(fresh)
    assert (await store.resume(fresh)).state is BatchState.CANCELLED
    with pytest.raises(BatchNotFound):
        await store.pause("b_0123456789abcdef")
    with pytest.raises(BatchNotFound):
        await store.resume("b_nope")


async def test_paused_batch_completes_when_its_last_items_finish(
    store: BatchStore, settings: Settings
) -> None:
    _, (bid,) = await dispatched(store, settings, 2, slots=1)
    jobs = of(bid, await queued_jobs(store))
    now = clock.now_ms()
    for jid in jobs:
        await claim(store, jid)
        await store.scripts.start(
            bid, parse_job_id(jid)[1], jid, now_ms=now, lease_until_ms=now + 9000
        )
    await store.pause(bid)
    for jid in jobs:
        bad = encode_result(ItemStatus.FAILED, attempts=1)
        await store.scripts.finish(bid, parse_job_id(jid)[1], jid, "failed", bad, now_ms=now)
    s = await store.status(bid)
    assert (s.state, s.failed) == (BatchState.COMPLETED, 2) and s.finished_at


async def test_release_failed_keeps_a_capped_error_history(
    store: BatchStore, settings: Settings
) -> None:
    _, (bid,) = await dispatched(store, settings, 2, slots=1)
    jid = of(bid, await queued_jobs(store))[0]
    bk = store.keys.batch(bid)
    claimed_at = int(await store.redis.zscore(store.keys.queue, jid) or 0)
    for n in range(1, 13):
        now = clock.now_ms()
        outcome = await store.scripts.start(bid, 0, jid, now_ms=now, lease_until_ms=now + 60_000)
        assert outcome == ("ok", n)
        error = ItemError(type="server_busy", message=f"busy ✓ {n} " + "x" * 400, status_code=503)
        if n == 12:
            error = ItemError(type="timeout", message="no reply")
        await store.control.release_failed(
            bid, 0, jid, score=claimed_at, attempt=n, error=error, now_ms=1_700_000_000_000 + n
        )
        s = await store.status(bid)
        assert (s.running, s.queued) == (0, 2)  # waiting out its backoff: queued
        assert await store.redis.zscore(store.keys.queue, jid) == claimed_at
    history = json.loads(await store.redis.hget(bk.errors, "0"))  # type: ignore[misc]
    assert [e[0] for e in history] == list(range(3, 13))  # the last ten, oldest first
    assert history[0][1:4] == ["server_busy", ("busy ✓ 3 " + "x" * 400)[:300], 503]
    assert history[-1] == [12, "timeout", "no reply", None, 1_700_000_000_012]
    assert await store.redis.hget(bk.tries, "0") == b"12"  # type: ignore[misc]
    assert not await store.redis.hexists(bk.errors, "1")  # type: ignore[misc]


async def test_retry_failed_reruns_them_under_the_same_batch(
    store: BatchStore, settings: Settings
) -> None:
    gone = ItemError(type="model_not_found", message="model 'm' not found", status_code=404)
    bid = await run_batch(store, settings, 6, slots=4, failing={1: gone, 4: gone})
    s = await store.status(bid)
    assert (s.state, s.succeeded, s.failed) == (BatchState.COMPLETED, 4, 2) and s.finished_at

    assert await store.retry(bid, statuses=[ItemStatus.FAILED]) == 2
    s = await store.status(bid)
    assert (s.state, s.succeeded, s.failed, s.queued) == (BatchState.RUNNING, 4, 0, 2)
    assert s.finished_at is None
    counts_add_up(s)
    bk = store.keys.batch(bid)
    assert await redo(store, bid) == [1, 4]
    assert not await store.redis.exists(bk.retrying)
    assert await store.redis.hgetall(bk.prior) == {b"1": b"2", b"4": b"5"}  # type: ignore[misc]
    assert await store.redis.zscore(store.keys.ready_level(0), bid) is not None
    assert await store.retry(bid, statuses=[ItemStatus.FAILED]) == 0  # nothing failed now
    # The old results are gone until the new ones come: pending items are not in the output.
    assert [r.index for r in [r async for r in iter_results(store, bid)]] == [0, 2, 3, 5]

    await finish_all(store, settings, bid, {})
    s = await store.status(bid)
    assert (s.state, s.succeeded, s.failed) == (BatchState.COMPLETED, 6, 0) and s.finished_at
    rows = [r async for r in iter_results(store, bid)]
    assert [(r.index, r.status, r.attempts) for r in rows if r.index in (1, 4)] == [
        (1, ItemStatus.SUCCEEDED, 3),  # 2 in the first run, 1 in the second
        (4, ItemStatus.SUCCEEDED, 6),
    ]
    info = await item_info(store, bid, "1")
    assert info.attempts == 3 and info.result and info.result.response == "r1"
    assert [(e.attempt, e.type, e.status_code) for e in info.errors] == [
        (2, "model_not_found", 404)
    ]


async def test_retry_by_index_and_what_it_refuses(store: BatchStore, settings: Settings) -> None:
    _, (bid,) = await dispatched(store, settings, 4, slots=1)  # items 0 and 1 in arq's window
    await complete(store, of(bid, await queued_jobs(store))[0])
    # Item 0 is final (re-run whatever its status), 1 is queued and 3 never dispatched: left.
    assert await store.retry(bid, indices=[0, 1, 3, 0]) == 1
    s = await store.status(bid)
    assert (s.succeeded, s.queued) == (0, 4)
    assert await redo(store, bid) == [0]
    await store.pause(bid)
    await finish_all(store, settings, bid, {})  # nothing runs while paused...
    assert (await store.status(bid)).succeeded == 0
    await store.resume(bid)
    await finish_all(store, settings, bid, {})  # ...and everything on resume
    assert (await store.status(bid)).state is BatchState.COMPLETED
    await store.retry(bid, indices=[2])
    await store.cancel(bid)
    with pytest.raises(BatchStateError, match="cancelled: a cancelled batch cannot be retried"):
        await store.retry(bid, statuses=[ItemStatus.FAILED])
    with pytest.raises(BatchNotFound):
        await store.retry("b_0123456789abcdef", indices=[0])


async def test_a_retry_that_dies_half_way_strands_nothing(
    store: BatchStore, settings: Settings
) -> None:
    bad = ItemError(type="server_error", message="boom", status_code=500)
    bid = await run_batch(store, settings, 3, slots=2, failing={0: bad, 2: bad})
    # Staged, then the retrying process dies before its commit.
    staged = await store.control.retry_stage(
        bid, statuses="failed", now_ms=clock.now_ms(), span=(0, 3)
    )
    assert staged == 2
    s = await store.status(bid)
    # Not final and not dispatchable: the batch cannot finish in between, nor run them.
    assert (s.state, s.queued, s.finished_at) == (BatchState.RUNNING, 2, None)
    assert (await Dispatcher(store.scripts, settings).run()).sent == 0
    assert await store.redis.zscore(store.keys.open, bid) is not None  # the repairer sees it
    assert await store.repair(bid) == 2
    await finish_all(store, settings, bid, {})
    s = await store.status(bid)
    assert (s.state, s.succeeded) == (BatchState.COMPLETED, 3)


async def test_retry_reads_any_result_layout_and_clips_long_messages(
    store: BatchStore, settings: Settings
) -> None:
    bid = await run_batch(
        store, settings, 1, slots=1, failing={0: ItemError(type="x", message="y")}
    )
    # Status not first, and a message of two-byte characters far over the history's limit.
    payload = json.dumps(
        {"a": 7, "e": {"type": "server_error", "message": "é" * 1000, "status_code": None}},
        ensure_ascii=False,
    ).replace('{"a"', '{"z":1,"s":"failed","a"')
    await store.redis.hset(store.keys.batch(bid).results, mapping={"0": payload})  # type: ignore[misc]
    assert await store.retry(bid, statuses=[ItemStatus.FAILED]) == 1
    (entry,) = (await item_info(store, bid, "0")).errors
    assert (entry.attempt, entry.type, entry.status_code) == (7, "server_error", None)
    assert entry.message == "é" * 600  # 1200 bytes, cut between characters


async def test_retry_of_any_status_reads_the_head_of_a_deflated_result(
    store: BatchStore, settings: Settings
) -> None:
    bid = await run_batch(store, settings, 1, slots=1)
    long = " ".join(f"sentence {i} of a long answer." for i in range(200))
    payload = encode_result(ItemStatus.SUCCEEDED, response=long, attempts=3)
    assert isinstance(payload, bytes)  # deflated: Lua cannot decode all of it
    await store.redis.hset(store.keys.batch(bid).results, mapping={"0": payload})  # type: ignore[misc]
    assert await store.retry(bid, indices=[0]) == 1
    s = await store.status(bid)
    assert (s.succeeded, s.queued) == (0, 1)
    await finish_all(store, settings, bid, {})
    [result] = [r async for r in iter_results(store, bid)]
    assert result.attempts == 3 + 1  # the deflated result's attempts were carried over
