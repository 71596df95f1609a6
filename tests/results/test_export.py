from __future__ import annotations

import asyncio
import io
import json
from array import array

import pytest

from batchq.records import BatchState, BatchStatus, Endpoint, Item, ItemError, ItemStatus
from batchq.results.export import iter_results, wait_finished, write_results
from batchq.store.batches import BatchStore
from batchq.store.codec import COMPRESS_OVER, decode_result, encode_result
from batchq.vectors import pack


def items(n: int) -> list[Item]:
    return [
        Item(
            f"id-{i}", Endpoint.CHAT, {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        )
        for i in range(n)
    ]


async def test_results_come_in_input_order_as_they_finish(store: BatchStore) -> None:
    bid, _ = await store.submit(items(2500), chunk=700)
    bk = store.keys.batch(bid)
    # Finish every third item, in reverse order; the collector still yields by index.
    for i in reversed(range(0, 2500, 3)):
        status = ItemStatus.FAILED if i % 2 else ItemStatus.SUCCEEDED
        payload = encode_result(
            status,
            response=None if i % 2 else f"r{i}",
            error=ItemError(type="server_busy", message="busy", status_code=503) if i % 2 else None,
            attempts=2,
            metrics={"eval_count": i},
        )
        await store.redis.hset(bk.results, mapping={str(i): payload})  # type: ignore[misc]
    got = [r async for r in iter_results(store, bid, chunk=1000)]
    assert [r.index for r in got] == list(range(0, 2500, 3))
    for r in got:
        assert r.custom_id == f"id-{r.index}" and r.model == "m" and r.attempts == 2
        assert r.metrics == {"eval_count": r.index}
        if r.index % 2:
            assert r.status is ItemStatus.FAILED and r.error and r.error.status_code == 503
        else:
            assert r.status is ItemStatus.SUCCEEDED and r.response == f"r{r.index}"


async def test_cancelled_items_appear_without_stored_results(store: BatchStore) -> None:
    bid, _ = await store.submit(items(10))
    await store.cancel(bid)
    got = [r async for r in iter_results(store, bid)]
    assert [(r.index, r.status, r.custom_id) for r in got] == [
        (i, ItemStatus.CANCELLED, f"id-{i}") for i in range(10)
    ]
    assert await store.redis.hlen(store.keys.batch(bid).results) == 0  # type: ignore[misc]


async def test_embeddings_are_stored_packed_and_written_as_float32_digits(
    store: BatchStore,
) -> None:
    vectors = [[0.1, -0.5, 3e-8], [1.0, 0.0, -1.0]]
    embed = Item("e", Endpoint.EMBED, {"model": "nomic-embed-text", "input": ["a", "b"]})
    bid, _ = await store.submit([embed, *items(1)])
    packed = [pack(v) for v in vectors]
    metrics = {"prompt_eval_count": 2, "total_duration": 7}
    payload = encode_result(
        ItemStatus.SUCCEEDED, response="", attempts=1, metrics=metrics, embeddings=packed
    )
    assert json.loads(payload) == {"s": "succeeded", "a": 1, "v": packed, "m": metrics}
    bk = store.keys.batch(bid)
    await store.redis.hset(bk.results, mapping={"0": payload})  # type: ignore[misc]
    await store.redis.hset(
        bk.results, mapping={"1": encode_result(ItemStatus.SUCCEEDED, response="t")}
    )  # type: ignore[misc]

    result, plain = [r async for r in iter_results(store, bid)]
    as_float32 = [array("f", v).tolist() for v in vectors]
    assert result.embeddings == as_float32 and result.response is None
    assert plain.embeddings is None

    out = io.StringIO()
    assert await write_results(store, bid, out) == 2
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert [array("f", v).tolist() for v in first.pop("embeddings")] == as_float32
    assert first == result.model_dump(mode="json", exclude={"embeddings"})
    assert "embeddings" not in second and second["response"] == "t"
    assert '"embeddings":[[0.100000001,-0.5,2.99999989e-08],[1,0,-1]]}' in out.getvalue()


async def test_wait_finished_calls_back_once_with_the_final_status(store: BatchStore) -> None:
    bid, _ = await store.submit(items(2))
    seen: list[tuple[str, BatchStatus]] = []

    async def later(s: BatchStatus) -> None:
        seen.append(("async", s))

    waiters = [
        asyncio.create_task(wait_finished(store, bid, interval=0.01, on_done=later)),
        asyncio.create_task(
            wait_finished(store, bid, interval=0.01, on_done=lambda s: seen.append(("sync", s)))
        ),
    ]
    await asyncio.sleep(0.05)
    assert seen == []  # not final yet
    with pytest.raises(TimeoutError):
        await wait_finished(store, bid, interval=0.01, max_wait=0.02, on_done=later)
    await store.cancel(bid)
    done = await asyncio.gather(*waiters)
    assert sorted(kind for kind, _ in seen) == ["async", "sync"]
    assert all(s.state is BatchState.CANCELLED and s.finished_at for _, s in seen)
    assert [s for _, s in seen] == done


# Model output as it comes: prose with line breaks, markup and non-ASCII text.
ANSWER = "\n".join(
    f"{i}. **Step {i}:** the café's oven (≈{180 + i} °C) needs {i % 7 + 2} minutes; "
    "check the crust, then rotate the tray and note the colour."
    for i in range(40)
)


def test_a_long_response_is_stored_deflated_and_read_back_whole() -> None:
    metrics = {"eval_count": 812, "total_duration": 9_876_543_210}
    payload = encode_result(ItemStatus.SUCCEEDED, response=ANSWER, attempts=2, metrics=metrics)
    plain = json.dumps({"s": "succeeded", "a": 2, "r": ANSWER, "m": metrics}, ensure_ascii=False)
    assert isinstance(payload, bytes) and payload.startswith(b'{"s":"succeeded","a":2}\n')
    assert len(payload) < 0.5 * len(plain.encode())
    item = items(1)[0]
    got = decode_result(0, item, payload)
    assert (got.response, got.attempts, got.metrics) == (ANSWER, 2, metrics)
    assert got == decode_result(0, item, plain.encode())


def test_short_embedding_and_failed_results_stay_plain_json() -> None:
    short = encode_result(ItemStatus.SUCCEEDED, response="x" * COMPRESS_OVER)
    vectors = [pack([0.5] * 768)]  # base64 of float32: deflate would gain little
    for payload in (
        short,
        encode_result(ItemStatus.SUCCEEDED, embeddings=vectors),
        encode_result(ItemStatus.FAILED, error=ItemError(type="x", message="y" * 2000)),
    ):
        assert isinstance(payload, str)
        json.loads(payload)
