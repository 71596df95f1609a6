"""``batchq bench``'s own namespace: a fresh key prefix that no other worker knows.

Workers claim jobs only from their own prefix's queue, so under a prefix made up for one run
(``<prefix>-bench-<random>``) the workers bench starts are the only ones that can take its
items: a worker already serving the same Redis, perhaps against another Ollama, never sees
them. The namespace is removed when bench ends, however it ends.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Collection

from redis.asyncio import Redis

from batchq.errors import BatchqError
from batchq.store.codec import text
from batchq.store.keys import (
    ARQ_IN_PROGRESS_PREFIX,
    ARQ_JOB_PREFIX,
    ARQ_RESULT_PREFIX,
    ARQ_RETRY_PREFIX,
    Keys,
)
from batchq.store.presence import live_workers

__all__ = ["bench_prefix", "drop_namespace", "served_endpoints"]

_ARQ_PREFIXES = (ARQ_JOB_PREFIX, ARQ_IN_PROGRESS_PREFIX, ARQ_RETRY_PREFIX, ARQ_RESULT_PREFIX)


def bench_prefix(prefix: str) -> str:
    """A namespace beside ``prefix`` (not under it: nothing of ``prefix``'s matches it)."""
    return f"{prefix}-bench-{secrets.token_hex(8)}"


async def served_endpoints(redis: Redis, keys: Keys, pids: Collection[int]) -> list[str]:
    """The Ollama endpoints that the namespace's live workers serve, after checking that each
    of them is one of ``pids`` on this host: the workers whose figures bench reports."""
    here = socket.gethostname()
    endpoints: set[str] = set()
    for w in await live_workers(redis, keys):
        if w.pid not in pids or w.host != here:
            raise BatchqError(
                f"worker {w.worker_id}, which bench did not start, joined its namespace "
                f"{keys.prefix}; its figures would not be the named Ollama's"
            )
        endpoints.update(w.endpoints)
    return sorted(endpoints)


async def drop_namespace(redis: Redis, keys: Keys, *, chunk: int = 500) -> int:
    """Delete every key of the namespace, and arq's keys of its jobs; call it once no worker
    serves the namespace any more. Returns how many keys were deleted."""
    # arq's job keys are not under the prefix: the jobs still queued or leased name them (a
    # finished job's are gone with it).
    jobs = set(await redis.zrange(keys.queue, 0, -1)) | set(await redis.zrange(keys.leases, 0, -1))
    names: list[bytes | str] = [p + text(j) for j in jobs for p in _ARQ_PREFIXES]
    names.extend([k async for k in redis.scan_iter(match=f"{keys.prefix}:*", count=1000)])
    deleted = 0
    for i in range(0, len(names), chunk):
        deleted += await redis.unlink(*names[i : i + chunk])
    return deleted
