"""Sending completion hooks to a real HTTP receiver (aiohttp, in-process), against a real
server: the final status is posted, failures are retried then given up, a stopping worker
finishes its POST first, and a redirect is never followed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web

from batchq.settings import Settings
from batchq.store.batches import BatchStore
from batchq.store.hooks import Hooks
from tests.conftest import free_port
from tests.helpers import finished_batch
from workers.hook_http import hook_session
from workers.notify import deliver_due


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
    async with hook_session(settings) as client:
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
    async with hook_session(settings) as client:
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
    error = await store.redis.hget(store.keys.batch(bid).meta, "hook_error")  # type: ignore[misc]
    assert error == b"HTTP 307 (redirects are not followed)"
