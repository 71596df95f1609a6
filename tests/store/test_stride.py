"""Priorities and stride scheduling in the dispatcher, driven directly against a real server:
dispatch, then complete what was dispatched, as workers would, and count who got what."""

from __future__ import annotations

from collections import Counter

import pytest

from batchq.errors import InputError
from batchq.options import SubmitOptions
from batchq.settings import Settings
from batchq.store.batches import BatchStore
from batchq.store.dispatch import Dispatcher
from batchq.store.keys import parse_job_id
from batchq.store.stride import jain_index
from tests.helpers import complete, items, queued_jobs, register_worker


async def run_rounds(store: BatchStore, settings: Settings, rounds: int) -> list[str]:
    """Batch ids in the order their items were dispatched, over ``rounds`` dispatch calls,
    each followed by completing everything in the window."""
    d = Dispatcher(store.scripts, settings)
    order: list[str] = []
    for _ in range(rounds):
        await d.run()
        for jid in await queued_jobs(store):
            order.append(parse_job_id(jid)[0])
            await complete(store, jid)
    return order


async def test_equal_weights_get_equal_shares(store: BatchStore, settings: Settings) -> None:
    ids = [(await store.submit(items(200)))[0] for _ in range(3)]
    await register_worker(store, "w", 3)  # window 6
    seen = Counter(await run_rounds(store, settings, 20))
    assert [seen[b] for b in ids] == [40, 40, 40]
    assert jain_index([seen[b] for b in ids]) == 1.0


async def test_shares_follow_the_weights(store: BatchStore, settings: Settings) -> None:
    light, _ = await store.submit(items(500))
    heavy, _ = await store.submit(items(500), SubmitOptions(weight=2))
    tenth, _ = await store.submit(items(500), SubmitOptions(weight=0.5))
    await register_worker(store, "w", 7)  # window 14
    seen = Counter(await run_rounds(store, settings, 10))
    # Stride scheduling is exact up to one item per batch, whatever the window.
    assert abs(seen[heavy] - 80) <= 1 and abs(seen[light] - 40) <= 1
    assert abs(seen[tenth] - 20) <= 1
    s = await store.status(heavy)
    assert (s.priority, s.weight) == (0, 2.0)


async def test_higher_priority_takes_all_until_drained(
    store: BatchStore, settings: Settings
) -> None:
    big, _ = await store.submit(items(300))
    await register_worker(store, "w", 2)  # window 4
    assert set(await run_rounds(store, settings, 2)) == {big}
    urgent, _ = await store.submit(items(10), SubmitOptions(priority=1))
    low, _ = await store.submit(items(50), SubmitOptions(priority=-1))
    order = await run_rounds(store, settings, 12)
    # Three windows of 4: the urgent batch's 10, then the level below fills the rest; the
    # lowest level waits until the big batch is done.
    assert order[:8] == [urgent] * 8
    assert Counter(order[8:12]) == {urgent: 2, big: 2}
    assert order[12:] == [big] * 36
    s = await store.status(urgent)
    assert s.finished_at and s.priority == 1
    assert await store.redis.zrange(store.keys.ready, 0, -1) == [b"-1", b"0"]
    assert (await store.status(low)).succeeded == 0


async def test_a_joining_batch_starts_at_the_smallest_pass(
    store: BatchStore, settings: Settings
) -> None:
    old, _ = await store.submit(items(400))
    await register_worker(store, "w", 5)  # window 10
    await run_rounds(store, settings, 10)  # the old batch's pass is now 100
    new, _ = await store.submit(items(400))
    # No credit for the time it was not there: the two alternate from here on.
    seen = Counter(await run_rounds(store, settings, 4))
    assert (seen[old], seen[new]) == (20, 20)
    # Nor for the time it was paused.
    await store.pause(new)
    assert set(await run_rounds(store, settings, 3)) == {old}
    await store.resume(new)
    seen = Counter(await run_rounds(store, settings, 4))
    assert abs(seen[old] - seen[new]) <= 1


async def test_a_batch_leaves_its_level_when_done_paused_or_cancelled(
    store: BatchStore, settings: Settings
) -> None:
    k = store.keys
    one, _ = await store.submit(items(2), SubmitOptions(priority=3))
    other, _ = await store.submit(items(20), SubmitOptions(priority=3))
    assert await store.redis.zcard(k.ready_level(3)) == 2
    await register_worker(store, "w", 2)
    await run_rounds(store, settings, 1)  # all of `one` dispatched and completed
    assert await store.redis.zscore(k.ready_level(3), one) is None
    await store.pause(other)
    assert not await store.redis.exists(k.ready, k.ready_level(3))
    await store.resume(other)
    assert await store.redis.zrange(k.ready, 0, -1) == [b"3"]
    await store.cancel(other)
    assert not await store.redis.exists(k.ready, k.ready_level(3))
    out = await Dispatcher(store.scripts, settings).run()
    assert (out.sent, out.active_batches) == (0, 0)


async def test_batches_of_the_old_round_robin_list_are_taken_over(
    store: BatchStore, settings: Settings
) -> None:
    bid, _ = await store.submit(items(3))
    k = store.keys
    # As a batchq from before priorities left it: in the list, flagged active, no level.
    await store.redis.delete(k.ready, k.ready_level(0))
    await store.redis.rpush(k.legacy_active, bid, "b_0000000000000000")  # type: ignore[misc]
    await register_worker(store, "w", 4)
    out = await Dispatcher(store.scripts, settings).run()
    assert out.sent == 3
    assert not await store.redis.exists(k.legacy_active)
    assert not await store.redis.exists(k.batch("b_0000000000000000").meta)


async def test_bad_priority_or_weight_is_refused_before_anything_is_stored(
    store: BatchStore,
) -> None:
    with pytest.raises(InputError, match="field 'weight'"):
        await store.submit(items(3), SubmitOptions(weight=0))
    with pytest.raises(InputError, match="field 'priority'"):
        await store.submit(items(3), SubmitOptions(priority=1.5))  # type: ignore[arg-type]
    assert await store.recent() == []


def test_jain_index() -> None:
    assert jain_index([5, 5, 5]) == 1.0
    assert jain_index([9, 0, 0]) == pytest.approx(1 / 3)
    assert 0.99 < jain_index([100, 98, 101]) < 1.0
    with pytest.raises(ValueError):
        jain_index([0, 0])
