"""Background duties every worker shares with the others, beside running items: expiring
batches past their deadline. Each step is an idempotent script, so any number of workers may
do it at once and a worker that dies half-way leaves nothing to undo."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from batchq.deadlines import expire_due

if TYPE_CHECKING:
    from .inference import WorkerState

__all__ = ["expiry_loop", "start_housekeeping"]

log = logging.getLogger("batchq.worker")


def start_housekeeping(st: WorkerState) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(expiry_loop(st))]


async def expiry_loop(st: WorkerState) -> None:
    while True:
        await asyncio.sleep(st.settings.heartbeat)
        try:
            for batch_id in await expire_due(st.store):
                log.info("batch %s: deadline passed; items not started are expired", batch_id)
        except RedisError as e:
            log.warning("expiring batches failed: %s", e)
