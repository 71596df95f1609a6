"""Message batches over batchq batches, in process: nothing is left of a refused create, and
the body's bound holds however the body comes."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from batchq.api.anthropic_objects import AnthropicError
from batchq.api.app import mount
from batchq.api.message_batches import AnthropicBatches
from batchq.settings import Settings
from batchq.store.batches import BatchStore


def _body(n: int, bad_at: int | None = None) -> bytes:
    requests: list[Any] = [
        {
            "custom_id": f"r-{i}",
            "params": {
                "model": "m",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": f"q {i}"}],
            },
        }
        for i in range(n)
    ]
    if bad_at is not None:
        requests[bad_at]["params"]["top_k"] = "many"
    return json.dumps({"requests": requests}).encode()


async def _leftovers(store: BatchStore) -> list[bytes]:
    return [k async for k in store.redis.scan_iter(match=f"{store.keys.prefix}:*")]


async def test_a_bad_request_after_staged_chunks_leaves_nothing(
    store: BatchStore, settings: Settings
) -> None:
    batches = AnthropicBatches(store, settings.model_copy(update={"submit_chunk": 10}))
    body = io.BytesIO(_body(45, bad_at=37))
    with pytest.raises(AnthropicError) as err:
        await batches.create(body.read)
    assert err.value.status == 400
    assert "requests[37] (custom_id 'r-37'): params.top_k" in err.value.message
    assert await _leftovers(store) == []
    rec = await batches.create(io.BytesIO(_body(45)).read)
    assert (await store.meta(rec["batch"]))["total"] == "45"


@pytest.fixture
async def api(store: BatchStore, settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    small = settings.model_copy(update={"max_message_batch_bytes": 1000})
    root = web.Application()
    mount(root, store, small, keys=[])
    async with TestClient(TestServer(root)) as client:
        yield client


async def test_a_body_over_the_bound_is_413_however_it_comes(
    api: TestClient[Any, Any], store: BatchStore
) -> None:
    body = _body(20)
    assert len(body) > 1000

    async def pieces() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        for i in range(0, len(body), 100):
            yield body[i : i + 100]

    for data in (body, pieces()):
        reply = await api.post("/v1/messages/batches", data=data)
        assert reply.status == 413
        error = (await reply.json())["error"]
        assert error["type"] == "request_too_large"
    assert await _leftovers(store) == []
    reply = await api.post("/v1/messages/batches", data=_body(3))
    assert reply.status == 200 and (await reply.json())["request_counts"]["processing"] == 3
