"""What a worker counts about itself. Counting is in memory (never a Redis call per item); the
heartbeat publishes it as the worker's :class:`~batchq.store.presence.WorkerInfo`, and with
``--metrics-port`` the same counts (and a latency histogram) are served to Prometheus.

Each worker has its own registry rather than prometheus_client's global one, so that several
workers in one process (tests, embedding) never collide.
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client import (
    Counter as PromCounter,
)
from redis.asyncio.client import Pipeline

from batchq import clock
from batchq.backends.pool import Host
from batchq.errors import ConfigError
from batchq.monitor.hosts import HostCheck
from batchq.records import tokens_of
from batchq.settings import Settings
from batchq.store.keys import parse_job_id
from batchq.store.presence import EndpointFacts, WorkerInfo

__all__ = ["LATENCY_BUCKETS", "WorkerStats"]

# A long Ollama message (a stack trace, an HTML error page) is cut to this in the worker hash.
_MAX_ERROR_CHARS = 300

# LLM requests run from tens of milliseconds (a cached short answer) to minutes.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class WorkerStats:
    def __init__(
        self,
        worker_id: str,
        settings: Settings,
        running: set[str],
        hosts: Sequence[Host] = (),
        slots: Callable[[], int] | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.settings = settings
        # The requests it may have at Ollama now: under --concurrency auto its share of the
        # shared limits, which moves; else its fixed concurrency plus Ollama queue.
        self.slots = slots or (lambda: settings.max_in_flight)
        self._running = running  # the worker's own set of running job ids, read when published
        self._hosts = hosts  # the worker's Ollama hosts, whose models are read when published
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started_at = clock.now_ms()
        self.succeeded = 0
        self.failed = 0
        self.retried = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self.last_error = ""
        self.last_error_at = 0
        self._server: Any = None
        self._thread: Any = None

        self.registry = r = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self._latency = Histogram(
            "batchq_worker_request_seconds",
            "Time of each request to Ollama until its reply ended or failed, by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._items = PromCounter(
            "batchq_worker_items",
            "Items this worker made final, by status (succeeded, failed)",
            ["status"],
            registry=r,
        )
        self._tokens_in = PromCounter(
            "batchq_worker_tokens_in", "Prompt tokens of succeeded items", registry=r
        )
        self._tokens_out = PromCounter(
            "batchq_worker_tokens_out", "Generated tokens of succeeded items", registry=r
        )
        self._retries = PromCounter(
            "batchq_worker_retries", "Attempts scheduled again, by error kind", ["kind"], registry=r
        )
        self._errors = PromCounter(
            "batchq_worker_errors",
            "Errors met, retried or final, by kind (error.type of the results)",
            ["kind"],
            registry=r,
        )
        Gauge(
            "batchq_worker_in_flight", "Items this worker is running now", registry=r
        ).set_function(lambda: len(running))
        Gauge(
            "batchq_worker_concurrency",
            "Requests this worker may have at Ollama at once (concurrency + Ollama queue)",
            registry=r,
        ).set_function(lambda: self.slots())

    def request_done(self, endpoint: str, seconds: float) -> None:
        self._latency.labels(endpoint).observe(seconds)

    def item_succeeded(self, metrics: dict[str, Any]) -> tuple[int, int]:
        """Count a success; returns its (prompt, output) tokens for the batch's counters."""
        tokens = tokens_of(metrics)
        self.succeeded += 1
        self.tokens_in += tokens[0]
        self.tokens_out += tokens[1]
        self._items.labels("succeeded").inc()
        self._tokens_in.inc(tokens[0])
        self._tokens_out.inc(tokens[1])
        return tokens

    def item_failed(self, kind: str, message: str) -> None:
        self.failed += 1
        self._items.labels("failed").inc()
        self._error(kind, message)

    def retrying(self, kind: str, message: str) -> None:
        self.retried += 1
        self._retries.labels(kind).inc()
        self._error(kind, message)

    def _error(self, kind: str, message: str) -> None:
        self._errors.labels(kind).inc()
        self.last_error = f"{kind}: {message}"[:_MAX_ERROR_CHARS]
        self.last_error_at = clock.now_ms()

    def serve(self) -> int | None:
        """Serve ``/metrics`` on ``settings.metrics_port`` (if set) from a thread, so that a
        scrape is answered even while the event loop is busy; returns the bound port."""
        port = self.settings.metrics_port
        if port is None:
            return None
        host = self.settings.metrics_host
        # A *_created series beside every counter doubles the output for nothing a dashboard
        # uses; this process is a worker, so the process-wide switch is ours to turn.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        try:
            self._server, self._thread = start_http_server(port, host, registry=self.registry)
        except OSError as e:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {e.strerror}") from None
        hosts = HostCheck.for_listen(host, self.settings.allowed_host_names)
        if hosts.loopback:
            # Against DNS rebinding (see batchq.monitor.hosts); in place before any scrape can
            # have been sent, the server having just begun to listen.
            self._server.set_app(hosts.wsgi(self._server.get_app()))
        return int(self._server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    def info(self) -> WorkerInfo:
        running = Counter(parse_job_id(jid)[0] for jid in self._running)
        return WorkerInfo(
            worker_id=self.worker_id,
            host=self.host,
            pid=self.pid,
            endpoints=self.settings.ollama_hosts,
            concurrency=self.slots(),
            running=dict(running),
            succeeded=self.succeeded,
            failed=self.failed,
            retried=self.retried,
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            last_error=self.last_error,
            last_error_at=self.last_error_at,
            hosts={
                h.url: EndpointFacts.bounded(h.models, h.loaded, h.in_flight) for h in self._hosts
            },
            started_at=self.started_at,
            seen_at=clock.now_ms(),
        )

    def publish(self, pipe: Pipeline, key: str, ttl_ms: int) -> None:
        """Queue the writes of the worker's hash on the heartbeat's pipeline."""
        pipe.hset(key, mapping=self.info().to_mapping())
        pipe.pexpire(key, ttl_ms)
