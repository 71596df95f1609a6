"""Global limits: the admission script, driven with explicit clocks (no sleeps)."""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import pytest

from batchq.admission import Admission
from batchq.batches import BatchStore

from .procs import Workers, batchq, env_for, sim_stats, simulator, wait_done


def admission(store: BatchStore) -> Admission:
    return Admission(store.redis, store.keys, "http://gpu-1:11434")


async def test_no_limits_admits_everything(store: BatchStore) -> None:
    adm = admission(store)
    assert not await adm.active()
    for i in range(100):
        assert await adm.try_admit(f"j{i}", now_ms=1000, slot_until_ms=2000) == 0


async def test_rate_spaces_admissions_across_callers(store: BatchStore) -> None:
    adm = admission(store)
    other_worker = admission(store)  # same endpoint, another process: shares the limit
    await adm.configure(rate=10)
    t = 1_000_000
    assert await adm.try_admit("a", now_ms=t, slot_until_ms=t) == 0
    assert await other_worker.try_admit("b", now_ms=t, slot_until_ms=t) == 100
    assert await other_worker.try_admit("b", now_ms=t + 60, slot_until_ms=t) == 40
    assert await other_worker.try_admit("b", now_ms=t + 100, slot_until_ms=t) == 0
    # Over the 10 simulated seconds from b's admission, asking as fast as allowed: 10/s.
    admitted, now = 1, t + 100
    while now < t + 10_100:
        wait = await adm.try_admit("c", now_ms=now, slot_until_ms=now)
        admitted += wait == 0
        now += max(wait, 1)
    assert admitted == 100


async def test_concurrency_slots_are_leases(store: BatchStore) -> None:
    adm = admission(store)
    await adm.configure(concurrency=2)
    t = 5_000
    assert await adm.try_admit("a", now_ms=t, slot_until_ms=t + 1000) == 0
    assert await adm.try_admit("b", now_ms=t, slot_until_ms=t + 3000) == 0
    assert await adm.try_admit("c", now_ms=t, slot_until_ms=t + 1000) > 0
    assert (await adm.limits()).in_flight == 2
    await adm.release("a")
    assert await adm.try_admit("c", now_ms=t, slot_until_ms=t + 1000) == 0
    assert await adm.try_admit("d", now_ms=t + 999, slot_until_ms=t + 5000) > 0
    # c's holder died (no renewal): its slot expires with its lease.
    assert await adm.try_admit("d", now_ms=t + 1001, slot_until_ms=t + 5000) == 0
    await adm.renew({"b"}, t + 10_000)
    assert await adm.try_admit("e", now_ms=t + 4000, slot_until_ms=t + 5000) > 0


async def test_configure_show_and_clear(store: BatchStore) -> None:
    adm = admission(store)
    await adm.configure(rate=2.5, concurrency=4)
    lim = await adm.limits()
    assert (lim.endpoint, lim.rate, lim.concurrency, lim.in_flight) == (
        "http://gpu-1:11434",
        2.5,
        4,
        0,
    )
    await adm.configure(rate=0)
    assert (await adm.limits()).rate is None
    await adm.configure(clear=True)
    assert not await adm.active()
    other = Admission(store.redis, store.keys, "http://gpu-2:11434")
    await other.configure(concurrency=1)
    assert (await adm.limits()).concurrency is None  # per endpoint


@pytest.mark.e2e
def test_four_workers_keep_to_the_global_limits(
    valkey_url: str, prefix: str, tmp_path: Path
) -> None:
    rate, conc, n = 10.0, 3, 40
    # 0.25 s each: 3 slots could do 12/s, so the rate binds, and the slots nearly do.
    with simulator(tmp_path, "--parallel", "32", "--latency", "0.25") as sim:
        env = env_for(valkey_url, prefix, tmp_path / "home", sim)
        src = tmp_path / "p.jsonl"
        src.write_text("".join(json.dumps(f"limited {i}") + "\n" for i in range(n)))
        bid = batchq(env, "submit", str(src), "--model", "llama3.2").stdout.strip()
        with Workers(env, tmp_path) as workers:
            for _ in range(4):
                workers.start(
                    "--concurrency",
                    "8",
                    "--global-rate",
                    str(rate),
                    "--global-concurrency",
                    str(conc),
                )
            final = wait_done(env, bid, timeout=120)
            shown = json.loads(batchq(env, "limits", "--json").stdout)
        stats = sim_stats(sim)
    assert final["succeeded"] == n
    assert (shown["rate"], shown["concurrency"]) == (rate, conc)
    arrivals = sorted(stats["arrivals"])
    assert len(arrivals) == n
    # Measured at Ollama's side: no 1-second window holds more than rate + 1 requests...
    most = max(bisect.bisect_left(arrivals, t + 1.0) - i for i, t in enumerate(arrivals))
    assert most <= rate + 1, most
    # ...and never more than the cap (+1) in flight at once, with 32 worker slots asking.
    assert stats["max_concurrency"]["llama3.2"] <= conc + 1
    print(
        f"global limits: peak {most} requests in 1 s (limit {rate:g}), "
        f"peak {stats['max_concurrency']['llama3.2']} in flight (limit {conc})"
    )
