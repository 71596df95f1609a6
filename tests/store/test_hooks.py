"""Completion hooks against a real server and a real HTTP receiver (aiohttp, in-process): one
sender per completion, retries with backoff, and never a second successful delivery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web

from batchq import clock
from batchq.options import SubmitOptions
from batchq.records import ItemStatus
from batchq.settings import Settings
from batchq.store.batches import BatchStore
from batchq.store.hooks import Hooks, deliver_due, hook_session
from tests.conftest import free_port
from tests.helpers import finish_all, items, register_worker

LEASE = 60_000


@dataclass
class Receiver:
    """An HTTP endpoint that answers each POST with the next of ``codes`` (then 200)."""

    codes: list[int] = field(default_factory=list)
    delay: float = 0.0
    got: list[tuple[dict[str, str], Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.json()))
        self.arrived.set()
        await asyncio.sleep(self.delay)
        return web.Response(status=self.codes.pop(0) if self.codes else 200)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    rec.url = f"http://127.0.0.1:{port}/hook"
    yield rec
    await runner.cleanup()


async def finished_batch(
    store: BatchStore, settings: Settings, url: str | None = "http://127.0.0.1:9/h"
) -> str:
    bid, _ = await store.submit(items(3), SubmitOptions(notify=url))
    await register_worker(store, "w", 2)
    await finish_all(store, settings, bid, {})
    return bid


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
    bid = await finished_batch(store, settings)
    hooks = Hooks(store.redis, store)
    now = clock.now_ms()
    lost = await hooks.claim(now_ms=now, lease_ms=LEASE)
    assert lost is not None and lost.action == "send"
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


async def test_deliver_posts_the_final_status_and_retries(
    store: BatchStore, settings: Settings, receiver: Receiver
) -> None:
    receiver.codes = [500, 503]
    bid = await finished_batch(store, settings, receiver.url)
    assert await drain(store, settings.with_overrides(notify_retry_delay=0.01), bid) == 3
    assert len(receiver.got) == 3
    bodies = [body for _, body in receiver.got]
    assert bodies[0] == bodies[2]  # the same status each time
    final = (await store.status(bid)).model_dump(mode="json")
    # The status as it was when sent, without the hook's own state (which was "sending").
    assert "notify" not in bodies[0]
    assert bodies[0] == {k: v for k, v in final.items() if k != "notify"}
    assert final["notify"] == "delivered" and final["state"] == "completed"
    headers = [h for h, _ in receiver.got]
    assert {h["Idempotency-Key"] for h in headers} == {f"{bid}:{final_ms(final)}"}
    assert {h["Content-Type"] for h in headers} == {"application/json"}


async def test_deliver_gives_up_after_the_attempts(
    store: BatchStore, settings: Settings, receiver: Receiver
) -> None:
    receiver.codes = [500] * 10
    bid = await finished_batch(store, settings, receiver.url)
    await drain(store, settings.with_overrides(notify_retry_delay=0.01, notify_attempts=3), bid)
    assert len(receiver.got) == 3
    assert (await store.status(bid)).notify == "failed"


async def test_a_stopping_worker_finishes_its_post_first(
    store: BatchStore, settings: Settings, receiver: Receiver
) -> None:
    receiver.delay = 0.3
    bid = await finished_batch(store, settings, receiver.url)
    async with hook_session() as client:
        task = asyncio.create_task(deliver_due(Hooks(store.redis, store), client, settings))
        await receiver.arrived.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert (await store.status(bid)).notify == "delivered"
    assert len(receiver.got) == 1


def final_ms(status: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(status["finished_at"]).timestamp() * 1000)


async def drain(store: BatchStore, settings: Settings, bid: str) -> int:
    """What a worker's hook loop does, until the batch's hook is settled; claims made."""
    n = 0
    async with hook_session() as client:
        while (await store.status(bid)).notify in ("pending", "sending"):
            n += await deliver_due(Hooks(store.redis, store), client, settings)
            await asyncio.sleep(0.01)
    return n


async def test_a_redirect_is_not_followed(
    store: BatchStore, settings: Settings, receiver: Receiver
) -> None:
    # A redirect would re-send the status to an address the submitter never named.
    elsewhere: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/elsewhere")

    async def other(request: web.Request) -> web.Response:
        elsewhere.append(request.path)
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", redirect)
    app.router.add_post("/elsewhere", other)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        bid = await finished_batch(store, settings, f"http://127.0.0.1:{port}/hook")
        fast = settings.with_overrides(notify_retry_delay=0.01, notify_attempts=2)
        assert await drain(store, fast, bid) == 2
    finally:
        await runner.cleanup()
    assert elsewhere == []
    assert (await store.status(bid)).notify == "failed"
    assert await store.redis.hget(store.keys.batch(bid).meta, "hook_error") == b"HTTP 307"  # type: ignore[misc]
