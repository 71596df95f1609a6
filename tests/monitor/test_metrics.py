"""Prometheus metrics, scraped over HTTP from real processes during a real batch: the
queue-level exporter (``batchq metrics``) and each worker's own (``--metrics-port``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from batchq import clock
from batchq.monitor.metrics import scrape
from batchq.options import SubmitOptions
from batchq.sim.process import SimConfig
from batchq.store.admission import endpoint_id
from batchq.store.batches import BatchStore
from batchq.store.models import Serving
from batchq.store.presence import EndpointFacts
from tests.conftest import free_port
from tests.helpers import (
    items,
    jsonl_prompts,
    publish_worker,
    refused_off_loopback,
    sim_env,
    worker_info,
)
from tests.procs import Workers, batchq, env_for
from tests.waits import wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def get(samples: Samples, metric: str, /, **labels: str) -> float:
    return samples[(metric, tuple(sorted(labels.items())))]


def total(samples: Samples, metric: str, /, **labels: str) -> float:
    """The sum over every series of ``metric`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == metric and want <= set(ls))


def scrape_http(port: int) -> Samples:
    reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    reply.raise_for_status()
    assert reply.headers["content-type"].startswith("text/plain")
    return parse(reply.text)


def wait_http(port: int, proc: subprocess.Popen[Any], timeout: float = 60) -> None:
    def serving() -> bool:
        assert proc.poll() is None, "the server exited"
        return bool(scrape_http(port) is not None)

    wait_until(serving, timeout=timeout, interval=0.1, what="metrics", ignore=(httpx.HTTPError,))


@pytest.fixture
def exporter(valkey_url: str, prefix: str, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    env = env_for(valkey_url, prefix, tmp_path, "http://127.0.0.1:9")
    cmd = [sys.executable, "-m", "batchq", "metrics", "--port", str(port), "--host", "127.0.0.1"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_http(port, proc)
        yield port
    finally:
        proc.terminate()
        assert proc.wait(60) == 0  # SIGTERM is a clean stop


async def test_scrape_counts_every_batch_and_skips_old_ones(store: BatchStore) -> None:
    from batchq.records import Endpoint, Item

    ids = []
    for n in (3, 4, 5):
        items = [Item(str(i), Endpoint.GENERATE, {"model": "m", "prompt": "p"}) for i in range(n)]
        ids.append((await store.submit(items, SubmitOptions(name=f"n{n}")))[0])
    await store.cancel(ids[0])  # final, and the oldest: no per-batch series with recent=1
    await store.redis.hset(store.keys.batch(ids[1]).meta, mapping={"succeeded": 1, "failed": 2})  # type: ignore[misc]
    s = parse((await scrape(store.redis, store.keys, recent=1)).decode())
    assert get(s, "batchq_items", status="cancelled") == 3
    assert get(s, "batchq_items", status="queued") == 1 + 5
    assert get(s, "batchq_items", status="failed") == 2
    assert get(s, "batchq_batches", state="cancelled") == 1
    assert get(s, "batchq_batches", state="queued") == 2
    assert total(s, "batchq_batch_items", batch=ids[0]) == 0  # finished and not recent
    assert get(s, "batchq_batch_items", batch=ids[1], status="failed") == 2  # unfinished
    assert get(s, "batchq_batch_info", batch=ids[2], state="queued", name="n5") == 1
    assert get(s, "batchq_workers_alive") == 0 and get(s, "batchq_queue_jobs") == 0


async def test_scrape_shows_each_ollama_host(store: BatchStore) -> None:
    url = "http://user:s3cret@gpu1:11434"
    await store.submit(items(3, model="llama3.2"))
    await Serving(store.redis, store.keys).pick(
        endpoint_id(url), now_ms=clock.now_ms(), switch_after_ms=60_000, hold_ms=60_000
    )
    odd = 'q"\\\n'  # a model name that needs escaping in the exposition format
    facts = EndpointFacts(["llama3.2"], ["llama3.2", odd], 3)
    other = "http://gpu2:11434"
    w = worker_info("w:1:a", endpoints=[url, other], hosts={url: facts})
    await publish_worker(store, w)

    async def limits(endpoint: str) -> dict[str, int]:
        return {"llama3.2": 4} if endpoint == endpoint_id(url) else {}

    text = (await scrape(store.redis, store.keys, auto_limits=limits)).decode()
    assert "s3cret" not in text
    s = parse(text)
    shown = "http://user:***@gpu1:11434"
    assert get(s, "batchq_host_serving", endpoint=shown, model="llama3.2") == 1
    assert get(s, "batchq_host_models_loaded", endpoint=shown, model="llama3.2") == 1
    assert get(s, "batchq_host_models_loaded", endpoint=shown, model=odd) == 1
    assert get(s, "batchq_host_model_loads_total", endpoint=shown) == 1
    assert get(s, "batchq_host_auto_limit", endpoint=shown, model="llama3.2") == 4
    assert get(s, "batchq_host_workers", endpoint=shown) == 1
    assert get(s, "batchq_host_in_flight", endpoint=shown) == 3
    # A host no model was picked for: its workers, and no loads, models or limits.
    assert get(s, "batchq_host_workers", endpoint=other) == 1
    assert total(s, "batchq_host_serving", endpoint=other) == 0
    assert ("batchq_host_model_loads_total", (("endpoint", other),)) not in s
    assert total(s, "batchq_host_auto_limit", endpoint=other) == 0


@pytest.mark.e2e
def test_metrics_during_a_real_batch(
    valkey_url: str, prefix: str, tmp_path: Path, exporter: int
) -> None:
    n = 200
    sim_config = SimConfig(parallel=4, eval_tokens_per_s=600, fail_503=0.1, seed=11)
    with sim_env(valkey_url, prefix, tmp_path, sim_config) as (sim, env):
        src = jsonl_prompts(tmp_path / "in.jsonl", n - 1)
        ports = [free_port(), free_port()]
        with Workers(env, tmp_path) as workers:
            procs = [workers.start("--concurrency", "3", "--metrics-port", str(p)) for p in ports]
            for port, proc in zip(ports, procs, strict=True):
                wait_http(port, proc)
            # A second worker on a taken port stops at once with a clear error.
            clash = batchq(env, "worker", "--metrics-port", str(ports[0]), check=False)
            assert clash.returncode == 2 and "cannot serve metrics" in clash.stderr

            bid = batchq(env, "submit", str(src)).stdout.strip()
            seen_running = seen_in_flight = False
            deadline = time.monotonic() + 180
            while True:
                q = scrape_http(exporter)
                done = sum(
                    get(q, "batchq_batch_items", batch=bid, status=st)
                    for st in ("succeeded", "failed", "cancelled")
                )
                if 0 < done < n:
                    seen_running = True
                    seen_in_flight |= any(
                        get(scrape_http(p), "batchq_worker_in_flight") > 0 for p in ports
                    )
                if done == n:
                    break
                assert time.monotonic() < deadline, q
                time.sleep(0.05)
            ws = [scrape_http(p) for p in ports]
        sim_503 = sim.stats()["by_status"]["503"]
    assert seen_running and seen_in_flight

    # The queue-level view, once the batch is final.
    assert get(q, "batchq_batch_items", batch=bid, status="succeeded") == n - 1
    assert get(q, "batchq_batch_items", batch=bid, status="failed") == 1
    assert get(q, "batchq_batch_items", batch=bid, status="queued") == 0
    assert get(q, "batchq_batch_info", batch=bid, state="completed", name="in.jsonl") == 1
    assert get(q, "batchq_items", status="succeeded") == n - 1
    assert get(q, "batchq_batches", state="completed") == 1
    assert get(q, "batchq_workers_alive") == 2 and get(q, "batchq_worker_slots") == 8  # 2 x (3 + 1)
    assert get(q, "batchq_batch_retries_total", batch=bid) == sim_503 > 0
    results = [json.loads(x) for x in batchq(env, "results", bid).stdout.splitlines()]
    tokens_out = sum(r["metrics"]["eval_count"] for r in results if r["metrics"])
    tokens_in = sum(r["metrics"]["prompt_eval_count"] for r in results if r["metrics"])
    assert get(q, "batchq_batch_tokens_out_total", batch=bid) == tokens_out > 0
    assert get(q, "batchq_batch_tokens_in_total", batch=bid) == tokens_in > 0

    # Each worker's own, added up: every request, success, error and retry counted once.
    def both(metric: str, /, **labels: str) -> float:
        return sum(total(w, metric, **labels) for w in ws)

    assert both("batchq_worker_items_total", status="succeeded") == n - 1
    assert both("batchq_worker_items_total", status="failed") == 1
    assert both("batchq_worker_request_seconds_count") == n + sim_503
    assert both("batchq_worker_request_seconds_bucket", le="+Inf") == n + sim_503
    assert 0 < both("batchq_worker_request_seconds_sum") < 60
    assert both("batchq_worker_retries_total", kind="server_busy") == sim_503
    assert both("batchq_worker_errors_total", kind="server_busy") == sim_503
    assert both("batchq_worker_errors_total", kind="model_not_found") == 1
    assert both("batchq_worker_tokens_out_total") == tokens_out
    assert both("batchq_worker_tokens_in_total") == tokens_in
    # Concurrency 3 and one request in Ollama's queue each.
    assert all(get(w, "batchq_worker_concurrency") == 4 for w in ws)
    assert all(get(w, "process_resident_memory_bytes") > 0 for w in ws)
    endpoints = {dict(ls).get("endpoint") for w in ws for (name, ls) in w if "request" in name}
    assert endpoints == {sim.url}

    # Every metric either endpoint exposes is documented.
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    names = {name for samples in (q, *ws) for (name, _) in samples if name.startswith("batchq_")}
    for name in names:
        for suffix in ("_bucket", "_count", "_sum"):
            if "request_seconds" in name:
                name = name.removesuffix(suffix)
        assert f"`{name}`" in readme, name


def test_metrics_listens_on_loopback_and_checks_the_host(
    valkey_url: str, prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    env = env_for(valkey_url, prefix, tmp_path, "http://127.0.0.1:9")
    cmd = [sys.executable, "-m", "batchq", "metrics", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_http(port, proc)
        assert refused_off_loopback(port)
        forged = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Host": "evil.example"})
        assert forged.status_code == 421 and "batchq_" not in forged.text
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert f"Prometheus metrics on http://127.0.0.1:{port}/" in err
