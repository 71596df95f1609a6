"""What one worker process holds while it runs, shared by the job, the lifecycle hooks and the
housekeeping loops: its id, its connections to Redis and Ollama, its slots, its counts. Apart
from them so that each imports it and none imports another for its types.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from dataclasses import dataclass, field
from typing import TypedDict

from redis.asyncio import Redis

from batchq.backends.pool import HostPool
from batchq.pacing import RateLimiter
from batchq.settings import Settings
from batchq.store.batches import BatchStore
from batchq.store.dispatch import Dispatcher
from batchq.store.keys import Keys
from batchq.store.models import Serving
from workers.autoconc import AutoGates
from workers.embed_groups import EmbedGroups
from workers.serving import HostModels
from workers.stats import WorkerStats

__all__ = ["WorkerContext", "WorkerState"]


@dataclass
class WorkerState:
    settings: Settings
    redis: Redis
    worker_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
    )
    running: set[str] = field(default_factory=set)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Set when a job ends: the dispatch loop refills the window without the job waiting for it.
    dispatch_wanted: asyncio.Event = field(default_factory=asyncio.Event)
    # Requests to Ollama in flight (the concurrency plus Ollama's queue), while arq may run
    # a few more jobs.
    ollama_slots: asyncio.Semaphore = field(init=False)
    waiting: set[str] = field(default_factory=set)  # claimed jobs waiting for a slot
    # When SIGTERM came (clock.monotonic()): the grace counts from it; None until then.
    stop_began: float | None = None
    # Jobs whose arq keys the finish script already removed (see BatchqWorker.finish_job).
    retired: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.ollama_slots = asyncio.Semaphore(self.settings.max_in_flight)
        self.keys = Keys(self.settings.prefix)
        self.store = BatchStore(self.redis, self.keys)
        self.scripts = self.store.scripts
        self.dispatcher = Dispatcher(self.scripts, self.settings)
        self.limiter = RateLimiter(self.settings.rate)
        self.hosts = HostPool(self.settings, self.redis, self.keys)
        self.models = HostModels(self.settings, self.hosts, Serving(self.redis, self.keys))
        self.stats = WorkerStats(
            self.worker_id, self.settings, self.running, self.hosts.hosts, self.base_slots
        )
        # --concurrency auto: the shared self-tuned limits (None: the fixed ollama_slots only).
        self.auto: AutoGates | None = None
        if self.settings.auto_concurrency:
            self.auto = AutoGates(self.settings, self.redis, self.keys, self.lease_ms)
        self.embed = EmbedGroups(
            self.settings, self.redis, self.keys, self.worker_id, base_slots=self.base_slots
        )

    def base_slots(self) -> int:
        """The slots this worker counts for in the dispatch window: under ``--concurrency
        auto`` its share of the shared self-tuned limits, not its ceiling; else its requests in
        flight. (Embeddings multiply it while they run: workers.embed_groups.)"""
        if self.auto is not None:
            # As the last heartbeat measured it: reading it anew starts a new measure.
            return self.auto.last_registered or self.auto.registered_slots()
        return self.settings.max_in_flight

    @property
    def draining(self) -> bool:
        """Told to stop: start no more requests."""
        return self.stop_began is not None

    @property
    def lease_ms(self) -> int:
        return int(self.settings.heartbeat * 3 * 1000)

    @property
    def claim_ttl_ms(self) -> int:
        """The TTL arq gives a claim (its in-progress key): the longest job timeout + 10 s."""
        return int((self.settings.job_timeout + 10) * 1000)


class WorkerContext(TypedDict, total=False):
    """What arq hands a job: its own keys plus the ``batchq`` state set up at startup."""

    redis: Redis
    job_id: str
    job_try: int
    score: int
    model: str  # the model the job's item names ('' if not known: see batchq.store.models)
    batchq: WorkerState
