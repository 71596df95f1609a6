"""Several Ollama hosts per worker: spread, skip a failing one, come back to it."""

from __future__ import annotations

import pytest

from batchq import clock
from batchq.backends.pool import HostPool
from batchq.errors import TransientOllamaError
from batchq.records import Endpoint, Item, ItemStatus
from batchq.results.export import iter_results
from batchq.settings import Settings
from batchq.sim.process import SimConfig, running_sim
from batchq.store.batches import BatchStore
from batchq.store.keys import Keys
from tests.conftest import free_port, run_burst


def test_settings_take_a_list_of_hosts() -> None:
    s = Settings(ollama_host="gpu-1, gpu-2:8080 ,http://gpu-3")
    assert s.ollama_hosts == ["http://gpu-1:11434", "http://gpu-2:8080", "http://gpu-3:11434"]


async def test_choice_spreads_skips_failures_and_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(clock, "monotonic", lambda: now[0])
    import fakeredis

    pool = HostPool(Settings(ollama_host="a,b,c"), fakeredis.FakeAsyncRedis(), Keys("t"))
    try:
        a, b, c = pool.hosts
        assert {pool.choose().url for _ in range(3)} == {a.url, b.url, c.url}  # in turn
        a.in_flight = b.in_flight = 2
        assert pool.choose() is c  # least loaded
        pool.failed(c, TransientOllamaError("down", kind="unreachable"))
        assert pool.choose() in (a, b)
        pool.failed(a, TransientOllamaError("busy", kind="server_busy"))  # alive, just full
        assert a.down_until == 0
        pool.failed(a, TransientOllamaError("x", kind="server_error"))
        pool.failed(b, TransientOllamaError("x", kind="timeout"))
        pool.failed(b, TransientOllamaError("x", kind="timeout"))
        assert pool.choose() is max((a, c), key=lambda h: -h.down_until)  # soonest back
        now[0] += 61
        pool.succeeded(c)
        assert pool.choose() in (a, b, c) and c.failures == 0
    finally:
        await pool.aclose()


async def test_worker_spreads_over_hosts_and_avoids_a_dead_one(
    store: BatchStore, settings: Settings
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = SimConfig(parallel=8, eval_tokens_per_s=0)
    with running_sim(cfg) as one, running_sim(cfg) as two:
        settings = settings.with_overrides(
            ollama_host=f"{one.url},{dead},{two.url}", concurrency=6, max_attempts=2
        )
        items = [
            Item(str(i), Endpoint.GENERATE, {"model": "llama3.2", "prompt": f"h{i}"})
            for i in range(60)
        ]
        bid, _ = await store.submit(items)
        await run_burst(settings)
        served = (sum(one.stats()["prompts"].values()), sum(two.stats()["prompts"].values()))
    results = [r async for r in iter_results(store, bid)]
    assert [r.status for r in results] == [ItemStatus.SUCCEEDED] * 60
    assert all(r.attempts == 1 for r in results)  # the dead host cost nothing
    assert sum(served) == 60 and min(served) >= 15  # both live hosts did a share
