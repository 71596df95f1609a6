"""OpenAI's batch webhooks from ``batchq serve``: ``batch.completed``, ``batch.cancelled``,
``batch.expired`` and ``batch.failed`` events POSTed by real worker processes to a real
receiver (:mod:`tests.receivers`), verified and parsed by the official client's
``client.webhooks.unwrap()``."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI
from openai.types.webhooks import (
    BatchCancelledWebhookEvent,
    BatchCompletedWebhookEvent,
    BatchExpiredWebhookEvent,
    BatchFailedWebhookEvent,
)

from batchq.api import openai_objects as api_objects
from batchq.api import webhooks
from batchq.errors import InputError
from batchq.store.batches import BatchStore
from batchq.store.codec import text
from batchq.store.connection import connect
from batchq.store.deadlines import expire_due
from batchq.store.keys import Keys
from tests.api.live import KEY, Served, chat_lines, finished, serving
from tests.procs import Workers, batchq, env_for
from tests.receivers import RawReceiver, Request, plain, raw_receiver
from tests.waits import wait_until

pytestmark = pytest.mark.e2e

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class Receiver:
    """:func:`tests.receivers.raw_receiver` answering 200, on its own thread and loop."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stop = asyncio.Event()
        self._ready = threading.Event()
        self.rec: RawReceiver | None = None

    async def _run(self) -> None:
        async with raw_receiver(plain(200)) as rec:
            self.rec = rec
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Receiver:
        self._thread.start()
        self._task = asyncio.run_coroutine_threadsafe(self._run(), self._loop)
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._task.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def url(self) -> str:
        assert self.rec is not None
        return self.rec.url

    def requests(self) -> list[Request]:
        assert self.rec is not None
        return list(self.rec.requests)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as rec:
        yield rec


