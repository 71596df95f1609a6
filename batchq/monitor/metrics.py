"""``batchq metrics``: queue-level Prometheus gauges, read from Redis at each scrape.

Nothing is kept between scrapes: every value comes from the batches' O(1) counters, the
workers' heartbeats and arq's queue, so any number of exporters may run, and one that restarts
loses nothing. Per-batch series cover the unfinished batches and the most recent few (so that
a finished batch's final counts are scraped at least once); the totals cover every batch.
Per Ollama host (labelled with its URL, redacted): the model it serves, the models it holds,
its model loads so far, the automatic limit of each model, its workers and requests in flight.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from batchq.monitor.hosts import HostCheck
from batchq.monitor.hosts_view import AutoLimits, HostRow, host_rows
from batchq.store.codec import text
from batchq.store.keys import Keys
from batchq.store.presence import live_workers

__all__ = ["STATUSES", "app", "scrape"]

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "expired")
_FIELDS = ("total", "running", "succeeded", "failed", "cancelled", "expired", "state", "name")
_FIELDS_EXTRA = ("retried", "tokens_in", "tokens_out")
_CHUNK = 1000


class _Families(Collector):
    def __init__(self, families: list[Any]) -> None:
        self._families = families

    def collect(self) -> Iterator[Any]:
        return iter(self._families)


def _counts(raw: list[str]) -> dict[str, int]:
    total, running, succeeded, failed, cancelled, expired = (int(x or 0) for x in raw[:6])
    queued = total - running - succeeded - failed - cancelled - expired
    return {
        "queued": queued,
        "running": running,
        "succeeded": succeeded,
        "failed": failed,
        "cancelled": cancelled,
        "expired": expired,
    }


async def _metas(redis: Redis, keys: Keys, ids: list[str]) -> Iterable[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        async with redis.pipeline(transaction=False) as pipe:
            for bid in chunk:
                pipe.hmget(keys.batch(bid).meta, [*_FIELDS, *_FIELDS_EXTRA])
            rows: list[list[Any]] = await pipe.execute()
        out += [(b, [text(v) for v in row]) for b, row in zip(chunk, rows, strict=True) if row[0]]
    return out


def _host_families(rows: Sequence[HostRow]) -> list[Any]:
    serving = GaugeMetricFamily(
        "batchq_host_serving",
        "Always 1: a model an Ollama host serves now",
        labels=["endpoint", "model"],
    )
    loaded = GaugeMetricFamily(
        "batchq_host_models_loaded",
        "Always 1: a model in an Ollama host's memory (its /api/ps, within seconds)",
        labels=["endpoint", "model"],
    )
    loads = CounterMetricFamily(
        "batchq_host_model_loads",
        "Models an Ollama host was given to serve that it did not hold: each one a model load",
        labels=["endpoint"],
    )
    limits = GaugeMetricFamily(
        "batchq_host_auto_limit",
        "The automatic in-flight limit of a model on an Ollama host",
        labels=["endpoint", "model"],
    )
    workers = GaugeMetricFamily(
        "batchq_host_workers", "Live workers sending to an Ollama host", labels=["endpoint"]
    )
    in_flight = GaugeMetricFamily(
        "batchq_host_in_flight",
        "Requests at an Ollama host, as of its workers' last heartbeats",
        labels=["endpoint"],
    )
    for r in rows:
        for model in r.serving:
            serving.add_metric([r.endpoint, model], 1)
        for model in r.loaded:
            loaded.add_metric([r.endpoint, model], 1)
        if r.loads is not None:
            loads.add_metric([r.endpoint], r.loads)
        for model, limit in r.auto_limits.items():
            limits.add_metric([r.endpoint, model], limit)
        workers.add_metric([r.endpoint], r.workers)
        in_flight.add_metric([r.endpoint], r.in_flight)
    return [serving, loaded, loads, limits, workers, in_flight]


async def scrape(
    redis: Redis, keys: Keys, *, recent: int = 20, auto_limits: AutoLimits | None = None
) -> bytes:
    """The exposition text of every queue-level metric, as Prometheus scrapes it;
    ``auto_limits``: see :func:`~batchq.monitor.hosts_view.host_rows`."""
    ids = [text(b) for b in await redis.zrevrange(keys.batches, 0, -1)]
    open_ids = {text(b) for b in await redis.zrange(keys.open, 0, -1)}
    per_batch = set(ids[:recent]) | open_ids
    queue_jobs = int(await redis.zcard(keys.queue))
    workers = await live_workers(redis, keys)

    items = GaugeMetricFamily("batchq_items", "Items of all batches, by status", labels=["status"])
    batches = GaugeMetricFamily("batchq_batches", "Batches, by state", labels=["state"])
    b_items = GaugeMetricFamily(
        "batchq_batch_items", "Items of one batch, by status", labels=["batch", "status"]
    )
    b_info = GaugeMetricFamily(
        "batchq_batch_info", "Always 1: a batch's state and name", labels=["batch", "state", "name"]
    )
    b_retries = CounterMetricFamily(
        "batchq_batch_retries", "Attempts of a batch's items sent again", labels=["batch"]
    )
    b_tokens_in = CounterMetricFamily(
        "batchq_batch_tokens_in", "Prompt tokens of a batch's succeeded items", labels=["batch"]
    )
    b_tokens_out = CounterMetricFamily(
        "batchq_batch_tokens_out", "Generated tokens of a batch's succeeded items", labels=["batch"]
    )
    totals: Counter[str] = Counter()
    states: Counter[str] = Counter()
    for bid, row in await _metas(redis, keys, ids):
        counts = _counts(row)
        totals.update(counts)
        state, name = row[6], row[7]
        states[state] += 1
        if bid not in per_batch:
            continue
        for status in STATUSES:
            b_items.add_metric([bid, status], counts[status])
        b_info.add_metric([bid, state, name], 1)
        retried, tokens_in, tokens_out = (int(x or 0) for x in row[8:11])
        b_retries.add_metric([bid], retried)
        b_tokens_in.add_metric([bid], tokens_in)
        b_tokens_out.add_metric([bid], tokens_out)
    for status in STATUSES:
        items.add_metric([status], totals[status])
    for state in ("queued", "running", "paused", "completed", "cancelled", "expired"):
        batches.add_metric([state], states[state])

    families: list[Any] = [items, batches, b_items, b_info, b_retries, b_tokens_in, b_tokens_out]
    families += [
        GaugeMetricFamily(
            "batchq_queue_jobs",
            "Jobs in arq's queue: the dispatch window, running jobs included",
            value=queue_jobs,
        ),
        GaugeMetricFamily(
            "batchq_workers_alive", "Workers whose heartbeat is current", value=len(workers)
        ),
        GaugeMetricFamily(
            "batchq_worker_slots",
            "Items the live workers may run at once, together",
            value=sum(w.concurrency for w in workers),
        ),
        GaugeMetricFamily(
            "batchq_workers_in_flight",
            "Items the live workers are running, as of their last heartbeat",
            value=sum(w.in_flight for w in workers),
        ),
    ]
    families += _host_families(await host_rows(redis, keys, workers, auto_limits=auto_limits))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


def app(
    redis: Redis,
    keys: Keys,
    *,
    recent: int = 20,
    hosts: HostCheck | None = None,
    auto_limits: AutoLimits | None = None,
) -> web.Application:
    """``GET /metrics``, for Prometheus; ``hosts``: the Host headers answered (any without)."""

    async def metrics(request: web.Request) -> web.Response:
        body = await scrape(redis, keys, recent=recent, auto_limits=auto_limits)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    application = web.Application(middlewares=[hosts.middleware()] if hosts else [])
    application.router.add_get("/metrics", metrics)
    return application
