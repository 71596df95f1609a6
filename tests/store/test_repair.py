"""Lost jobs: items that are neither final, queued, running nor claimed are found and sent
again under the same job ids, by ``batchq repair`` and by workers when a batch goes idle."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import cast

from batchq import clock
from batchq.records import BatchState, Endpoint, Item, ItemStatus
from batchq.settings import Settings
from batchq.store.batches import BatchStore
from batchq.store.codec import encode_result
from batchq.store.dispatch import Dispatcher
from batchq.store.keys import ARQ_JOB_PREFIX, parse_job_id
from tests.helpers import queued_jobs, register_worker, worker_hooks
from workers.housekeeping import repair_idle_batches
from workers.state import WorkerState


def items(n: int) -> list[Item]:
    return [Item(str(i), Endpoint.GENERATE, {"model": "m", "prompt": f"p{i}"}) for i in range(n)]


async def lose(store: BatchStore, jid: str) -> None:
    """What arq does to a job whose key expired: drop it from the queue, with no result."""
    await store.redis.zrem(store.keys.queue, jid)
    await store.redis.delete(ARQ_JOB_PREFIX + jid)


async def setup(store: BatchStore, settings: Settings, n: int) -> tuple[str, list[str]]:
    bid, _ = await store.submit(items(n))
    await register_worker(store, "w", 3)
    await Dispatcher(store.scripts, settings).run()
    return bid, sorted(await queued_jobs(store), key=lambda j: parse_job_id(j)[1])


async def test_repair_finds_exactly_the_lost_items(store: BatchStore, settings: Settings) -> None:
    bid, jobs = await setup(store, settings, 10)
    assert len(jobs) == 6  # dispatched 0..5; 6..9 still behind the cursor
    now = clock.now_ms()
    done, running, claimed, waiting, lost_a, lost_b = jobs
    _, i = parse_job_id(done)
    await store.scripts.start(bid, i, done, now_ms=now, lease_until_ms=now + 60_000)
    payload = encode_result(ItemStatus.SUCCEEDED, response="r")
    await store.scripts.finish(bid, i, done, "succeeded", payload, now_ms=now)
    await lose(store, done)  # finished jobs leave the queue: not lost, final
    _, i = parse_job_id(running)
    await store.scripts.start(bid, i, running, now_ms=now, lease_until_ms=now + 60_000)
    await store.redis.zrem(store.keys.queue, running)  # even out of the queue, its lease counts
    await store.redis.set("arq:in-progress:" + claimed, b"1", px=60_000)
    await store.redis.zrem(store.keys.queue, claimed)
    await lose(store, lost_a)
    await lose(store, lost_b)
    assert waiting in await queued_jobs(store)

    assert await store.repair(bid) == 2
    assert await store.repair(bid) == 0  # now waiting in the redo list
    out = await Dispatcher(store.scripts, settings).run()
    again = set(await queued_jobs(store))
    assert {lost_a, lost_b} <= again and out.sent >= 2
    s = await store.status(bid)
    assert s.queued + s.running + s.succeeded == 10


async def test_repair_of_a_cancelled_batch_closes_it(store: BatchStore, settings: Settings) -> None:
    bid, jobs = await setup(store, settings, 3)
    await store.redis.set("arq:in-progress:" + jobs[0], b"1", px=60_000)  # survives the cancel
    await store.cancel(bid)
    await store.redis.delete("arq:in-progress:" + jobs[0])
    await lose(store, jobs[0])  # ...and then was lost
    assert (await store.status(bid)).finished_at is None
    assert await store.repair(bid) == 1
    s = await store.status(bid)
    assert (s.cancelled, s.state) == (3, BatchState.CANCELLED) and s.finished_at


async def test_workers_repair_idle_batches(store: BatchStore, settings: Settings) -> None:
    bid, jobs = await setup(store, settings, 4)
    await lose(store, jobs[1])
    async with worker_hooks(store, settings.with_overrides(repair_after=0.2)) as ctx:
        st = cast(WorkerState, ctx["batchq"])
        assert await repair_idle_batches(st) == 0  # not idle yet
        await store.redis.zadd(store.keys.open, {bid: clock.now_ms() - 1000})
        assert await repair_idle_batches(st) == 1
        await store.redis.delete(store.keys.repair_lock)
        assert await repair_idle_batches(st) == 0  # progress marked
    assert await store.redis.lrange(store.keys.batch(bid).redo, 0, -1) in (  # type: ignore[misc]
        [b"1"],
        [],  # already re-dispatched by the worker's dispatch loop
    )


async def test_repair_command(store: BatchStore, settings: Settings) -> None:
    bid, jobs = await setup(store, settings, 3)
    await lose(store, jobs[2])
    assert settings.redis_url
    # Blocking on purpose: the CLI under test is its own process; nothing else runs here.
    proc = subprocess.run(  # noqa: ASYNC221
        [
            sys.executable,
            "-m",
            "batchq",
            "repair",
            bid,
            "--json",
            "--redis",
            settings.redis_url,
            "--prefix",
            settings.prefix,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"batch_id": bid, "requeued": 1}
