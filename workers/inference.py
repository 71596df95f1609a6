"""The arq job that sends one item to Ollama, and the worker's lifecycle hooks.

Every outcome is recorded through :meth:`batchq.store.scripts.Scripts.finish`, which writes a result
once: arq delivers at least once, and a job that runs twice leaves one result counted once.
No exception escapes :func:`run_item` except arq's ``Retry`` and cancellation, because arq
treats any other exception as terminal and would drop the item without a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any, TypedDict

from arq import Retry
from redis.asyncio import Redis
from redis.exceptions import RedisError

from batchq import clock
from batchq.backends.base import Reply
from batchq.backends.pool import Host, HostPool
from batchq.errors import BackendError, PermanentBackendError, TransientBackendError
from batchq.pacing import RateLimiter, backoff
from batchq.records import Item, ItemError, ItemStatus
from batchq.settings import Settings
from batchq.store.batches import BatchStore
from batchq.store.codec import encode_result
from batchq.store.connection import follow_master
from batchq.store.dispatch import Dispatcher
from batchq.store.keys import ARQ_IN_PROGRESS_PREFIX, Keys, parse_job_id
from workers.housekeeping import repair_idle_batches, start_housekeeping
from workers.stats import WorkerStats

__all__ = [
    "PAUSED_PARK_S",
    "REJECT_FUNCTION",
    "WorkerContext",
    "WorkerState",
    "after_job_end",
    "reject_job",
    "run_item",
    "shutdown",
    "startup_hook",
]

log = logging.getLogger("batchq.worker")

REJECT_FUNCTION = "reject_job"

# How long a job of a paused batch waits before it looks again; resume does not wait for it.
PAUSED_PARK_S = 600.0


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
    draining: bool = False  # set on SIGTERM: start no more requests
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
        self.stats = WorkerStats(self.worker_id, self.settings, self.running)

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
    batchq: WorkerState


@dataclass(frozen=True, slots=True)
class _Job:
    st: WorkerState
    batch_id: str
    index: int
    jid: str
    attempt: int  # batchq's count: requests that reached (or may have reached) Ollama
    run: int  # arq's count: every time the job started, for the backoff exponent
    score: int  # the queue score arq claimed it at
    slot: _Slot | None = None  # its Ollama slot, given up as soon as the reply is in


class _Slot:
    """One of the worker's Ollama slots, freed once: when the reply is in (so the next job
    starts while this one's result is written), or when the job ends, whichever is first."""

    __slots__ = ("_held", "_sem")

    def __init__(self, sem: asyncio.Semaphore) -> None:
        self._sem = sem
        self._held = True

    def free(self) -> None:
        if self._held:
            self._held = False
            self._sem.release()


async def run_item(ctx: WorkerContext, batch_id: str, index: int) -> str:
    st = ctx["batchq"]
    jid = ctx["job_id"]
    # A worker claims a few jobs more than its concurrency (``prefetch``); they wait here,
    # claimed but not started, so that when a request ends the next one needs only its start
    # round trip before it goes out. Started only once it has a slot, an item's attempts stay
    # the requests that reached (or may have reached) Ollama, whatever kills the worker.
    st.waiting.add(jid)
    try:
        await st.ollama_slots.acquire()
    finally:
        st.waiting.discard(jid)
    slot = _Slot(st.ollama_slots)
    try:
        if st.draining:
            # SIGTERM: finish the requests in flight, start none. Back in the queue at once.
            raise Retry(defer=0)
        return await _run_started(ctx, st, batch_id, index, jid, slot)
    finally:
        slot.free()


