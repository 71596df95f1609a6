"""Self-tuned concurrency: the reply's signals (pure), and the two scripts on a real server,
driven with explicit clocks by a server of P slots simulated in virtual time (no sleeps)."""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest

from batchq.store.autolimit import (
    INITIAL_LIMIT,
    AutoLimit,
    model_id,
    queue_wait_ms,
    read_auto_limits,
)
from batchq.store.batches import BatchStore

URL = "http://gpu-1:11434"
MS = 1_000_000  # ns


def limit_of(store: BatchStore, model: str = "qwen3:8b", ceiling: int = 64) -> AutoLimit:
    return AutoLimit(store.redis, store.keys, URL, model, ceiling=ceiling)


def test_queue_wait_is_what_the_durations_leave_out() -> None:
    m = {
        "total_duration": 530 * MS,
        "load_duration": 300 * MS,  # the simulator's wait for a slot shows here
        "prompt_eval_duration": 30 * MS,
        "eval_duration": 200 * MS,
    }
    assert queue_wait_ms(m) == (300.0, 230.0)
    # Ollama's runner: the wait falls in the gap between the parts.
    assert queue_wait_ms({**m, "load_duration": 0}) == (300.0, 230.0)
    # An embed reply has no evaluation durations: its load duration is the wait.
    assert queue_wait_ms({"total_duration": 50 * MS, "load_duration": 20 * MS}) == (20.0, 30.0)
    assert queue_wait_ms({"eval_duration": 5}) is None
    assert queue_wait_ms({"total_duration": "soon"}) is None
    assert queue_wait_ms({**m, "total_duration": 100 * MS}) == (0.0, 230.0)


def test_model_ids_are_key_safe_and_distinct() -> None:
    ids = {model_id(m) for m in ("qwen3:8b", "qwen3:8b-q8", "hf.co/x/y:latest")}
    assert len(ids) == 3 and all(i.isalnum() for i in ids)


async def test_slots_follow_the_limit_and_are_leases(store: BatchStore) -> None:
    lim = limit_of(store)
    t = 10_000
    assert INITIAL_LIMIT == 2.0
    assert await lim.try_admit("a", now_ms=t, slot_until_ms=t + 1000)
    assert await lim.try_admit("b", now_ms=t, slot_until_ms=t + 5000)
    assert not await lim.try_admit("c", now_ms=t, slot_until_ms=t + 1000)
    assert await lim.try_admit("a", now_ms=t, slot_until_ms=t + 1000)  # already held
    # a's worker died: its slot expires with its lease.
    assert await lim.try_admit("c", now_ms=t + 1001, slot_until_ms=t + 5000)
    await lim.renew({"b", "c"}, t + 20_000)
    assert not await lim.try_admit("d", now_ms=t + 6000, slot_until_ms=t + 9000)
    await lim.observe("b", "none", now_ms=t + 6000)  # nothing learnt, the slot is free
    assert await lim.try_admit("d", now_ms=t + 6000, slot_until_ms=t + 9000)


async def test_a_wait_sets_the_limit_from_littles_law(store: BatchStore) -> None:
    lim = limit_of(store)
    t = 1000
    await lim.redis.hset(lim.state_key, mapping={"limit": "8"})  # type: ignore[misc]
    for tok in "abcd":
        await lim.redis.zadd(lim.inflight_key, {tok: t + 10_000})
    # Sent as the fifth in flight, it waited less than its service: the four ahead of it were
    # what the server runs (Little's law would say 3.3; the slots may have finished in step).
    ok: dict[str, Any] = {"now_ms": t, "service_ms": 100}
    assert (await lim.observe("a", "ok", wait_ms=50, sent_with=5, **ok))[0] == 4.5
    # Sent as the sixth, served in 100 ms after waiting 200: the server runs 2 at once.
    assert (await lim.observe("b", "ok", wait_ms=200, sent_with=6, **ok))[0] == 2.5
    # A wait within the tolerance is no wait: with the limit reached (c and d in flight), a
    # probe of half a slot per round trip, i.e. 0.5 / 2.5 a reply.
    probed = 2.5 + 0.5 / 2.5
    assert (await lim.observe("c", "ok", wait_ms=4, sent_with=9, **ok))[0] == pytest.approx(probed)
    # One that waited although it was sent alone tells nothing of the slots (a model load, a
    # restart, another client, the server's own lag): neither a decrease nor a probe.
    alone = await lim.observe("e", "ok", wait_ms=300, sent_with=1, **ok)
    assert alone[0] == pytest.approx(probed)
    [state] = await read_auto_limits(store.redis, store.keys)
    assert (state.endpoint, state.model, state.slots, state.estimate) == (URL, "qwen3:8b", 2, 2)
    assert state.in_flight == 1 and state.updated_ms == t
    # A 503 or a timeout: multiplicative decrease, never below 1.
    assert (await lim.observe("d", "overload", now_ms=t))[0] == pytest.approx(probed * 0.7)
    for _ in range(3):
        await lim.observe("d", "overload", now_ms=t)
    assert (await read_auto_limits(store.redis, store.keys))[0].limit == 1.0


