"""A payload planted in Redis by someone else can never run code on a worker."""

from __future__ import annotations

import asyncio
import json
import pickle
from pathlib import Path

import pytest

from batchq import clock
from batchq.records import BatchState, Endpoint, Item, ItemStatus
from batchq.results.export import iter_results
from batchq.settings import Settings
from batchq.store.batches import BatchStore
from batchq.store.codec import decode_result
from tests.conftest import run_burst
from tests.procs import batchq, env_for
from workers.settings import json_loads


class Planted:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        # Unpickling this creates the marker file: proof that code ran.
        return (open, (str(self.marker), "w"))


GOOD = b'{"f":"run_item","a":["b_0123456789abcdef",3],"k":{},"t":1,"et":5}'
NOT_A_JOB = "is not a batchq job (f, a, k, t and et)"
# Payloads a worker cannot run, each with the reason its item's error gives.
CORRUPT = {
    "pickle": (
        pickle.dumps({"f": "run_item", "a": ["b_x", 0], "k": {}, "t": 1, "et": 0}),
        "is not JSON",
    ),
    "other function": (b'{"f": "something_else", "a": [], "k": {}, "t": 1, "et": 0}', NOT_A_JOB),
    "bad index": (
        b'{"f": "run_item", "a": ["b_x", "0; rm -rf /"], "k": {}, "t": 1, "et": 0}',
        NOT_A_JOB,
    ),
    "bool index": (GOOD.replace(b",3]", b",true]"), NOT_A_JOB),
    "negative index": (GOOD.replace(b",3]", b",-3]"), NOT_A_JOB),
    "not utf-8": (b"\xff\xfe", "is not JSON"),
    "not an object": (b"[1, 2]", NOT_A_JOB),
    # arq reads t and et itself: without them it dropped the job, and the item had no result.
    "no t": (GOOD.replace(b'"t":1,', b""), NOT_A_JOB),
    "no et": (GOOD.replace(b',"et":5', b""), NOT_A_JOB),
    "et not a number": (GOOD.replace(b'"et":5', b'"et":"5"'), NOT_A_JOB),
    # Too deep for json.loads: it raised RecursionError, which dropped the job the same way.
    "nested 1000 deep": (GOOD[:-1] + b',"x":' + b"[" * 1000 + b"]" * 1000 + b"}", "nests deeper"),
    "nested 100000 deep": (b"[" * 100_000, "nests deeper than 64 levels"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_non_batchq_payloads_become_rejections_with_the_reason(case: str) -> None:
    raw, reason = CORRUPT[case]
    d = json_loads(raw)
    assert (d["f"], d["k"], d["t"], d["et"]) == ("reject_job", {}, None, 0)
    [said] = d["a"]
    assert said.startswith(reason)


def test_a_batchq_payload_decodes_as_it_is() -> None:
    assert json_loads(GOOD) == json.loads(GOOD)
    assert json_loads(GOOD.replace(b'"t":1', b'"t":null'))["a"] == ["b_0123456789abcdef", 3]


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


async def plant(store: BatchStore, bid: str, payloads: list[bytes]) -> list[str]:
    """``payloads`` as the jobs of the batch's first items, as if the dispatcher had sent them
    and someone then replaced what it wrote."""
    await store.redis.hset(store.keys.batch(bid).meta, "next", str(len(payloads)))  # type: ignore[misc]
    jids = [f"{bid}:{i}" for i in range(len(payloads))]
    for jid, payload in zip(jids, payloads, strict=True):
        await store.redis.set(f"arq:job:{jid}", payload)
        await store.redis.zadd(store.keys.queue, {jid: clock.now_ms()})
    return jids


async def test_undecodable_jobs_fail_their_items_at_once(
    store: BatchStore, settings: Settings
) -> None:
    cases = ["nested 1000 deep", "no et", "no t", "not utf-8"]
    bid, _ = await store.submit(
        [Item(str(i), Endpoint.GENERATE, {"model": "m", "prompt": "x"}) for i in cases]
    )
    await plant(store, bid, [CORRUPT[case][0] for case in cases])
    # And a job whose id names no item: nothing to record it on, so it is dropped.
    await store.redis.set("arq:job:nonsense", b"[[[")
    await store.redis.zadd(store.keys.queue, {"nonsense": clock.now_ms()})
    # The worker's idle repair (300 s) would requeue a dropped item; the burst ends before.
    await run_burst(settings)
    s = await store.status(bid)
    assert (s.failed, s.state, s.retried) == (len(cases), BatchState.COMPLETED, 0)
    results = [r async for r in iter_results(store, bid)]
    for case, r in zip(cases, results, strict=True):
        assert r.status is ItemStatus.FAILED and r.error and r.error.type == "invalid_job"
        assert r.error.message.startswith("job payload " + CORRUPT[case][1]), case
        assert r.error.message.endswith("; not run") and r.attempts == 1
    assert not await store.redis.exists("arq:job:nonsense")
    assert await store.redis.zcard(store.keys.queue) == 0


async def test_a_worker_process_fails_undecodable_jobs_at_once(
    store: BatchStore, settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    cases = ["nested 100000 deep", "et not a number"]
    bid, _ = await store.submit(
        [Item(str(i), Endpoint.GENERATE, {"model": "m", "prompt": "x"}) for i in cases]
    )
    await plant(store, bid, [CORRUPT[case][0] for case in cases])
    env = env_for(redis_url, settings.prefix, tmp_path / "home", settings.ollama_host)
    proc = await asyncio.to_thread(batchq, env, "worker", "--burst", check=False)
    assert proc.returncode == 0, proc.stderr
    for case in cases:  # the log says why, per job
        assert f"payload {CORRUPT[case][1]}" in proc.stderr
    errors = [r.error async for r in iter_results(store, bid)]
    assert [e.type if e else None for e in errors] == ["invalid_job", "invalid_job"]
    assert (await store.status(bid)).state is BatchState.COMPLETED
