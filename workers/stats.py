"""What a worker counts about itself. Counting is in memory (never a Redis call per item); the
heartbeat publishes it as the worker's :class:`~batchq.presence.WorkerInfo`."""

from __future__ import annotations

import os
import socket
from collections import Counter
from typing import Any

from redis.asyncio.client import Pipeline

from batchq import clock
from batchq.keys import parse_job_id
from batchq.presence import WorkerInfo
from batchq.settings import Settings

__all__ = ["WorkerStats", "tokens_of"]

# A long Ollama message (a stack trace, an HTML error page) is cut to this in the worker hash.
_MAX_ERROR_CHARS = 300


def tokens_of(metrics: dict[str, Any]) -> tuple[int, int]:
    """(prompt, output) tokens of one reply, from Ollama's final chunk."""
    return int(metrics.get("prompt_eval_count") or 0), int(metrics.get("eval_count") or 0)


class WorkerStats:
    def __init__(self, worker_id: str, settings: Settings, running: set[str]) -> None:
        self.worker_id = worker_id
        self.settings = settings
        self._running = running  # the worker's own set of running job ids, read when published
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

    def item_succeeded(self, metrics: dict[str, Any]) -> tuple[int, int]:
        """Count a success; returns its (prompt, output) tokens for the batch's counters."""
        tokens = tokens_of(metrics)
        self.succeeded += 1
        self.tokens_in += tokens[0]
        self.tokens_out += tokens[1]
        return tokens

    def item_failed(self, kind: str, message: str) -> None:
        self.failed += 1
        self._error(kind, message)

    def retrying(self, kind: str, message: str) -> None:
        self.retried += 1
        self._error(kind, message)

    def _error(self, kind: str, message: str) -> None:
        self.last_error = f"{kind}: {message}"[:_MAX_ERROR_CHARS]
        self.last_error_at = clock.now_ms()

    def info(self) -> WorkerInfo:
        running = Counter(parse_job_id(jid)[0] for jid in self._running)
        return WorkerInfo(
            worker_id=self.worker_id,
            host=self.host,
            pid=self.pid,
            endpoints=self.settings.ollama_hosts,
            concurrency=self.settings.concurrency,
            running=dict(running),
            succeeded=self.succeeded,
            failed=self.failed,
            retried=self.retried,
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            last_error=self.last_error,
            last_error_at=self.last_error_at,
            started_at=self.started_at,
            seen_at=clock.now_ms(),
        )

    def publish(self, pipe: Pipeline, key: str, ttl_ms: int) -> None:
        """Queue the writes of the worker's hash on the heartbeat's pipeline."""
        pipe.hset(key, mapping=self.info().to_mapping())
        pipe.pexpire(key, ttl_ms)
