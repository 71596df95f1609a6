"""Sending completion hooks to a real HTTP receiver (aiohttp, in-process), against a real
server: the final status is posted, failures are retried then given up, a stopping worker
finishes its POST first, and a redirect is never followed."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from batchq import clock
from batchq.settings import Settings
from batchq.store.batches import BatchStore
from batchq.store.hooks import HookClaim, Hooks
from tests.conftest import free_port
from tests.helpers import finished_batch
from tests.receivers import raw_receiver, trickled_head
from workers.hook_http import hook_session
from workers.notify import deliver_due


@dataclass
class Receiver:
    """An HTTP endpoint that answers each POST with the next of ``codes`` (then 200)."""

    codes: list[int] = field(default_factory=list)
    delay: float = 0.0
    got: list[tuple[dict[str, str], Any]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)  # the bodies as they came
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.raw.append(raw)
        self.got.append((dict(request.headers), json.loads(raw)))
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


SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


async def test_hooks_are_signed_the_standard_webhooks_way(
    store: BatchStore, settings: Settings, receiver: Receiver
) -> None:
    receiver.codes = [500]
    bid = await finished_batch(store, settings, receiver.url)
    signed = settings.with_overrides(webhook_secret=SECRET, notify_retry_delay=0.01)
    assert await drain(store, signed, bid) == 2
    ids = set()
    for (headers, body), raw in zip(receiver.got, receiver.raw, strict=True):
        # The reference verifier, given the exact bytes received: both attempts verify, under
        # the secret as written and as its bare base64 (the form receivers may keep).
        assert Webhook(SECRET).verify(raw, headers) == body
        assert Webhook(SECRET.removeprefix("whsec_")).verify(raw, headers) == body
        with pytest.raises(WebhookVerificationError):
            Webhook(base64.b64encode(b"j" * 32).decode()).verify(raw, headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET).verify(raw.replace(b"completed", b"cancelled"), headers)
        assert headers["Content-Type"] == "application/json"
        assert headers["webhook-id"] == headers["Idempotency-Key"]
        ids.add(headers["webhook-id"])
    assert len(ids) == 1  # stable across the retry: receivers can drop repeats


async def test_without_a_secret_hooks_go_unsigned(
    store: BatchStore, settings: Settings, receiver: Receiver
) -> None:
    bid = await finished_batch(store, settings, receiver.url)
    await drain(store, settings.with_overrides(webhook_secret=None), bid)
    headers, _ = receiver.got[0]
    assert "webhook-signature" not in headers
    assert headers["webhook-id"] == headers["Idempotency-Key"]
    assert abs(int(headers["webhook-timestamp"]) - clock.now_ms() / 1000) < 600


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data/iam", "http://[::ffff:a9fe:a9fe]/"]
)
async def test_a_link_local_target_fails_the_hook_with_the_reason(
    store: BatchStore, settings: Settings, url: str
) -> None:
    # Stored by hand: submit refuses such a URL, but Redis may hold one from elsewhere.
    bid = await finished_batch(store, settings, "http://127.0.0.1:9/h")
    await store.redis.hset(store.keys.batch(bid).meta, "notify", url)  # type: ignore[misc]
    assert await drain(store, settings.with_overrides(notify_allow_private=True), bid) == 1
    assert (await store.status(bid)).notify == "failed"
    error = await store.redis.hget(store.keys.batch(bid).meta, "hook_error")  # type: ignore[misc]
    assert error.startswith(b"refused: ") and b"link-local" in error, error


async def test_private_targets_are_refused_when_the_setting_says_so(
    store: BatchStore, settings: Settings, receiver: Receiver
) -> None:
    bid = await finished_batch(store, settings, receiver.url)
    deny = settings.with_overrides(notify_allow_private=False, notify_retry_delay=0.01)
    assert await drain(store, deny, bid) == 1  # no retry: the address will not change its kind
    assert receiver.got == []
    error = await store.redis.hget(store.keys.batch(bid).meta, "hook_error")  # type: ignore[misc]
    assert b"private or loopback" in error and b"BATCHQ_NOTIFY_ALLOW_PRIVATE" in error, error


async def test_no_credential_or_token_reaches_a_log_line(
    store: BatchStore, settings: Settings, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.codes = [500, 500]
    secret = "tok3n-s3cret"
    host = receiver.url.removeprefix("http://").split("/")[0]
    url = f"http://user:{secret}@{host}/hook?token={secret}&sig={secret}#{secret}"
    bid = await finished_batch(store, settings, url)
    caplog.set_level(logging.DEBUG)
    await drain(store, settings.with_overrides(notify_retry_delay=0.01, notify_attempts=2), bid)
    assert len(receiver.got) == 2
    # Every logger but the receiver's own access log (it is the test's, not the worker's).
    lines = [r.getMessage() for r in caplog.records if r.name != "aiohttp.access"]
    assert not [line for line in lines if secret in line], lines
    shown = f"http://user:***@{host}/hook?token=***&sig=***#***"
    assert [line for line in lines if shown in line and "failed after 2 attempts" in line]
    error = await store.redis.hget(store.keys.batch(bid).meta, "hook_error")  # type: ignore[misc]
    assert secret.encode() not in error


async def test_a_stop_cuts_a_post_at_the_end_of_its_grace_and_records_it(
    store: BatchStore, settings: Settings
) -> None:
    # The receiver trickles its reply for a minute; the POST's own deadline is longer still.
    async with raw_receiver(trickled_head(0.2, 300)) as rec:
        bid = await finished_batch(store, settings, rec.url)
        patient = settings.with_overrides(notify_timeout=120.0, shutdown_grace=1)
        began: list[float] = []
        async with hook_session(patient) as client:
            hooks = Hooks(store.redis, store)
            task = asyncio.create_task(
                deliver_due(hooks, client, patient, stop_began=lambda: began[0] if began else None)
            )
            await asyncio.wait_for(rec.arrived.wait(), 60)
            began.append(clock.monotonic())
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        # Cut at the grace, not at the deadline nor when the receiver was done.
        assert not rec.done.is_set() or rec.sender_left
        assert rec.sent < 300
    # Its request had gone out, so it may have arrived: never sent again.
    assert (await store.status(bid)).notify == "unknown"
    error = await store.redis.hget(store.keys.batch(bid).meta, "hook_error")  # type: ignore[misc]
    assert error == b"the worker stopped mid-POST"
    assert await store.redis.zcard(store.keys.hooks) == 0


class Stuck(AbstractResolver):
    """A DNS lookup that never answers (until cancelled)."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()

    async def resolve(self, host: str, port: int = 0, family: object = None) -> list[Any]:
        self.asked.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def close(self) -> None:
        pass