async def _run_started(
    ctx: WorkerContext, st: WorkerState, batch_id: str, index: int, jid: str, slot: _Slot
) -> str:
    now = clock.now_ms()
    outcome, attempt, raw = await st.scripts.begin(
        batch_id, index, jid, now_ms=now, lease_until_ms=now + st.lease_ms
    )
    if outcome == "paused":
        # Claimed as its batch was paused: wait in arq's queue, out of the polls' range,
        # until resume makes it due (see batchq.store.control).
        raise Retry(defer=PAUSED_PARK_S)
    if outcome != "ok":
        # Already final (a duplicate delivery), cancelled, or the batch is gone.
        return outcome
    job = _Job(st, batch_id, index, jid, attempt, ctx["job_try"], ctx["score"], slot)
    st.running.add(jid)
    try:
        return await _attempt(job, raw)
    except asyncio.CancelledError:
        # Shutdown: arq puts the job back at once; the lease goes and the attempt is refunded,
        # so the item counts as queued and nothing is counted against it.
        with contextlib.suppress(RedisError):
            await asyncio.shield(st.scripts.release(batch_id, jid, score=job.score, refund=True))
        raise
    except Retry:
        raise
    except Exception as e:  # anything else would make arq drop the item
        log.exception("job %s: unexpected error, will retry", jid)
        return await _retry_or_fail(
            job, TransientBackendError(f"{type(e).__name__}: {e}", kind="internal_error")
        )
    finally:
        st.running.discard(jid)


async def reject_job(ctx: WorkerContext) -> str:
    """Record the item of a job whose payload was not batchq's JSON as failed."""
    st = ctx["batchq"]
    jid = ctx["job_id"]
    log.error("job %s: payload is not a batchq job; refusing to run it", jid)
    try:
        batch_id, index = parse_job_id(jid)
    except ValueError:
        return "ignored"
    now = clock.now_ms()
    outcome, attempt = await st.scripts.start(batch_id, index, jid, now_ms=now, lease_until_ms=now)
    if outcome != "ok":
        return "ignored"
    job = _Job(st, batch_id, index, jid, attempt, ctx["job_try"], ctx["score"])
    return await _fail(
        job, ItemError(type="invalid_job", message="job payload is not batchq's JSON; not run")
    )


async def _attempt(job: _Job, raw: bytes | None) -> str:
    st, s = job.st, job.st.settings
    if raw is None:
        return await _fail(job, ItemError(type="invalid_item", message="item is missing"))
    try:
        item = Item.loads(raw)
    except (ValueError, KeyError, TypeError) as e:
        return await _fail(
            job, ItemError(type="invalid_item", message=f"stored item is unreadable: {e}")
        )
    if job.attempt > s.max_attempts:
        # The earlier attempts died with their worker: an item that kills workers stops here.
        error = ItemError(
            type="attempts_exhausted",
            message=f"gave up after {job.attempt - 1} attempts that did not finish",
        )
        return await _fail(job, error)

    outcome = await _request(job, item)
    if isinstance(outcome, PermanentBackendError):
        return await _fail(job, _item_error(outcome))
    if isinstance(outcome, BackendError):
        return await _retry_or_fail(job, outcome)
    reply, host = outcome
    tokens = st.stats.item_succeeded(reply.metrics)
    if host.limited:
        with contextlib.suppress(RedisError):
            await host.admission.spend_tokens(sum(tokens), now_ms=clock.now_ms())

    payload = encode_result(
        ItemStatus.SUCCEEDED,
        response=reply.text,
        attempts=job.attempt,
        metrics=reply.metrics,
        embeddings=reply.embeddings,
    )
    await _finish(job, ItemStatus.SUCCEEDED, payload, tokens=tokens)
    return "succeeded"


async def _request(job: _Job, item: Item) -> tuple[Reply, Host] | BackendError:
    """One request to Ollama; the job's slot is freed as soon as the reply is in."""
    st, s = job.st, job.st.settings
    await st.limiter.wait()
    host = st.hosts.choose()
    if host.limited:
        await _admit(job, host)
    host.in_flight += 1
    sent_at = clock.monotonic()
    try:
        async with asyncio.timeout(s.timeout):
            reply = await host.backend.send(item)
    except TimeoutError:
        err: BackendError = TransientBackendError(
            f"no complete reply within {s.timeout:g} s", kind="timeout"
        )
        st.hosts.failed(host, err)
        return err
    except TransientBackendError as e:
        st.hosts.failed(host, e)
        return e
    except PermanentBackendError as e:
        return e
    finally:
        if job.slot is not None:
            job.slot.free()
        st.stats.request_done(host.url, clock.monotonic() - sent_at)
        host.in_flight -= 1
        if job.jid in host.slots:
            host.slots.discard(job.jid)
            with contextlib.suppress(RedisError):
                await asyncio.shield(host.admission.release(job.jid))
    st.hosts.succeeded(host)
    return reply, host


