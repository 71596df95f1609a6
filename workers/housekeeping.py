"""Background duties every worker shares with the others, beside running items: repairing
batches that stopped making progress, expiring batches past their deadline, and sending
completion hooks. Each step is an atomic script, so any number of workers may do it at once
and a worker that dies half-way leaves nothing to undo (see :mod:`batchq.store.deadlines` and
:mod:`batchq.store.hooks`; the hooks' POST is :mod:`workers.notify`'s)."""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from batchq import clock
from batchq.errors import BatchNotFound
from batchq.store.deadlines import expire_due
from batchq.store.hooks import Hooks
from workers.hook_http import hook_session
from workers.notify import deliver_due
from workers.state import WorkerState

__all__ = ["expiry_loop", "hooks_loop", "repair_idle_batches", "start_housekeeping"]

log = logging.getLogger("batchq.worker")


async def repair_idle_batches(st: WorkerState) -> int:
    """Repair batches that made no progress for ``repair_after`` seconds, so that no batch can
    hang at 99.9 % because some job was lost. One worker at a time does it (a lock key)."""
    idle_ms = int(st.settings.repair_after * 1000)
    store = st.store
    batches = await store.idle_batches(idle_ms)
    if not batches:
        return 0
    if not await st.redis.set(st.keys.repair_lock, st.worker_id, nx=True, px=idle_ms):
        return 0
    found = 0
    for batch_id in batches:
        # Marked as progress, so the same batch is looked at again only after another idle spell.
        await st.redis.zadd(st.keys.open, {batch_id: clock.now_ms()}, xx=True)
        try:
            n = await store.repair(batch_id)
        except BatchNotFound:
            await st.redis.zrem(st.keys.open, batch_id)
            continue
        if n:
            log.warning("batch %s was idle; re-queued %d lost item(s)", batch_id, n)
        found += n
    return found


def start_housekeeping(st: WorkerState) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(expiry_loop(st)), asyncio.create_task(hooks_loop(st))]


async def expiry_loop(st: WorkerState) -> None:
    while True:
        await asyncio.sleep(st.settings.heartbeat)
        try:
            for batch_id in await expire_due(st.store):
                log.info("batch %s: deadline passed; items not started are expired", batch_id)
        except RedisError as e:
            log.warning("expiring batches failed: %s", e)


# A finished batch is announced within about this long.
_HOOK_POLL_S = 1.0


async def hooks_loop(st: WorkerState) -> None:
    hooks = Hooks(st.redis, st.store)
    async with hook_session(st.settings) as client:
        while True:
            try:
                await deliver_due(hooks, client, st.settings, stop_began=lambda: st.stop_began)
            except RedisError as e:
                log.warning("sending completion hooks failed: %s", e)
            await asyncio.sleep(min(st.settings.heartbeat, _HOOK_POLL_S))
