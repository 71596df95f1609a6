"""A worker's own account: counted in memory by the job, published on the heartbeat, gone
when the worker stops."""

from __future__ import annotations

import httpx
import pytest
from arq import Retry

from batchq.records import tokens_of
from batchq.settings import Settings
from batchq.sim.process import SimConfig
from batchq.store.batches import BatchStore
from batchq.store.presence import EndpointFacts, live_workers
from tests.helpers import job_context, refused_off_loopback, worker_on_sim
from workers.inference import run_item
from workers.state import WorkerState
from workers.stats import WorkerStats


def test_counts_and_running_items_by_batch(settings: Settings) -> None:
    running = {"b_0123456789abcdef:1", "b_0123456789abcdef:7", "b_fedcba9876543210:0"}
    stats = WorkerStats("h:1:x", settings, running)
    assert stats.item_succeeded({"prompt_eval_count": 12, "eval_count": 30}) == (12, 30)
    assert stats.item_succeeded({}) == (0, 0)
    stats.retrying("server_busy", "busy")
    stats.item_failed("model_not_found", "x" * 1000)
    info = stats.info()
    assert info.running == {"b_0123456789abcdef": 2, "b_fedcba9876543210": 1}
    assert (info.succeeded, info.failed, info.retried) == (2, 1, 1)
    assert (info.tokens_in, info.tokens_out) == (12, 30)
    assert info.last_error.startswith("model_not_found: xxx") and len(info.last_error) == 300
    assert info.endpoints == settings.ollama_hosts and info.last_error_at >= info.started_at
    value = stats.registry.get_sample_value
    assert value("batchq_worker_in_flight") == 3
    running.clear()  # read live, not copied
    assert stats.info().running == {}
    assert value("batchq_worker_in_flight") == 0
    assert value("batchq_worker_items_total", {"status": "succeeded"}) == 2
    assert value("batchq_worker_items_total", {"status": "failed"}) == 1
    assert value("batchq_worker_tokens_out_total") == 30
    assert value("batchq_worker_retries_total", {"kind": "server_busy"}) == 1
    assert value("batchq_worker_errors_total", {"kind": "model_not_found"}) == 1
    stats.request_done("http://h:1", 0.3)
    assert value("batchq_worker_request_seconds_bucket", {"endpoint": "http://h:1", "le": "0.5"})
    assert stats.serve() is None  # no port configured: nothing listens
    assert tokens_of({"prompt_eval_count": None, "eval_count": 3}) == (0, 3)


def test_metrics_port_listens_on_loopback_and_checks_the_host(settings: Settings) -> None:
    stats = WorkerStats("h:1:x", settings.with_overrides(metrics_port=0), set())
    port = stats.serve()
    assert port is not None
    try:
        reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert reply.status_code == 200 and "batchq_worker_in_flight" in reply.text
        assert refused_off_loopback(port)
        # A DNS-rebinding page's request names its own domain: refused.
        forged = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Host": "evil.example"})
        assert forged.status_code == 421 and "batchq_" not in forged.text
    finally:
        stats.close()


async def test_heartbeat_publishes_and_shutdown_removes(
    store: BatchStore, settings: Settings
) -> None:
    always_busy = SimConfig(fail_503=1.0)
    fixed = {"max_attempts": 5, "concurrency": 4}
    async with worker_on_sim(store, settings, always_busy, **fixed) as (settings, bid, ctx):
        st: WorkerState = ctx["batchq"]  # type: ignore[assignment]
        key = store.keys.worker_info(st.worker_id)
        try:
            [info] = await live_workers(store.redis, store.keys)  # written at startup
            # Requests it may have at Ollama: the concurrency of 4 and 1 in Ollama's queue.
            assert (info.worker_id, info.concurrency, info.retried) == (st.worker_id, 5, 0)
            assert info.endpoints == settings.ollama_hosts
            job = job_context(ctx, f"{bid}:0")
            with pytest.raises(Retry):
                await run_item(job, bid, 0)
            assert (await store.status(bid)).retried == 1
            st.running.add(f"{bid}:5")  # as if an item were running at the heartbeat
            [host] = st.hosts.hosts
            host.models, host.loaded, host.in_flight = ("m",), ("m", "other"), 1
            async with store.redis.pipeline(transaction=False) as pipe:
                st.stats.publish(pipe, key, ttl_ms=st.lease_ms)
                await pipe.execute()
            [info] = await live_workers(store.redis, store.keys)
            assert info.retried == 1 and info.last_error.startswith("server_busy")
            assert info.running == {bid: 1}
            # What it last heard of its Ollama host, by URL.
            assert info.hosts == {host.url: EndpointFacts(["m"], ["m", "other"], 1)}
            assert 0 < await store.redis.pttl(key) <= st.lease_ms
        finally:
            st.running.clear()
    assert not await store.redis.exists(key)
    assert await live_workers(store.redis, store.keys) == []
