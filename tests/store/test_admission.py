"""Global limits: the admission script, driven with explicit clocks (no sleeps)."""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import pytest

from batchq.settings import Settings
from batchq.store.admission import Admission
from batchq.store.batches import BatchStore
from tests.procs import Workers, batchq, env_for, sim_stats, simulator, wait_done


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
            final = wait_done(env, bid)
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


async def test_tokens_per_minute_is_a_debt_paid_off_over_time(store: BatchStore) -> None:
    adm = admission(store)
    other_worker = admission(store)
    await adm.configure(tokens_per_minute=600)  # 10 tokens/s: 100 ms a token
    assert (await adm.limits()).tokens_per_minute == 600
    t = 2_000_000
    # No tokens spent yet: admitted at once, twice (the reply's size is not known up front).
    assert await adm.try_admit("a", now_ms=t, slot_until_ms=t) == 0
    assert await other_worker.try_admit("b", now_ms=t, slot_until_ms=t) == 0
    assert await adm.spend_tokens(5, now_ms=t + 50) == 500
    assert await other_worker.spend_tokens(3, now_ms=t + 60) == 790
    assert await adm.try_admit("c", now_ms=t + 60, slot_until_ms=t) == 790
    assert await other_worker.try_admit("c", now_ms=t + 849, slot_until_ms=t) == 1
    assert await adm.try_admit("c", now_ms=t + 850, slot_until_ms=t) == 0
    # A debt does not carry credit: idle time does not bank tokens for a later burst.
    assert await adm.spend_tokens(1, now_ms=t + 10_000) == 100
    await adm.configure(tokens_per_minute=0)
    assert await adm.try_admit("d", now_ms=t + 10_000, slot_until_ms=t) == 0
    assert await adm.spend_tokens(1000, now_ms=t + 10_000) == 0


@pytest.mark.e2e
def test_workers_keep_to_a_global_token_rate(valkey_url: str, prefix: str, tmp_path: Path) -> None:
    tpm, n, slots = 4800, 28, 4  # 80 tokens/s
    with simulator(tmp_path, "--parallel", "8", "--latency", "0.05") as sim:
        env = env_for(valkey_url, prefix, tmp_path / "home", sim)
        src = tmp_path / "p.jsonl"
        words = " ".join(["word"] * 11)
        src.write_text("".join(json.dumps(f"{i} {words}") + "\n" for i in range(n)))
        bid = batchq(env, "submit", str(src), "--model", "llama3.2").stdout.strip()
        with Workers(env, tmp_path) as workers:
            for _ in range(2):
                workers.start("--concurrency", str(slots // 2), "--global-tpm", str(tpm))
            final = wait_done(env, bid)
        out = batchq(env, "results", bid).stdout
        stats = sim_stats(sim)
    assert final["succeeded"] == n
    used = [json.loads(line)["metrics"] for line in out.splitlines() if line.strip()]
    per_request = {m["prompt_eval_count"] + m["eval_count"] for m in used}
    assert len(per_request) == 1, per_request  # every prompt costs the same: 20 tokens
    cost = per_request.pop()
    arrivals = sorted(stats["arrivals"])
    t0 = arrivals[0]
    # Measured at Ollama's side: the tokens sent by each arrival stay within the rate, plus
    # what the requests in flight (whose size was not known yet) add on top.
    in_flight = 2 * Settings(concurrency=slots // 2, ollama_queue=None).max_in_flight
    for k, t in enumerate(arrivals):
        assert (k + 1) * cost <= tpm / 60 * (t - t0) + (in_flight + 1) * cost, (k, t - t0)
    # And the limit is used, not just respected: the last 20 go out at >= 70 % of the rate.
    span = arrivals[-1] - arrivals[-21]
    assert 20 * cost / span >= 0.7 * tpm / 60, span
    print(f"token limit {tpm}/min: {n * cost / (arrivals[-1] - t0) * 60:.0f} tokens/min sent")
