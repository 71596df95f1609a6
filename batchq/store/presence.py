"""What each live worker says about itself: a small hash it rewrites on every heartbeat (never
per item), read by ``batchq top``, ``batchq status --watch``, ``batchq metrics`` and
``batchq serve``.

The hash expires a few heartbeats after the worker stops renewing it, so a SIGKILLed worker
disappears by itself; the ``workers`` sorted set, whose deadlines the heartbeat also renews,
says which workers are alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

from batchq import clock
from batchq.store.codec import text
from batchq.store.keys import Keys

__all__ = [
    "NO_WORKERS_AFTER_S",
    "NO_WORKERS_NOTICE",
    "EndpointFacts",
    "WorkerAbsence",
    "WorkerInfo",
    "live_workers",
    "notice_without_workers",
]

# How long a command that waits on workers sees none before it says so: long enough for
# workers started together with it to send their first heartbeat.
NO_WORKERS_AFTER_S = 5.0
NO_WORKERS_NOTICE = "no live workers: start `batchq worker`"

# Bounds on what a worker says of its Ollama hosts (model names come from Ollama's /api/ps):
# the hash is read whole by every `top` and scrape.
MAX_ENDPOINTS = 64
MAX_MODELS = 32
MAX_MODEL_CHARS = 200


@dataclass(frozen=True, slots=True)
class EndpointFacts:
    """What a worker last heard of one Ollama host: the models it serves now
    (:mod:`batchq.store.models`), the ones it holds in memory (its ``/api/ps``), and this
    worker's requests to it in flight."""

    serving: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    in_flight: int = 0

    @classmethod
    def bounded(
        cls, serving: Iterable[str], loaded: Iterable[str], in_flight: int
    ) -> EndpointFacts:
        return cls(_models(serving), _models(loaded), max(0, int(in_flight)))

    @classmethod
    def from_json(cls, raw: Any) -> EndpointFacts | None:
        """None for what is not such a record (a worker of another version)."""
        if not isinstance(raw, dict):
            return None
        serving, loaded = raw.get("serving"), raw.get("loaded")
        if not isinstance(serving, list) or not isinstance(loaded, list):
            return None
        n = raw.get("in_flight", 0)
        return cls.bounded(
            (m for m in serving if isinstance(m, str)),
            (m for m in loaded if isinstance(m, str)),
            n if isinstance(n, int) else 0,
        )


def _models(names: Iterable[str]) -> list[str]:
    return [m[:MAX_MODEL_CHARS] for m in itertools.islice(names, MAX_MODELS)]


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    worker_id: str
    host: str = ""
    pid: int = 0
    endpoints: list[str] = field(default_factory=list)
    concurrency: int = 0
    # Items of each batch this worker is running now.
    running: dict[str, int] = field(default_factory=dict)
    # Since the worker started.
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    last_error: str = ""
    last_error_at: int = 0  # epoch ms; 0: none yet
    # By endpoint URL, as in ``endpoints``.
    hosts: dict[str, EndpointFacts] = field(default_factory=dict)
    started_at: int = 0
    seen_at: int = 0  # epoch ms of the heartbeat that wrote this

    @property
    def in_flight(self) -> int:
        return sum(self.running.values())

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    def to_mapping(self) -> dict[str, str]:
        d = asdict(self)
        d["endpoints"] = ",".join(self.endpoints)
        d["running"] = json.dumps(self.running, separators=(",", ":"))
        d["hosts"] = json.dumps(d["hosts"], separators=(",", ":"))
        return {k: str(v) for k, v in d.items()}

    @classmethod
    def from_mapping(cls, worker_id: str, raw: dict[str, str]) -> WorkerInfo:
        """Missing or unreadable fields keep their defaults: a worker of another version, or
        one whose hash expired between the two reads, still shows up."""
        values: dict[str, Any] = {}
        for f in _INT_FIELDS:
            values[f] = _int(raw.get(f))
        try:
            running = json.loads(raw.get("running") or "{}")
            values["running"] = {str(k): int(v) for k, v in running.items()}
        except (ValueError, TypeError, AttributeError):
            values["running"] = {}
        values["hosts"] = _hosts(raw.get("hosts"))
        endpoints = raw.get("endpoints") or ""
        return cls(
            worker_id=worker_id,
            host=raw.get("host", ""),
            endpoints=endpoints.split(",") if endpoints else [],
            last_error=raw.get("last_error", ""),
            **values,
        )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["in_flight"] = self.in_flight
        return d


_INT_FIELDS = (
    "pid",
    "concurrency",
    "succeeded",
    "failed",
    "retried",
    "tokens_in",
    "tokens_out",
    "last_error_at",
    "started_at",
    "seen_at",
)


def _hosts(raw: str | None) -> dict[str, EndpointFacts]:
    try:
        parsed = json.loads(raw or "{}")
    except ValueError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    out = {}
    for url, value in itertools.islice(parsed.items(), MAX_ENDPOINTS):
        facts = EndpointFacts.from_json(value)
        if facts is not None:
            out[str(url)] = facts
    return out


def _int(v: str | None) -> int:
    try:
        return int(v or 0)
    except ValueError:
        return 0


async def live_workers(redis: Redis, keys: Keys) -> list[WorkerInfo]:
    """Workers whose heartbeat deadline has not passed, ordered by host and id."""
    ids = [text(w) for w in await redis.zrangebyscore(keys.workers, clock.now_ms(), "+inf")]
    async with redis.pipeline(transaction=False) as pipe:
        for w in ids:
            pipe.hgetall(keys.worker_info(w))
        raws: list[dict[Any, Any]] = await pipe.execute()
    infos = [
        WorkerInfo.from_mapping(w, {text(k): text(v) for k, v in raw.items()})
        for w, raw in zip(ids, raws, strict=True)
    ]
    return sorted(infos, key=lambda i: (i.host, i.worker_id))


class WorkerAbsence:
    """Whether no worker has been live for ``after`` seconds, from samples of the live
    workers; a live worker starts the count again."""

    def __init__(self, after: float = NO_WORKERS_AFTER_S) -> None:
        self.after = after
        self._since: float | None = None

    def update(self, live: int, now: float) -> bool:
        """``live`` workers seen at ``now`` (monotonic seconds): True when the notice is due."""
        if live:
            self._since = None
            return False
        if self._since is None:
            self._since = now
        return now - self._since >= self.after


@contextlib.asynccontextmanager
async def notice_without_workers(
    redis: Redis,
    keys: Keys,
    emit: Callable[[str], None] | None = None,
    *,
    after: float = NO_WORKERS_AFTER_S,
    poll: float = 1.0,
) -> AsyncIterator[None]:
    """While the body waits on workers, ``emit`` :data:`NO_WORKERS_NOTICE` once no worker has
    been live for ``after`` seconds; once only, until a worker is live and then gone again.
    By default the notice goes to stderr, away from what the command prints on stdout."""
    say = emit or _to_stderr

    async def run() -> None:
        absence = WorkerAbsence(after)
        said = False
        while True:
            live = len(await live_workers(redis, keys))
            if absence.update(live, clock.monotonic()):
                if not said:
                    say(NO_WORKERS_NOTICE)
                    said = True
            elif live:
                said = False
            await asyncio.sleep(poll)

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        task.cancel()
        # The notice is advice: its own failure (Redis gone) is the body's to report.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def _to_stderr(text: str) -> None:
    print(f"batchq: {text}; still waiting", file=sys.stderr, flush=True)
