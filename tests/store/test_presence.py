from __future__ import annotations

import asyncio

import pytest

from batchq import clock
from batchq.store.batches import BatchStore
from batchq.store.presence import (
    MAX_ENDPOINTS,
    MAX_MODEL_CHARS,
    MAX_MODELS,
    NO_WORKERS_NOTICE,
    EndpointFacts,
    WorkerAbsence,
    WorkerInfo,
    live_workers,
    notice_without_workers,
)


def test_mapping_round_trip() -> None:
    info = WorkerInfo(
        "gpu1:42:abc",
        host="gpu1",
        pid=42,
        endpoints=["http://a:11434", "http://b:11434"],
        concurrency=8,
        running={"b_0123456789abcdef": 3, "b_fedcba9876543210": 2},
        succeeded=10,
        failed=1,
        retried=4,
        tokens_in=100,
        tokens_out=900,
        last_error="timeout: no complete reply within 600 s",
        last_error_at=1_700_000_000_000,
        hosts={
            "http://a:11434": EndpointFacts(["llama3.2"], ["llama3.2", "qwen3:8b"], 2),
            "http://b:11434": EndpointFacts([], [], 0),
        },
        started_at=1_699_999_000_000,
        seen_at=1_700_000_001_000,
    )
    raw = info.to_mapping()
    assert all(isinstance(v, str) for v in raw.values())
    back = WorkerInfo.from_mapping(info.worker_id, raw)
    assert back == info
    assert (back.in_flight, back.done) == (5, 11)
    assert back.to_json()["in_flight"] == 5
    assert back.to_json()["hosts"]["http://a:11434"] == {
        "serving": ["llama3.2"],
        "loaded": ["llama3.2", "qwen3:8b"],
        "in_flight": 2,
    }


def test_unreadable_or_missing_fields_keep_defaults() -> None:
    info = WorkerInfo.from_mapping("w", {"pid": "x", "running": "[1, 2]", "host": "h"})
    assert (info.pid, info.running, info.host, info.endpoints) == (0, {}, "h", [])
    assert info.hosts == {}


@pytest.mark.parametrize(
    "raw",
    ["not json", "[1]", '{"http://a": 3}', '{"http://a": {"serving": "x", "loaded": []}}'],
)
def test_unreadable_hosts_are_left_out(raw: str) -> None:
    assert WorkerInfo.from_mapping("w", {"hosts": raw}).hosts == {}


def test_hosts_of_another_version_are_read_as_far_as_they_go() -> None:
    raw = '{"http://a": {"serving": ["m", 7], "loaded": ["m"], "in_flight": "x", "new": 1}}'
    assert WorkerInfo.from_mapping("w", {"hosts": raw}).hosts == {
        "http://a": EndpointFacts(["m"], ["m"], 0)
    }


def test_what_a_host_says_is_bounded() -> None:
    names = [f"m{i}" + "x" * MAX_MODEL_CHARS for i in range(MAX_MODELS + 5)]
    facts = EndpointFacts.bounded(names, names, -1)
    assert len(facts.serving) == len(facts.loaded) == MAX_MODELS
    assert all(len(m) == MAX_MODEL_CHARS for m in facts.loaded) and facts.in_flight == 0
    back = WorkerInfo.from_mapping("w", WorkerInfo("w", hosts={"u": facts}).to_mapping())
    assert back.hosts == {"u": facts}
    many = WorkerInfo("w", hosts={f"http://h{i}": facts for i in range(MAX_ENDPOINTS + 3)})
    assert len(WorkerInfo.from_mapping("w", many.to_mapping()).hosts) == MAX_ENDPOINTS


async def test_live_workers_are_those_whose_heartbeat_has_not_lapsed(store: BatchStore) -> None:
    k, r = store.keys, store.redis
    now = clock.now_ms()
    await r.zadd(k.workers, {"b-host:1:x": now + 5000, "a-host:2:y": now + 5000, "dead": now - 1})
    await r.hset(
        k.worker_info("b-host:1:x"), mapping=WorkerInfo("b-host:1:x", host="b-host").to_mapping()
    )  # type: ignore[misc]
    await r.hset(
        k.worker_info("a-host:2:y"), mapping=WorkerInfo("a-host:2:y", host="a-host").to_mapping()
    )  # type: ignore[misc]
    await r.hset(k.worker_info("dead"), mapping=WorkerInfo("dead", host="0").to_mapping())  # type: ignore[misc]
    await r.zadd(k.workers, {"no-hash-yet": now + 5000})
    workers = await live_workers(r, k)
    assert [w.worker_id for w in workers] == ["no-hash-yet", "a-host:2:y", "b-host:1:x"]
    assert workers[0].host == "" and workers[1].host == "a-host"


def test_absence_is_due_after_a_while_without_workers() -> None:
    a = WorkerAbsence(after=5)
    assert not a.update(0, 100.0)  # none yet: counting from here
    assert not a.update(0, 104.9)
    assert a.update(0, 105.0)
    assert not a.update(1, 106.0)  # one came: not due, and the count starts again
    assert not a.update(0, 107.0) and not a.update(0, 111.9) and a.update(0, 112.0)


async def test_notice_said_once_per_absence(store: BatchStore) -> None:
    k, r = store.keys, store.redis
    said: asyncio.Queue[str] = asyncio.Queue()

    async def nothing_more_said() -> None:
        # Many polls' time, none of which may say it again.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(said.get(), 0.6)

    async with notice_without_workers(r, k, said.put_nowait, after=0.3, poll=0.02):
        assert await asyncio.wait_for(said.get(), 20) == NO_WORKERS_NOTICE
        await nothing_more_said()
        # A worker comes: nothing said while it is live.
        await r.zadd(k.workers, {"w1": clock.now_ms() + 60_000})
        await nothing_more_said()
        # Gone again: said again, once.
        await r.zrem(k.workers, "w1")
        assert await asyncio.wait_for(said.get(), 20) == NO_WORKERS_NOTICE
        await nothing_more_said()
