"""The worker's life around its jobs: arq's startup and shutdown hooks, the refill after each
job, and the background loops every worker runs (the heartbeat with its reaping, the dispatch of
the next window, and the housekeeping of :mod:`workers.housekeeping`).

Apart from :mod:`workers.inference` because the job needs none of it: the job runs on the
:class:`~workers.state.WorkerState` these hooks set up and tear down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.exceptions import RedisError

from batchq import clock
from batchq.errors import BackendError
from batchq.settings import Settings
from batchq.store.connection import follow_master
from batchq.store.keys import ARQ_IN_PROGRESS_PREFIX
from workers.housekeeping import repair_idle_batches, start_housekeeping
from workers.state import WorkerState

__all__ = ["after_job_end", "shutdown", "startup_hook"]

log = logging.getLogger("batchq.worker")

# Worth a line in the log: the leases are unaffected, but the machine's own logs are not.
_SKEW_WARN_MS = 2_000


def startup_hook(settings: Settings) -> Any:
    async def startup(ctx: dict[str, Any]) -> None:
        # Before anything is stamped or leased: every time this worker writes is the server's.
        offset = await clock.sync(ctx["redis"])
        if abs(offset) > _SKEW_WARN_MS:
            log.warning(
                "this machine's clock is %.1f s %s the Redis server's; batchq uses the server's",
                abs(offset) / 1000,
                "behind" if offset > 0 else "ahead of",
            )
        st = WorkerState(settings=settings, redis=ctx["redis"])
        ctx["batchq"] = st
        port = st.stats.serve()
        if port is not None:
            log.info("worker %s: metrics on port %d", st.worker_id, port)
        for host in st.hosts.hosts:
            limits = (settings.global_rate, settings.global_concurrency, settings.global_tpm)
            if any(x is not None for x in limits):
                await host.admission.configure(
                    rate=settings.global_rate,
                    concurrency=settings.global_concurrency,
                    tokens_per_minute=settings.global_tpm,
                )
        await _heartbeat_once(st)
        st.tasks.append(asyncio.create_task(_heartbeat_loop(st)))
        st.tasks.append(asyncio.create_task(_reap_loop(st)))
        st.tasks.append(asyncio.create_task(_dispatch_loop(st)))
        st.tasks.append(asyncio.create_task(st.models.watch_loaded()))
        st.tasks.extend(start_housekeeping(st))
        for host in st.hosts.hosts:
            try:
                version = await host.backend.version()
                log.info("worker %s: Ollama %s at %s", st.worker_id, version, host.url)
            except BackendError as e:
                # Not fatal: items wait and retry until Ollama comes up.
                log.warning("worker %s: %s", st.worker_id, e)

    return startup


async def shutdown(ctx: dict[str, Any]) -> None:
    st: WorkerState | None = ctx.get("batchq")
    if st is None:
        return
    for t in st.tasks:
        t.cancel()
    for t in st.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t
    with contextlib.suppress(RedisError):
        async with st.redis.pipeline(transaction=True) as tx:
            tx.zrem(st.keys.workers, st.worker_id)
            tx.hdel(st.keys.worker_slots, st.worker_id)
            tx.delete(st.keys.worker_info(st.worker_id))
            await tx.execute()
    await st.hosts.aclose()
    st.stats.close()


async def after_job_end(ctx: dict[str, Any]) -> None:
    # Refill the window now rather than on the next tick, to keep Ollama's slots full; but in
    # the dispatch loop, so the slot this job frees is not held up by it (and bursts of job
    # ends coalesce into one dispatch).
    st: WorkerState = ctx["batchq"]
    st.dispatch_wanted.set()


async def _heartbeat_once(st: WorkerState) -> None:
    await st.hosts.refresh(clock.now_ms() + st.lease_ms)
    if st.auto is not None:
        await st.auto.renew(clock.now_ms() + st.lease_ms)
        # The window follows this worker's share of the shared limits, not its ceiling:
        # measured once a heartbeat (st.base_slots reads it; embeddings multiply it).
        st.auto.registered_slots()
    now = clock.now_ms()
    async with st.redis.pipeline(transaction=False) as pipe:
        pipe.zadd(st.keys.workers, {st.worker_id: now + st.lease_ms})
        pipe.hset(st.keys.worker_slots, st.worker_id, str(st.embed.registered_slots))
        if st.waiting:
            # Claimed jobs waiting for a slot have no lease yet: keep their claims fresh, or
            # the reaper would take them for the claims of a dead worker.
            for jid in st.waiting:
                pipe.pexpire(ARQ_IN_PROGRESS_PREFIX + jid, st.claim_ttl_ms)
        st.stats.publish(pipe, st.keys.worker_info(st.worker_id), ttl_ms=st.lease_ms)
        if st.running:
            deadline = dict.fromkeys(st.running, now + st.lease_ms)
            pipe.zadd(st.keys.leases, deadline, xx=True)
            # Keep long requests out of every worker's polls (see the start script).
            pipe.zadd(st.keys.queue, deadline, xx=True, gt=True)
        await pipe.execute()


# arq's own log has two lines per job, which at hundreds of items a second is noise (and
# costs CPU); ``batchq worker`` silences it unless verbose and logs this summary instead.
_PROGRESS_LOG_S = 60.0


async def _heartbeat_loop(st: WorkerState) -> None:
    logged_at, logged_n = clock.monotonic(), 0
    while True:
        await asyncio.sleep(st.settings.heartbeat)
        now = clock.monotonic()
        done = st.stats.succeeded + st.stats.failed  # items this worker made final
        if now - logged_at >= _PROGRESS_LOG_S and done != logged_n:
            n = done - logged_n
            log.info(
                "finished %d item(s) in %.0f s (%.1f/s)", n, now - logged_at, n / (now - logged_at)
            )
            logged_at, logged_n = now, done
        try:
            if await follow_master(st.redis):
                log.warning("the sentinels name another Redis master; moving to it")
            # Again each beat: this machine's clock may be stepped or drift while it runs.
            await clock.sync(st.redis)
            await _heartbeat_once(st)
            await repair_idle_batches(st)
        except RedisError as e:
            log.warning("heartbeat failed: %s", e)


async def _reap_loop(st: WorkerState) -> None:
    """Re-queue the items of dead workers the moment their first lease lapses, not at the next
    heartbeat after it: a SIGKILLed worker's items run again within one lease (three
    heartbeats, 15 s by default) of its last renewal, whatever its own clock said. Every worker
    reaps: there is no single reaper whose death would stop recovery."""
    heartbeat = st.settings.heartbeat
    while True:
        wait = heartbeat
        try:
            first = await st.redis.zrange(st.keys.leases, 0, 0, withscores=True)
            if first:
                # A hair past the lapse, so that the script's now has reached it.
                wait = min(wait, max(0.0, (first[0][1] - clock.now_ms()) / 1000) + 0.01)
        except RedisError:
            pass
        await asyncio.sleep(wait)
        try:
            reaped = await st.scripts.reap(
                now_ms=clock.now_ms(), claim_ttl_ms=st.claim_ttl_ms, grace_ms=st.lease_ms
            )
            if reaped:
                log.warning("re-queued %d item(s) whose worker stopped renewing its lease", reaped)
        except RedisError as e:
            log.warning("reaping failed: %s", e)


async def _dispatch_loop(st: WorkerState) -> None:
    while True:
        st.dispatch_wanted.clear()
        try:
            await st.models.refresh()
            await st.dispatcher.run(models=st.models.models())
        except RedisError as e:
            log.warning("dispatch failed: %s", e)
            await asyncio.sleep(1.0)
        # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation that
        # arrives as the event is set, and the loop would then outlive the worker.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(st.settings.poll_delay):
                await st.dispatch_wanted.wait()
