"""The Ollama hosts as ``batchq top``, ``batchq status``, the web page and the metrics show
them: per host, the model it serves now, the models it holds in memory, how many models it
has loaded so far (each one a swap, :mod:`batchq.store.models`), the current automatic
in-flight limit of each model, its workers and their requests in flight.

Read, never kept: the workers' heartbeats (each says, per endpoint URL, what it last heard of
that host: :class:`~batchq.store.presence.EndpointFacts`) and the ``serving`` hash that all
workers of a host share (its loads). A host appears while a live worker talks to it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

from batchq.redact import redact_url
from batchq.store.admission import endpoint_id
from batchq.store.autolimit import read_auto_limits
from batchq.store.keys import Keys
from batchq.store.models import Serving
from batchq.store.presence import EndpointFacts, WorkerInfo, live_workers

__all__ = ["AutoLimits", "HostRow", "auto_limits_source", "host_rows", "no_auto_limits"]

# The current automatic in-flight limit of each model on a host, given the host's endpoint id
# (:func:`batchq.store.admission.endpoint_id`): {model: limit}; {} while it has none.
AutoLimits = Callable[[str], Awaitable[Mapping[str, int]]]


async def no_auto_limits(endpoint: str) -> dict[str, int]:
    return {}


def auto_limits_source(redis: Redis, keys: Keys) -> AutoLimits:
    """Where every view reads the automatic limits from, by default: ``--concurrency auto``'s
    shared limits (batchq.store.autolimit), the requests each admits at once."""

    async def limits(endpoint: str) -> dict[str, int]:
        return {
            s.model: s.slots
            for s in await read_auto_limits(redis, keys)
            if endpoint_id(s.endpoint) == endpoint
        }

    return limits


@dataclass(frozen=True, slots=True)
class HostRow:
    endpoint: str  # its URL, redacted: it may carry a token
    endpoint_id: str
    serving: list[str]  # the models it serves now (one, unless it holds several at once)
    loaded: list[str]  # the models in its memory, as its /api/ps said (within seconds)
    loads: int | None  # models loaded so far; None while no worker has picked one for it
    auto_limits: dict[str, int] = field(default_factory=dict)  # by model
    workers: int = 0
    in_flight: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def host_rows(
    redis: Redis,
    keys: Keys,
    workers: Sequence[WorkerInfo] | None = None,
    *,
    auto_limits: AutoLimits | None = None,
) -> list[HostRow]:
    """A row per Ollama host of the live workers (``workers``, if the caller has read them
    already), ordered by its shown URL. ``auto_limits``: by default
    :func:`auto_limits_source`."""
    if workers is None:
        workers = await live_workers(redis, keys)
    limits_of = auto_limits or auto_limits_source(redis, keys)
    served = await Serving(redis, keys).served()
    by_url: dict[str, list[WorkerInfo]] = {}
    for w in workers:
        for url in dict.fromkeys(w.endpoints):
            by_url.setdefault(url, []).append(w)
    rows = []
    for url, ws in by_url.items():
        eid = endpoint_id(url)
        said = served.get(eid)
        facts = [(w.seen_at, w.hosts[url]) for w in ws if url in w.hosts]
        # The latest heartbeat's word: each worker re-reads /api/ps on its own schedule.
        latest = max(facts, key=lambda f: f[0])[1] if facts else EndpointFacts()
        serving = latest.serving
        if not facts and said is not None and said.model:
            serving = [said.model]  # workers of a version that does not say: the shared word
        rows.append(
            HostRow(
                endpoint=redact_url(url),
                endpoint_id=eid,
                serving=list(serving),
                loaded=list(latest.loaded),
                loads=None if said is None else said.loads,
                auto_limits=dict(await limits_of(eid)),
                workers=len(ws),
                in_flight=sum(f.in_flight for _, f in facts),
            )
        )
    return sorted(rows, key=lambda r: (r.endpoint, r.endpoint_id))