async def test_a_post_cut_before_anything_was_sent_goes_back_to_be_sent(
    store: BatchStore, settings: Settings
) -> None:
    bid = await finished_batch(store, settings, "http://hooks.example.test/h")
    quick = settings.with_overrides(shutdown_grace=0)
    dns = Stuck()
    async with hook_session(quick, resolver=dns) as client:
        task = asyncio.create_task(deliver_due(Hooks(store.redis, store), client, quick))
        await asyncio.wait_for(dns.asked.wait(), 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # Nothing reached anyone: due again at once, for any worker, with its attempt counted.
    assert (await store.status(bid)).notify == "pending"
    meta = store.keys.batch(bid).meta
    assert await store.redis.hget(meta, "hook_error") == b"the worker stopped"  # type: ignore[misc]
    assert await store.redis.zscore(store.keys.hooks, bid) is not None


async def test_a_stopping_worker_claims_no_more_hooks(
    store: BatchStore, settings: Settings, receiver: Receiver
) -> None:
    bid = await finished_batch(store, settings, receiver.url)
    async with hook_session(settings) as client:
        hooks = Hooks(store.redis, store)
        assert await deliver_due(hooks, client, settings, stop_began=clock.monotonic) == 0
    assert (await store.status(bid)).notify == "pending" and receiver.got == []


async def test_errors_that_quote_the_url_are_recorded_redacted(
    store: BatchStore, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # aiohttp's own message for a bad URL is the URL, secrets and all.
    bid = await finished_batch(store, settings)
    url = "http://u:s3cr3t@127.0.0.1:99999/h?t=s3cr3t"
    await store.redis.hset(store.keys.batch(bid).meta, "notify", url)  # type: ignore[misc]
    caplog.set_level(logging.DEBUG)
    await drain(store, settings.with_overrides(notify_attempts=1), bid)
    error = await store.redis.hget(store.keys.batch(bid).meta, "hook_error")  # type: ignore[misc]
    # (Today's aiohttp: "InvalidUrlClientError: " and the URL, redacted.)
    assert error.startswith(b"Invalid") and b"s3cr3t" not in error, error
    assert not [r for r in caplog.records if "s3cr3t" in r.getMessage()]


class SlowReplies(Hooks):
    """Hooks whose claim reply is held back after Redis made the claim."""

    def __init__(self, store: BatchStore) -> None:
        super().__init__(store.redis, store)
        self.claimed = asyncio.Event()
        self.reply = asyncio.Event()

    async def claim(self, *, now_ms: int, lease_ms: int) -> HookClaim | None:
        made = await super().claim(now_ms=now_ms, lease_ms=lease_ms)
        self.claimed.set()
        await self.reply.wait()
        return made


async def test_a_claim_a_stop_interrupts_is_given_back_unsent(
    store: BatchStore, settings: Settings, receiver: Receiver
) -> None:
    bid = await finished_batch(store, settings, receiver.url)
    hooks = SlowReplies(store)
    async with hook_session(settings) as client:
        task = asyncio.create_task(deliver_due(hooks, client, settings))
        await asyncio.wait_for(hooks.claimed.wait(), 60)
        assert (await store.status(bid)).notify == "sending"
        task.cancel()
        hooks.reply.set()  # the reply comes after the stop
        with pytest.raises(asyncio.CancelledError):
            await task
    # Not left "sending" (which a later claimer would settle as unknown, never sent).
    assert (await store.status(bid)).notify == "pending" and receiver.got == []
    assert await drain(store, settings, bid) == 1
    assert len(receiver.got) == 1
