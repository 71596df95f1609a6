"""Several backend hosts behind one worker: least-loaded choice among the healthy ones, a host
that fails skipped (for a backoff that grows with its failures) until it recovers, and each
host with its own global limits. Every backend is built by :func:`open_backend`."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Unpack

from redis.asyncio import Redis

from batchq import clock
from batchq.backends.base import Backend, ConnectOptions, ReplyLimits
from batchq.backends.ollama import OllamaClient
from batchq.errors import BackendError
from batchq.settings import Settings
from batchq.store.admission import Admission, endpoint_id
from batchq.store.keys import Keys

__all__ = ["UNHEALTHY_KINDS", "Host", "HostPool", "open_backend"]

# Failures that say something about the host, not the item or the load: skip the host a while.
# (503 busy and 429 mean it is alive and full: the global limits are the tool for that.)
UNHEALTHY_KINDS = frozenset(
    {"unreachable", "connection_error", "server_error", "timeout", "stream_error"}
)
_MAX_DOWN_S = 60.0


def open_backend(url: str, **options: Unpack[ConnectOptions]) -> Backend:
    """The backend at ``url``: the one place that picks the implementation (today every host
    is an Ollama), with the client's defaults for what ``options`` leave out."""
    return OllamaClient(url, **options)


@dataclass(eq=False)
class Host:
    url: str
    backend: Backend
    admission: Admission
    limited: bool = False  # has global limits (re-read every heartbeat)
    in_flight: int = 0
    failures: int = 0
    down_until: float = 0.0  # monotonic seconds
    slots: set[str] = field(default_factory=set)  # admission tokens held
    # The models it serves (batchq.store.models) and the ones it holds (its /api/ps), as this
    # worker last heard (workers.serving).
    models: tuple[str, ...] = ()
    loaded: tuple[str, ...] = ()
    # Its endpoint id, which names it in Redis (batchq.store.admission.endpoint_id): hashed
    # once, not for every item that starts on it.
    eid: str = field(init=False)

    def __post_init__(self) -> None:
        self.eid = endpoint_id(self.url)


class HostPool:
    def __init__(self, settings: Settings, redis: Redis, keys: Keys) -> None:
        self.hosts = [
            Host(
                url=url,
                backend=open_backend(
                    url,
                    timeout=settings.timeout,
                    connect_timeout=settings.connect_timeout,
                    limits=ReplyLimits.of(settings),
                    stream=settings.stream,
                    max_connections=max(settings.worker_concurrency, 1) * 2,
                ),
                admission=Admission(redis, keys, url),
            )
            for url in settings.ollama_hosts
        ]
        self._turn = itertools.count()

    def choose(self, model: str | None = None) -> Host:
        """The least-loaded healthy host (in turn on ties), among those that serve ``model``
        if any does; with none healthy, the one that comes back soonest, so a recovered host
        is noticed."""
        now = clock.monotonic()
        healthy = [h for h in self.hosts if h.down_until <= now]
        if not healthy:
            return min(self.hosts, key=lambda h: h.down_until)
        serving = [h for h in healthy if model in h.models]
        if serving:
            healthy = serving
        turn = next(self._turn)
        n = len(healthy)
        return min(healthy, key=lambda h: (h.in_flight, (healthy.index(h) - turn) % n))

    def succeeded(self, host: Host) -> None:
        host.failures = 0
        host.down_until = 0.0

    def failed(self, host: Host, err: BackendError) -> None:
        if err.kind not in UNHEALTHY_KINDS or len(self.hosts) == 1:
            return
        host.failures += 1
        host.down_until = clock.monotonic() + min(_MAX_DOWN_S, 2.0 ** (host.failures - 1))

    async def refresh(self, lease_until_ms: int) -> None:
        """Heartbeat work: which hosts have global limits; renew the slots held."""
        for h in self.hosts:
            h.limited = await h.admission.active()
            await h.admission.renew(h.slots, lease_until_ms)

    async def aclose(self) -> None:
        for h in self.hosts:
            await h.backend.aclose()