async def test_no_wait_at_the_limit_probes_upward_to_the_ceiling(store: BatchStore) -> None:
    lim = limit_of(store, ceiling=6)
    t, limit = 1000, INITIAL_LIMIT
    for i in range(200):
        assert await lim.try_admit(f"x{i}", now_ms=t, slot_until_ms=t + 10_000)
        # Not at the limit (one request where two are allowed): nothing is learnt.
        assert (await lim.observe(f"x{i}", "ok", now_ms=t, service_ms=100))[0] == limit
        if i == 0:
            break
    for i in range(200):
        held = [f"y{i}-{k}" for k in range(int(limit))]
        for tok in held:
            assert await lim.try_admit(tok, now_ms=t, slot_until_ms=t + 10_000)
        for tok in held:
            limit, _ = await lim.observe(tok, "ok", now_ms=t, wait_ms=1, service_ms=100)
    assert limit == 6


async def test_a_slot_given_back_goes_to_the_next_request_at_once(store: BatchStore) -> None:
    lim = limit_of(store)
    t = 1000
    for tok in "ab":
        assert await lim.try_admit(tok, now_ms=t, slot_until_ms=t + 5000)
    assert not await lim.try_admit("c", now_ms=t, slot_until_ms=t + 5000)
    # a's end hands its slot to c in the same call; b's cannot hand one to d (none free).
    assert await lim.observe("a", "none", now_ms=t, next_token="c", next_until_ms=t + 9) == (
        2.0,
        2,
    )
    assert await lim.redis.zscore(lim.inflight_key, "c") == t + 9
    assert await lim.observe("b", "overload", now_ms=t, next_token="d", next_until_ms=t) == (
        1.4,
        0,
    )
    assert await lim.redis.zscore(lim.inflight_key, "d") is None


@dataclass(order=True)
class _Done:
    at: float
    token: str = field(compare=False)
    arrived: float = field(compare=False)
    started: float = field(compare=False)


async def _run_server(
    lim: AutoLimit, parallel: int, *, seconds: float, service: float = 100.0
) -> tuple[list[float], float]:
    """Clients with endless work against a server of ``parallel`` FIFO slots, in virtual ms:
    every reply is observed and the freed slots are refilled at once. Returns the limits after
    each reply, and the time-averaged number of requests waiting inside the server."""
    now, waited, limits = 0.0, 0.0, []
    busy: list[_Done] = []
    queue: list[tuple[str, float]] = []
    found: dict[str, int] = {}
    run = await lim.redis.incr("test-runs")
    tokens = (f"r{run}-{i}" for i in itertools.count())

    def start(token: str, arrived: float) -> None:
        heapq.heappush(busy, _Done(now + service, token, arrived, now))

    while now < seconds * 1000:
        while True:
            token = next(tokens)
            found[token] = await lim.try_admit(token, now_ms=int(now), slot_until_ms=10**12)
            if not found[token]:
                break
            if len(busy) < parallel:
                start(token, now)
            else:
                queue.append((token, now))
        done = heapq.heappop(busy)
        waited += len(queue) * (done.at - now)
        now = done.at
        if queue:
            start(*queue.pop(0))
        wait = done.started - done.arrived
        limits.append(
            (
                await lim.observe(
                    done.token,
                    "ok",
                    now_ms=int(now),
                    wait_ms=wait,
                    service_ms=service,
                    sent_with=found.pop(done.token),
                )
            )[0]
        )
    # The server stops: what it held ends in connection errors, which teach nothing.
    for token in [d.token for d in busy] + [t for t, _ in queue]:
        await lim.observe(token, "none", now_ms=int(now))
    return limits, waited / now


@pytest.mark.parametrize("parallel", [1, 2, 4, 8, 16])
async def test_the_limit_converges_near_the_servers_slots(store: BatchStore, parallel: int) -> None:
    lim = limit_of(store)
    limits, waiting = await _run_server(lim, parallel, seconds=30)
    steady = limits[len(limits) // 2 :]
    # The slots it admits stay at P or P + 1, and on average under one request waits.
    assert {int(x) for x in steady} <= {parallel, parallel + 1}
    assert waiting < 1.0


async def test_a_restart_with_other_slots_is_followed(store: BatchStore) -> None:
    lim = limit_of(store)
    limits, _ = await _run_server(lim, 16, seconds=20)
    assert int(limits[-1]) in (16, 17)
    limits, _ = await _run_server(lim, 2, seconds=20)
    assert int(limits[-1]) in (2, 3)
    limits, _ = await _run_server(lim, 8, seconds=20)
    assert int(limits[-1]) in (8, 9)
