"""The job and the worker in-process: a real server, the simulator over a real socket, and
arq's own Worker loop (burst mode as the seam), so every hop but process boundaries is real."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
from arq import Retry

from batchq import clock
from batchq.records import BatchState, ItemStatus
from batchq.results.export import iter_results, write_results
from batchq.settings import Settings
from batchq.sim.process import SimConfig, SimServer, expected_response, running_sim
from batchq.store.batches import BatchStore
from batchq.store.keys import ARQ_IN_PROGRESS_PREFIX, Keys
from tests.conftest import run_burst
from tests.helpers import gen, job_context, one_prompt, worker_hooks, worker_on_sim
from tests.procs import Workers, batchq, env_for, sim_stats, simulator, wait_done
from workers.inference import run_item
from workers.lifecycle import after_job_end


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with running_sim(SimConfig(parallel=8, eval_tokens_per_s=0, prompt_tokens_per_s=0)) as s:
        yield s


async def test_burst_worker_drains_a_batch_in_order(
    store: BatchStore, settings: Settings, sim: SimServer
) -> None:
    settings = settings.with_overrides(ollama_host=sim.url, concurrency=4)
    batch = [gen(i) for i in range(30)] + [gen(30, model="no-such-model")]
    bid, _ = await store.submit(batch)
    await run_burst(settings)
    s = await store.status(bid)
    assert (s.state, s.succeeded, s.failed, s.queued, s.running) == (
        BatchState.COMPLETED,
        30,
        1,
        0,
        0,
    )
    results = [r async for r in iter_results(store, bid)]
    assert [r.index for r in results] == list(range(31))
    for r in results[:30]:
        assert r.status is ItemStatus.SUCCEEDED
        assert r.response == expected_response("llama3.2", f"prompt {r.index}")
        assert r.attempts == 1 and r.model == "llama3.2"
        assert r.metrics and r.metrics["eval_count"] == 8
    bad = results[30]
    assert bad.status is ItemStatus.FAILED and bad.error
    assert (bad.error.type, bad.error.status_code) == ("model_not_found", 404)
    assert bad.error.message == "model 'no-such-model' not found"
    assert bad.attempts == 1  # permanent: no retry


async def test_long_replies_are_stored_deflated_and_exported_whole(
    store: BatchStore, settings: Settings
) -> None:
    config = SimConfig(parallel=4, eval_tokens_per_s=0, prompt_tokens_per_s=0, response_tokens=300)
    with running_sim(config) as sim:
        bid, _ = await store.submit([gen(i) for i in range(6)])
        await run_burst(settings.with_overrides(ollama_host=sim.url, concurrency=4))
    raw = await store.redis.hgetall(store.keys.batch(bid).results)  # type: ignore[misc]
    assert len(raw) == 6 and all(v.startswith(b'{"s":"succeeded","a":1}\n') for v in raw.values())
    out = io.StringIO()
    assert await write_results(store, bid, out) == 6
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    for i, line in enumerate(lines):
        reply = expected_response("llama3.2", f"prompt {i}", tokens=300)
        assert (line["response"], line["metrics"]["eval_count"]) == (reply, 300)
        # Stored in well under the reply's own size, metrics and all.
        assert len(raw[str(i).encode()]) < 0.8 * len(reply)


async def test_transient_failures_are_retried_until_they_pass(
    store: BatchStore, settings: Settings
) -> None:
    cfg = SimConfig(
        parallel=8,
        eval_tokens_per_s=0,
        prompt_tokens_per_s=0,
        fail_503=0.3,
        fail_500=0.1,
        fail_midstream=0.1,
        seed=7,
    )
    with running_sim(cfg) as sim:
        settings = settings.with_overrides(ollama_host=sim.url, concurrency=8, max_attempts=30)
        bid, _ = await store.submit([gen(i) for i in range(40)])
        await run_burst(settings)
        stats = sim.stats()
    results = [r async for r in iter_results(store, bid)]
    assert all(r.status is ItemStatus.SUCCEEDED for r in results)
    assert all(
        r.response == expected_response("llama3.2", f"prompt {r.index}", seed=7) for r in results
    )
    assert sum(r.attempts for r in results) == sum(stats["prompts"].values())
    assert any(r.attempts > 1 for r in results)
    assert stats["by_status"].get("503", 0) > 0


async def test_exhausted_attempts_record_the_last_error(
    store: BatchStore, settings: Settings
) -> None:
    always_busy = SimConfig(fail_503=1.0)
    async with one_prompt(store, settings, always_busy, max_attempts=3) as (sim, settings, bid):
        await run_burst(settings)
        assert sim.stats()["prompts"] == {"prompt 0": 3}
    (r,) = [r async for r in iter_results(store, bid)]
    assert r.status is ItemStatus.FAILED and r.error and r.attempts == 3
    assert r.error.type == "server_busy" and r.error.status_code == 503
    assert r.error.message == "server busy, please try again.  maximum pending requests exceeded"


async def test_a_job_delivered_twice_leaves_one_result(
    store: BatchStore, settings: Settings, sim: SimServer
) -> None:
    settings = settings.with_overrides(ollama_host=sim.url)
    bid, _ = await store.submit([gen(0), gen(1)])
    async with worker_hooks(store, settings) as ctx:
        job_ctx = job_context(ctx, f"{bid}:0")
        first, second = await asyncio.gather(
            run_item(job_ctx, bid, 0), run_item(job_ctx.copy(), bid, 0)
        )
        assert sorted([first, second]) == ["succeeded", "succeeded"]
        assert await run_item(job_ctx.copy(), bid, 0) == "final"
        s = await store.status(bid)
        assert (s.succeeded, s.running, s.queued) == (1, 0, 1)
        await after_job_end(ctx)
    results = [r async for r in iter_results(store, bid)]
    assert len(results) == 1


async def test_transient_failure_raises_retry_and_releases_the_lease(
    store: BatchStore, settings: Settings
) -> None:
    always_failing = SimConfig(fail_500=1.0)
    async with worker_on_sim(store, settings, always_failing, max_attempts=2) as (_, bid, ctx):
        job = job_context(ctx, f"{bid}:0")
        with pytest.raises(Retry):
            await run_item(job, bid, 0)
        s = await store.status(bid)
        assert (s.running, s.queued, s.failed) == (0, 1, 0)
        job["job_try"] = 2
        assert await run_item(job, bid, 0) == "failed"
    s = await store.status(bid)
    assert (s.failed, s.state) == (1, BatchState.COMPLETED)


async def test_worker_registers_and_leaves(store: BatchStore, settings: Settings) -> None:
    async with worker_hooks(store, settings.with_overrides(concurrency=7)) as ctx:
        wid = ctx["batchq"].worker_id  # type: ignore[attr-defined]
        assert await store.redis.zscore(store.keys.workers, wid) > clock.now_ms()
        # Its slots for the dispatch window: 7, and 2 more (a quarter) in Ollama's queue.
        assert await store.redis.hget(store.keys.worker_slots, wid) == b"9"  # type: ignore[misc]
    assert await store.redis.zscore(store.keys.workers, wid) is None


async def test_a_hung_request_is_cut_by_the_timeout_and_retried(
    store: BatchStore, settings: Settings
) -> None:
    cfg = SimConfig(parallel=8, eval_tokens_per_s=0, slow_rate=0.4, slow_seconds=60, seed=5)
    with running_sim(cfg) as sim:
        settings = settings.with_overrides(
            ollama_host=sim.url, concurrency=8, timeout=0.5, max_attempts=20
        )
        bid, _ = await store.submit([gen(i) for i in range(12)])
        await run_burst(settings)
    results = [r async for r in iter_results(store, bid)]
    assert [r.status for r in results] == [ItemStatus.SUCCEEDED] * 12
    assert any(r.attempts > 1 for r in results)  # some hung and were retried
    assert all(
        r.response == expected_response("llama3.2", f"prompt {r.index}", seed=5) for r in results
    )


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("queue_args", "in_flight"),
    [(["--ollama-queue", "0"], 2), ([], 3)],
    ids=["no-ollama-queue", "default-ollama-queue"],
)
def test_prefetched_jobs_wait_for_a_slot_and_ollama_sees_the_concurrency_plus_its_queue(
    valkey_url: str, prefix: str, tmp_path: Path, queue_args: list[str], in_flight: int
) -> None:
    # Ollama with 2 slots and a worker of concurrency 2. By default the worker sends a quarter
    # more (rounded up: 1), which waits in Ollama's queue for the first slot to free; with
    # --ollama-queue 0 Ollama never has more than 2. Either way arq runs one job more (the
    # prefetch), claimed and waiting for a request to end, not started.
    n = 12
    with simulator(tmp_path, "--parallel", "2", "--latency", "0.3") as sim:
        env = env_for(valkey_url, prefix, tmp_path / "home", sim)
        src = tmp_path / "p.jsonl"
        src.write_text("".join(json.dumps(f"prefetch {i}") + "\n" for i in range(n)))
        bid = batchq(env, "submit", str(src), "--model", "llama3.2").stdout.strip()
        keys = Keys(prefix)
        meta = keys.batch(bid).meta
        client: Any = redis_sync.Redis.from_url(valkey_url)
        most_running = most_claimed = 0
        with Workers(env, tmp_path) as workers:
            workers.start("--concurrency", "2", *queue_args)
            deadline = time.monotonic() + 60
            while client.hget(meta, "finished_at") is None:
                most_running = max(most_running, int(client.hget(meta, "running") or 0))
                jobs = client.zrange(keys.queue, 0, -1)
                claims = [ARQ_IN_PROGRESS_PREFIX + j.decode() for j in jobs]
                most_claimed = max(most_claimed, client.exists(*claims) if claims else 0)
                assert time.monotonic() < deadline
                time.sleep(0.02)
        client.close()
        stats = sim_stats(sim)
    assert stats["max_concurrency"]["llama3.2"] == 2  # the slots
    assert stats["max_in_flight"] == in_flight  # the slots and Ollama's queue
    assert (most_running, most_claimed) == (in_flight, in_flight + 1)
    assert wait_done(env, bid)["succeeded"] == n
