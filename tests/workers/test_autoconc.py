"""``--concurrency auto`` end to end: real worker processes at their defaults share one limit
per (host, model) that settles around the simulator's hidden slots; and the worker's gate."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from batchq.backends.base import Reply
from batchq.errors import PermanentBackendError, TransientBackendError
from batchq.store.autolimit import AutoLimit, AutoLimitState, read_auto_limits
from batchq.store.batches import BatchStore
from batchq.store.connection import connect
from batchq.store.keys import Keys
from tests.procs import Workers, batchq, env_for, sim_stats, simulator
from tests.waits import async_wait_until, wait_for_value
from workers.autoconc import AutoGate, outcome_of

MS = 1_000_000


def test_what_a_request_end_teaches_the_limit() -> None:
    metrics = {"total_duration": 300 * MS, "prompt_eval_duration": 50 * MS, "eval_duration": 0}
    assert outcome_of(Reply("x", metrics)) == ("ok", 250.0, 50.0)
    assert outcome_of(Reply("x", {})) == ("none", 0.0, 0.0)
    busy = TransientBackendError("busy", kind="server_busy", status_code=503)
    assert outcome_of(busy)[0] == "overload"
    assert outcome_of(TransientBackendError("t", kind="timeout"))[0] == "overload"
    assert outcome_of(TransientBackendError("down", kind="unreachable"))[0] == "none"
    assert outcome_of(PermanentBackendError("bad", kind="invalid_request"))[0] == "none"
    assert outcome_of(None)[0] == "none"


async def test_the_gate_queues_in_order_and_hands_slots_over(store: BatchStore) -> None:
    limit = AutoLimit(store.redis, store.keys, "http://gpu:11434", "m", ceiling=8)
    gate = AutoGate(limit, lease_ms=60_000)
    await gate.acquire("a")
    await gate.acquire("b")  # the initial limit: 2
    c = asyncio.create_task(gate.acquire("c"))
    d = asyncio.create_task(gate.acquire("d"))
    e = asyncio.create_task(gate.acquire("e"))
    await async_wait_until(lambda: gate.waiting == 3, what="three waiting")
    assert not (c.done() or d.done() or e.done())
    d.cancel()
    await gate.release("a", None)
    await c  # a's slot, in order, with d gone
    assert not e.done()
    assert set(gate.held) == {"b", "c"}
    assert await store.redis.zcard(limit.inflight_key) == 2
    e.cancel()
    for tok in ("b", "c"):
        await gate.release(tok, None)
    assert gate.held == {}
    assert await store.redis.zcard(limit.inflight_key) == 0


def _limits(redis_url: str, prefix: str) -> list[AutoLimitState]:
    async def read() -> list[AutoLimitState]:
        client = connect(redis_url)
        try:
            return await read_auto_limits(client, Keys(prefix))
        finally:
            await client.aclose()

    return asyncio.run(read())


@pytest.mark.e2e
@pytest.mark.parametrize(("parallel", "workers"), [(1, 1), (3, 2)])
def test_workers_at_defaults_find_the_servers_slots(
    valkey_url: str, prefix: str, tmp_path: Path, parallel: int, workers: int
) -> None:
    sim_args = ("--parallel", str(parallel), "--latency", "0.1")
    with simulator(tmp_path, *sim_args) as sim:
        env = env_for(valkey_url, prefix, tmp_path / "home", sim)
        env.pop("BATCHQ_CONCURRENCY", None)  # the default: auto
        src = tmp_path / "p.jsonl"
        src.write_text("".join(json.dumps(f"prompt {i}") + "\n" for i in range(3000)))
        bid = batchq(env, "submit", str(src), "--model", "llama3.2").stdout.strip()
        with Workers(env, tmp_path) as procs:
            for _ in range(workers):
                procs.start()

            def settled(states: list[AutoLimitState]) -> bool:
                # The limit admits P or P + 1, and the waits put the estimate near P.
                return len(states) == 1 and (
                    states[0].slots in (parallel, parallel + 1)
                    and abs(states[0].estimate - parallel) <= 1
                )

            [state] = wait_for_value(
                lambda: _limits(valkey_url, prefix),
                settled,
                timeout=120,
                interval=0.2,
                what="the auto limit settles near P",
            )
            stats = sim_stats(sim)
            batchq(env, "cancel", bid)
    assert (state.endpoint, state.model) == (sim, "llama3.2")
    # Never more generating at once than the server's slots, and none refused.
    assert stats["max_concurrency"] == {"llama3.2": parallel}
    assert stats["by_status"].get("503", 0) == 0