async def _admit(job: _Job, host: Host) -> None:
    """Wait for the host's global limits to let this request through. Waiting here costs no
    attempt: the item keeps its lease (renewed by the heartbeat) and simply starts later."""
    lease_ms = job.st.lease_ms
    while True:
        now = clock.now_ms()
        wait = await host.admission.try_admit(job.jid, now_ms=now, slot_until_ms=now + lease_ms)
        if wait == 0:
            host.slots.add(job.jid)
            return
        await asyncio.sleep(wait / 1000)


def _item_error(e: BackendError) -> ItemError:
    return ItemError(type=e.kind, message=e.message, status_code=e.status_code)


async def _fail(job: _Job, error: ItemError) -> str:
    job.st.stats.item_failed(error.type, error.message)
    payload = encode_result(ItemStatus.FAILED, error=error, attempts=job.attempt)
    await _finish(job, ItemStatus.FAILED, payload)
    return "failed"


async def _finish(
    job: _Job, status: ItemStatus, payload: str | bytes, *, tokens: tuple[int, int] = (0, 0)
) -> None:
    st = job.st
    await st.scripts.finish(
        job.batch_id,
        job.index,
        job.jid,
        status.value,
        payload,
        now_ms=clock.now_ms(),
        tokens=tokens,
    )
    # The script also retired arq's keys for the job: arq's own clean-up can be skipped.
    st.retired.add(job.jid)


# While Ollama is unreachable items keep waiting, never failing, but no faster than this.
_UNREACHABLE_MAX_DELAY = 30.0


async def _retry_or_fail(job: _Job, err: BackendError) -> str:
    s = job.st.settings
    unreachable = err.kind == "unreachable"
    if unreachable:
        # Ollama down is no fault of the item: wait for it, with a backoff that grows with
        # every run so a dead server is not hammered, capped so work resumes soon after.
        delay = backoff(job.run, s.retry_delay, min(s.retry_max_delay, _UNREACHABLE_MAX_DELAY))
    elif job.attempt >= s.max_attempts:
        return await _fail(job, _item_error(err))
    else:
        delay = backoff(job.attempt, s.retry_delay, s.retry_max_delay)
    log.info("job %s attempt %d: %s; retrying in %.1f s", job.jid, job.attempt, err, delay)
    job.st.stats.retrying(err.kind, err.message)
    # While it waits out the backoff the item is queued, not running. Either script also
    # counts the retry in the batch's `retried`.
    if unreachable:
        await job.st.scripts.release(
            job.batch_id, job.jid, score=job.score, refund=True, retried=True
        )
    else:
        # The same round trip keeps the attempt's error in the item's history.
        await job.st.store.control.release_failed(
            job.batch_id,
            job.index,
            job.jid,
            score=job.score,
            attempt=job.attempt,
            error=_item_error(err),
            now_ms=clock.now_ms(),
        )
    raise Retry(defer=delay)


# -- lifecycle ------------------------------------------------------------------------------


def startup_hook(settings: Settings) -> Any:
    async def startup(ctx: dict[str, Any]) -> None:
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
        st.tasks.append(asyncio.create_task(_dispatch_loop(st)))
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
    now = clock.now_ms()
    async with st.redis.pipeline(transaction=False) as pipe:
        pipe.zadd(st.keys.workers, {st.worker_id: now + st.lease_ms})
        pipe.hset(st.keys.worker_slots, st.worker_id, str(st.settings.max_in_flight))
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
            await _heartbeat_once(st)
            # Every worker reaps: there is no single reaper whose death would stop recovery.
            reaped = await st.scripts.reap(
                now_ms=clock.now_ms(),
                claim_ttl_ms=st.claim_ttl_ms,
                grace_ms=st.lease_ms,
            )
            if reaped:
                log.warning("re-queued %d item(s) whose worker stopped renewing its lease", reaped)
            await repair_idle_batches(st)
        except RedisError as e:
            log.warning("heartbeat failed: %s", e)


async def _dispatch_loop(st: WorkerState) -> None:
    while True:
        st.dispatch_wanted.clear()
        try:
            await st.dispatcher.run()
        except RedisError as e:
            log.warning("dispatch failed: %s", e)
            await asyncio.sleep(1.0)
        # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation that
        # arrives as the event is set, and the loop would then outlive the worker.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(st.settings.poll_delay):
                await st.dispatch_wanted.wait()