@pytest.fixture(scope="module")
def hooked(
    valkey_url: str, sim_url: str, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("home")
    env = env_for(
        valkey_url,
        "w" + secrets.token_hex(4),
        home,
        sim_url,
        BATCHQ_API_KEYS=KEY,
        BATCHQ_OPENAI_WEBHOOK_URL=receiver.url,
        BATCHQ_WEBHOOK_SECRET=SECRET,
        BATCHQ_OPENAI_WEBHOOK_EVERY="0.1",
        BATCHQ_NOTIFY_RETRY_DELAY="0.2",
    )
    with serving(env, home) as served:
        yield served


@pytest.fixture
def hclient(hooked: Served) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{hooked.url}/v1", api_key=KEY, max_retries=0, timeout=60) as c:
        yield c


def _events_of(receiver: Receiver, client: OpenAI, batch_id: str) -> list[Any]:
    found = []
    for req in receiver.requests():
        event = client.webhooks.unwrap(req.body.decode(), req.headers, secret=SECRET)
        if event.data.id == batch_id:  # type: ignore[union-attr]
            found.append(event)
    return found


def _event(receiver: Receiver, client: OpenAI, batch_id: str) -> Any:
    [event] = wait_until(
        lambda: _events_of(receiver, client, batch_id), what=f"the event of {batch_id}"
    )
    return event


def _create(client: OpenAI, data: bytes, window: str = "24h") -> str:
    upload = client.files.create(file=("hooked.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window=window,  # type: ignore[arg-type]  # batchq takes any duration
    )
    return batch.id


def test_a_completed_batch_is_announced_once_its_files_are_listed(
    hclient: OpenAI, hooked: Served, receiver: Receiver, tmp_path: Path
) -> None:
    batch_id = _create(hclient, chat_lines(6, "hook"))
    with Workers(hooked.env, tmp_path) as workers:
        workers.start("--concurrency", "4")
        event = _event(receiver, hclient, batch_id)
        # Announced when a client can read the results: completed, with its output file.
        batch = hclient.batches.retrieve(batch_id)
    assert isinstance(event, BatchCompletedWebhookEvent)
    assert event.type == "batch.completed" and event.object == "event"
    assert event.id.startswith("evt_") and event.created_at > 0
    assert batch.status == "completed" and batch.output_file_id
    [req] = [r for r in receiver.requests() if json.loads(r.body)["id"] == event.id]
    assert req.headers["webhook-id"] and req.headers["webhook-signature"].startswith("v1,")
    # Exactly one delivery, and the batchq batch says it was delivered.
    assert len(_events_of(receiver, hclient, batch_id)) == 1
    native = (batch.model_extra or {})["batchq_batch_id"]
    assert _native_meta(hooked, native)["hook_state"] == "delivered"
    # Run again with batchq, it is announced again once a read has written its new files.
    batchq(hooked.env, "retry", native, "--ids", "hook-0")
    with Workers(hooked.env, tmp_path) as workers:
        workers.start()
        finished(hclient, batch_id, "completed")
        events = wait_until(
            lambda: (e := _events_of(receiver, hclient, batch_id))[1:] and e,
            what="the second announcement",
        )
    assert [e.type for e in events] == ["batch.completed"] * 2
    assert events[0].id != events[1].id


def test_cancelled_failed_and_expired_batches_are_announced(
    hclient: OpenAI, hooked: Served, receiver: Receiver, tmp_path: Path
) -> None:
    cancelled = _create(hclient, chat_lines(3, "c"))
    hclient.batches.cancel(cancelled)
    failed = _create(hclient, chat_lines(1) + b'{"custom_id": "x"}\n')
    assert hclient.batches.retrieve(failed).status == "failed"
    expired = _create(hclient, chat_lines(2, "e"), window="1s")
    native = (hclient.batches.retrieve(expired).model_extra or {})["batchq_batch_id"]
    wait_until(lambda: native in _expire(hooked), what="the deadline acted on")
    finished(hclient, expired, "expired")
    # The workers only send the hooks: nothing of these batches is left to run.
    with Workers(hooked.env, tmp_path) as workers:
        workers.start()
        assert isinstance(_event(receiver, hclient, cancelled), BatchCancelledWebhookEvent)
        assert isinstance(_event(receiver, hclient, failed), BatchFailedWebhookEvent)
        assert isinstance(_event(receiver, hclient, expired), BatchExpiredWebhookEvent)
    assert hclient.batches.retrieve(cancelled).status == "cancelled"


def test_a_wrong_secret_or_a_changed_body_does_not_verify(
    hclient: OpenAI, hooked: Served, receiver: Receiver, tmp_path: Path
) -> None:
    failed = _create(hclient, b'{"custom_id": "x"}\n')
    with Workers(hooked.env, tmp_path) as workers:
        workers.start()
        _event(receiver, hclient, failed)
    [req] = [r for r in receiver.requests() if failed.encode() in r.body]
    other = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    with pytest.raises(openai.InvalidWebhookSignatureError):
        hclient.webhooks.unwrap(req.body.decode(), req.headers, secret=other)
    tampered = req.body.replace(b"batch.failed", b"batch.completed")
    with pytest.raises(openai.InvalidWebhookSignatureError):
        hclient.webhooks.unwrap(tampered.decode(), req.headers, secret=SECRET)


def _expire(served: Served) -> list[str]:
    async def run() -> list[str]:
        redis = connect(served.env["BATCHQ_REDIS_URL"])
        try:
            # What a worker's housekeeping does on its heartbeat; no worker runs here, so
            # none of the items starts first.
            return await expire_due(BatchStore(redis, Keys(served.env["BATCHQ_PREFIX"])))
        finally:
            await redis.aclose()

    return asyncio.run(run())


def _native_meta(served: Served, native: str) -> dict[str, str]:
    async def read() -> dict[str, str]:
        redis = connect(served.env["BATCHQ_REDIS_URL"])
        try:
            return await BatchStore(redis, Keys(served.env["BATCHQ_PREFIX"])).meta(native)
        finally:
            await redis.aclose()

    return asyncio.run(read())


def test_the_webhook_url_is_checked_as_notify_urls_are() -> None:
    with pytest.raises(InputError) as e:
        webhooks.check_url("ftp://example.com/hook", allow_private=True)
    assert e.value.field == "BATCHQ_OPENAI_WEBHOOK_URL"
    with pytest.raises(InputError, match="refused"):
        webhooks.check_url("http://127.0.0.1/hook", allow_private=False)
    assert webhooks.check_url("https://example.com/hook", allow_private=False)


async def test_every_open_batch_is_looked_at_in_turn(
    store: BatchStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks, "MAX_WATCHED", 2)
    ids = [f"batch_{i:024x}" for i in range(3)]
    await store.redis.zadd(store.keys.oai_open, {i: n for n, i in enumerate(ids)})
    seen: list[str] = []

    async def refresh(batch_id: str) -> None:
        seen.append(batch_id)
        if batch_id == ids[1]:
            raise api_objects.ApiError(404, "gone")

    await webhooks._round(store.redis, store.keys, refresh)
    await webhooks._round(store.redis, store.keys, refresh)
    # More open than one round takes, yet the third comes in the second round; the one
    # gone is forgotten.
    assert seen[:2] == ids[:2] and seen[2] == ids[2]
    left = {text(x) for x in await store.redis.zrange(store.keys.oai_open, 0, -1)}
    assert left == {ids[0], ids[2]}
