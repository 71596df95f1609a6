"""A payload planted in Redis by someone else can never run code on a worker."""

from __future__ import annotations

import pickle
from pathlib import Path

from batchq import clock
from batchq.records import BatchState, Endpoint, Item, ItemStatus
from batchq.results.export import iter_results
from batchq.settings import Settings
from batchq.store.batches import BatchStore
from batchq.store.codec import decode_result
from tests.conftest import run_burst
from workers.settings import json_loads


class Planted:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        # Unpickling this creates the marker file: proof that code ran.
        return (open, (str(self.marker), "w"))


def test_non_batchq_payloads_become_rejections() -> None:
    for raw in [
        pickle.dumps({"f": "run_item", "a": ["b_x", 0], "k": {}, "t": 1, "et": 0}),
        b'{"f": "something_else", "a": [], "k": {}, "t": 1, "et": 0}',
        b'{"f": "run_item", "a": ["b_x", "0; rm -rf /"], "k": {}, "t": 1, "et": 0}',
        b"\xff\xfe",
    ]:
        assert json_loads(raw)["f"] == "reject_job"
    good = b'{"f":"run_item","a":["b_0123456789abcdef",3],"k":{},"t":1,"et":5}'
    assert json_loads(good)["a"] == ["b_0123456789abcdef", 3]


async def test_planted_pickle_is_not_run_and_the_item_fails(
    store: BatchStore, settings: Settings, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    bid, _ = await store.submit([Item("0", Endpoint.GENERATE, {"model": "m", "prompt": "x"})])
    # Pretend the dispatcher sent it, but an attacker replaced the job's payload.
    await store.redis.hset(store.keys.batch(bid).meta, "next", "1")  # type: ignore[misc]
    jid = f"{bid}:0"
    await store.redis.set(f"arq:job:{jid}", pickle.dumps(Planted(marker)))
    await store.redis.zadd(store.keys.queue, {jid: clock.now_ms()})
    await run_burst(settings)
    assert not marker.exists()
    s = await store.status(bid)
    assert (s.failed, s.state) == (1, BatchState.COMPLETED)
    (r,) = [r async for r in iter_results(store, bid)]
    assert r.status is ItemStatus.FAILED and r.error and r.error.type == "invalid_job"


async def test_a_stored_item_nested_deeper_than_submit_allows_fails_at_once(
    store: BatchStore, settings: Settings
) -> None:
    # What submit refuses (tests/inputs), planted: 975 levels, as a line that once passed
    # submit and then failed in the worker with a RecursionError, attempt after attempt.
    bid, _ = await store.submit([Item("0", Endpoint.GENERATE, {"model": "m", "prompt": "x"})])
    deep = "[" * 975 + "]" * 975
    planted = '{"c":"0","e":"generate","b":{"model":"m","prompt":"x","format":' + deep + "}}"
    await store.redis.hset(store.keys.batch(bid).items, "0", planted)  # type: ignore[misc]
    await run_burst(settings)
    # Its result as stored: reading the item back, as iter_results does, is beyond this stack.
    raw = await store.redis.hget(store.keys.batch(bid).results, "0")  # type: ignore[misc]
    r = decode_result(0, None, raw)
    assert r.status is ItemStatus.FAILED and r.error and r.error.type == "invalid_item"
    assert r.error.message == "stored item is unreadable: nested deeper than 64 levels"
    assert (r.attempts, (await store.status(bid)).retried) == (1, 0)
