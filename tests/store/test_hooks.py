"""Completion-hook claims against a real server: one sender per completion, retries with
backoff, and never a second successful delivery (the POST itself: ``tests/workers/test_notify``)."""

from __future__ import annotations

import asyncio

from batchq import clock
from batchq.records import ItemStatus
from batchq.settings import Settings
from batchq.store.batches import BatchStore
from batchq.store.hooks import HookClaim, Hooks
from tests.helpers import finish_all, finished_batch

LEASE = 60_000


async def claimed(store: BatchStore, settings: Settings) -> tuple[str, Hooks, int, HookClaim]:
    """A finished batch whose hook was just claimed for sending: (id, hooks, when, claim)."""
    bid = await finished_batch(store, settings)
    hooks = Hooks(store.redis, store)
    now = clock.now_ms()
    claim = await hooks.claim(now_ms=now, lease_ms=LEASE)
    assert claim is not None and claim.action == "send"
    return bid, hooks, now, claim


async def test_a_finished_batch_is_claimed_by_one_worker(
    store: BatchStore, settings: Settings
) -> None:
    plain = await finished_batch(store, settings, None)
    bid = await finished_batch(store, settings)
    assert (await store.status(plain)).notify is None
    assert (await store.status(bid)).notify == "pending"
    assert [b.decode() for b in await store.redis.zrange(store.keys.hooks, 0, -1)] == [bid]
    a, b = Hooks(store.redis, store), Hooks(store.redis, store)
    now = clock.now_ms()
    claims = await asyncio.gather(
        a.claim(now_ms=now, lease_ms=LEASE), b.claim(now_ms=now, lease_ms=LEASE)
    )
    sent = [c for c in claims if c is not None]
    assert len(sent) == 1 and sent[0].action == "send" and sent[0].attempt == 1
    assert (sent[0].batch_id, sent[0].url) == (bid, "http://127.0.0.1:9/h")
    assert (await store.status(bid)).notify == "sending"
    assert await a.settle(sent[0], "delivered")
    assert (await store.status(bid)).notify == "delivered"
    assert await store.redis.zcard(store.keys.hooks) == 0
    assert await a.claim(now_ms=now + 10 * LEASE, lease_ms=LEASE) is None


async def test_a_sender_that_died_mid_post_is_never_repeated(
    store: BatchStore, settings: Settings
) -> None:
    bid, hooks, now, lost = await claimed(store, settings)
    assert await hooks.claim(now_ms=now + LEASE - 1, lease_ms=LEASE) is None  # still leased
    after = await hooks.claim(now_ms=now + LEASE, lease_ms=LEASE)
    assert after is not None and (after.batch_id, after.action) == (bid, "unknown")
    assert (await store.status(bid)).notify == "unknown"
    assert await hooks.claim(now_ms=now + 2 * LEASE, lease_ms=LEASE) is None
    # If the lost sender was only slow, what it learnt still counts.
    assert await hooks.settle(lost, "delivered")
    assert (await store.status(bid)).notify == "delivered"


async def test_failures_are_retried_then_given_up(store: BatchStore, settings: Settings) -> None:
    bid = await finished_batch(store, settings)
    hooks = Hooks(store.redis, store)
    now = clock.now_ms()
    first = await hooks.claim(now_ms=now, lease_ms=LEASE)
    assert first is not None
    await hooks.settle(first, "retry", due_ms=now + 5000, error="HTTP 502")
    assert (await store.status(bid)).notify == "pending"
    assert await hooks.claim(now_ms=now + 4999, lease_ms=LEASE) is None
    second = await hooks.claim(now_ms=now + 5000, lease_ms=LEASE)
    assert second is not None and second.attempt == 2
    assert not await hooks.settle(first, "delivered")  # a stale claim changes nothing
    await hooks.settle(second, "failed", error="HTTP 502")
    assert (await store.status(bid)).notify == "failed"
    assert await store.redis.hget(store.keys.batch(bid).meta, "hook_error") == b"HTTP 502"  # type: ignore[misc]
    assert await store.redis.zcard(store.keys.hooks) == 0


async def test_each_completion_is_announced(store: BatchStore, settings: Settings) -> None:
    bid = await finished_batch(store, settings)
    hooks = Hooks(store.redis, store)
    first = await hooks.claim(now_ms=clock.now_ms(), lease_ms=LEASE)
    assert first is not None
    await hooks.settle(first, "delivered")
    await store.retry(bid, statuses=[ItemStatus.SUCCEEDED])
    assert (await store.status(bid)).notify == "waiting"
    await asyncio.sleep(0.002)  # a later finish time
    await finish_all(store, settings, bid, {})
    again = await hooks.claim(now_ms=clock.now_ms(), lease_ms=LEASE)
    assert again is not None and (again.action, again.attempt) == ("send", 1)
    assert again.finished_ms != first.finished_ms


async def test_a_post_cut_short_is_settled_unknown_and_never_sent_again(
    store: BatchStore, settings: Settings
) -> None:
    # A stopping worker whose POST outlived its grace: it may have arrived.
    bid, hooks, now, cut = await claimed(store, settings)
    assert await hooks.settle(cut, "unknown", error="the worker stopped mid-POST")
    assert (await store.status(bid)).notify == "unknown"
    meta = store.keys.batch(bid).meta
    assert await store.redis.hget(meta, "hook_error") == b"the worker stopped mid-POST"  # type: ignore[misc]
    assert await store.redis.zcard(store.keys.hooks) == 0
    assert await hooks.claim(now_ms=now + 10 * LEASE, lease_ms=LEASE) is None
