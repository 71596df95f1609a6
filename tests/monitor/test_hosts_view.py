"""The per-host view against a real server: what the workers' heartbeats say of each Ollama host,
with the model loads all its workers share (pick.lua)."""

from __future__ import annotations

from batchq import clock
from batchq.monitor.hosts_view import HostRow, host_rows, no_auto_limits
from batchq.store.admission import endpoint_id
from batchq.store.autolimit import AutoLimit
from batchq.store.batches import BatchStore
from batchq.store.models import Serving
from batchq.store.presence import EndpointFacts
from tests.helpers import items, publish_worker, worker_info

A = "http://gpu1:11434"
B = "http://user:s3cret@gpu2:11434/?token=abc"


async def pick(store: BatchStore, url: str, loaded: tuple[str, ...] = ()) -> str:
    p = await Serving(store.redis, store.keys).pick(
        endpoint_id(url),
        now_ms=clock.now_ms(),
        switch_after_ms=60_000,
        hold_ms=15_000,
        loaded=loaded,
    )
    return p.model


async def test_rows_merge_the_workers_of_each_host(store: BatchStore) -> None:
    await store.submit(items(4, model="llama3.2"))
    assert await pick(store, A) == "llama3.2"  # not loaded there: a load
    assert await pick(store, B, loaded=("llama3.2",)) == "llama3.2"  # loaded: none
    now = clock.now_ms()
    old = EndpointFacts(["llama3.2"], [], 1)
    new = EndpointFacts(["llama3.2"], ["llama3.2"], 2)
    await publish_worker(
        store, worker_info("w1:1:a", endpoints=[A, B], hosts={A: old, B: new}, seen_at=now - 900)
    )
    await publish_worker(store, worker_info("w2:2:b", endpoints=[A], hosts={A: new}, seen_at=now))
    limits = {endpoint_id(A): {"llama3.2": 3}}

    async def auto(eid: str) -> dict[str, int]:
        return limits.get(eid, {})

    rows = await host_rows(store.redis, store.keys, auto_limits=auto)
    assert rows == [
        HostRow(
            endpoint=A,
            endpoint_id=endpoint_id(A),
            serving=["llama3.2"],
            loaded=["llama3.2"],  # the latest heartbeat's /api/ps
            loads=1,
            auto_limits={"llama3.2": 3},
            workers=2,
            in_flight=3,
        ),
        HostRow(
            endpoint="http://user:***@gpu2:11434/?token=***",
            endpoint_id=endpoint_id(B),
            serving=["llama3.2"],
            loaded=["llama3.2"],
            loads=0,
            auto_limits={},
            workers=1,
            in_flight=2,
        ),
    ]
    assert rows[1].to_json()["loads"] == 0 and "s3cret" not in str(rows[1].to_json())


async def test_a_host_without_word_from_its_workers(store: BatchStore) -> None:
    # A worker of a version that does not publish its hosts, and a host no worker picked a
    # model for yet: what the shared hash says, else nothing.
    await store.submit(items(2, model="qwen3:8b"))
    await pick(store, A)
    await publish_worker(store, worker_info("w1:1:a", endpoints=[A, "http://idle:11434"]))
    rows = await host_rows(store.redis, store.keys)
    assert [
        (r.endpoint, r.serving, r.loaded, r.loads, r.auto_limits, r.in_flight) for r in rows
    ] == [
        (A, ["qwen3:8b"], [], 1, {}, 0),
        ("http://idle:11434", [], [], None, {}, 0),
    ]


async def test_no_live_workers_no_rows(store: BatchStore) -> None:
    await store.submit(items(2, model="m"))
    await pick(store, A)  # its loads stay in Redis, but no live worker talks to it
    assert await host_rows(store.redis, store.keys) == []
    assert await no_auto_limits(endpoint_id(A)) == {}


async def test_the_default_source_shows_the_shared_auto_limits(store: BatchStore) -> None:
    # What --concurrency auto's workers hold in Redis (batchq.store.autolimit) is what a
    # view shows, per host and model, as the requests each limit admits at once.
    now = clock.now_ms()
    pair = AutoLimit(store.redis, store.keys, A, "llama3.2", ceiling=32)
    assert await pair.try_admit("t1", now_ms=now, slot_until_ms=now + 60_000) > 0
    # A reply that waited 4 service times with 4 sent: the server has about 1 slot.
    limit, _ = await pair.observe(
        "t1", "ok", now_ms=now, wait_ms=400.0, service_ms=100.0, sent_with=4
    )
    await publish_worker(store, worker_info("w1:1:a", endpoints=[A, B], seen_at=now))
    rows = await host_rows(store.redis, store.keys)
    assert {r.endpoint_id: r.auto_limits for r in rows} == {
        endpoint_id(A): {"llama3.2": max(1, int(limit))},
        endpoint_id(B): {},
    }
