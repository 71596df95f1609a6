"""The arq job that sends one item to Ollama: claimed, started, one request, and its outcome
recorded, retried or failed.

Every outcome is recorded through :meth:`batchq.store.scripts.Scripts.finish`, which writes a result
once: arq delivers at least once, and a job that runs twice leaves one result counted once.
No exception escapes :func:`run_item` except arq's ``Retry`` and cancellation, because arq
treats any other exception as terminal and would drop the item without a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from dataclasses import dataclass

from arq import Retry
from redis.exceptions import RedisError

from batchq import clock
from batchq.backends.base import Reply
from batchq.backends.pool import Host
from batchq.errors import BackendError, PermanentBackendError, TransientBackendError
from batchq.pacing import backoff
from batchq.records import Item, ItemError, ItemStatus
from batchq.store.codec import encode_result
from batchq.store.keys import BATCH_ID_RE, parse_job_id
from workers.autoconc import AutoGate
from workers.embed_groups import Group
from workers.state import WorkerContext, WorkerState

__all__ = ["PAUSED_PARK_S", "REJECT_FUNCTION", "reject_job", "run_item"]

log = logging.getLogger("batchq.worker")

REJECT_FUNCTION = "reject_job"

# How long a job of a paused batch waits before it looks again; resume does not wait for it.
PAUSED_PARK_S = 600.0


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
    host: Host | None = None  # the Ollama host it goes to, if chosen already
    ride: Group | None = None  # the embedding group it was taken into, holding no slot


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
    # An embedding job may instead be taken into another's request (workers.embed_groups).
    st.waiting.add(jid)
    try:
        ride = await st.embed.wait_turn(st.ollama_slots, jid)
    finally:
        st.waiting.discard(jid)
    slot = _Slot(st.ollama_slots) if ride is None else None
    try:
        if st.draining:
            # SIGTERM: finish the requests in flight, start none. Back in the queue at once.
            raise Retry(defer=0)
        if not st.models.takes(ctx.get("model", "")):
            # Claimed ahead for a model its host has since left (batchq.store.models): sent
            # now it would make Ollama load that model back. Back in the queue, unstarted, for
            # a host that serves it.
            raise Retry(defer=0)
        return await _run_started(ctx, st, batch_id, index, jid, slot, ride)
    finally:
        if slot is not None:
            slot.free()
        if ride is not None:
            ride.leave(jid)  # its leader waits for it to join or not


async def _run_started(
    ctx: WorkerContext,
    st: WorkerState,
    batch_id: str,
    index: int,
    jid: str,
    slot: _Slot | None,
    ride: Group | None = None,
) -> str:
    model = ctx.get("model", "")
    # Chosen before the item starts: its start checks that the host still serves its model.
    host = st.hosts.choose(model or None)
    now = clock.now_ms()
    outcome, attempt, raw = await st.scripts.begin(
        batch_id,
        index,
        jid,
        now_ms=now,
        lease_until_ms=now + st.lease_ms,
        endpoint=host.eid if model else "",
        model=model,
    )
    if outcome == "moved":
        # Its host moved to another model since the claim (batchq.store.models): back in the
        # queue, unstarted, for a host that serves this one.
        raise Retry(defer=0)
    if outcome == "paused":
        # Claimed as its batch was paused: wait in arq's queue, out of the polls' range,
        # until resume makes it due (see batchq.store.control).
        raise Retry(defer=PAUSED_PARK_S)
    if outcome != "ok":
        # Already final (a duplicate delivery), cancelled, or the batch is gone.
        return outcome
    job = _Job(st, batch_id, index, jid, attempt, ctx["job_try"], ctx["score"], slot, host, ride)
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


async def reject_job(ctx: WorkerContext, reason: str = "is not batchq's JSON") -> str:
    """Record the item of a job whose payload was not batchq's (see
    :func:`workers.settings.json_loads`) as failed, at once; a job whose id names no item of a
    live batch is dropped."""
    st = ctx["batchq"]
    jid = ctx["job_id"]
    log.error("job %s: payload %s; refusing to run it", jid, reason)
    try:
        batch_id, index = parse_job_id(jid)
    except ValueError:
        batch_id, index = "", -1
    if not BATCH_ID_RE.match(batch_id) or index < 0:
        log.warning("job %s: its id names no item; dropped", jid)
        return "ignored"
    now = clock.now_ms()
    outcome, attempt = await st.scripts.start(batch_id, index, jid, now_ms=now, lease_until_ms=now)
    if outcome != "ok":
        log.warning("job %s: item %s; dropped", jid, outcome)
        return "ignored"
    job = _Job(st, batch_id, index, jid, attempt, ctx["job_try"], ctx["score"])
    return await _fail(job, ItemError(type="invalid_job", message=f"job payload {reason}; not run"))


async def _attempt(job: _Job, raw: bytes | None) -> str:
    st, s = job.st, job.st.settings
    if raw is None:
        return await _fail(job, ItemError(type="invalid_item", message="item is missing"))
    try:
        item = Item.loads(raw, checked=True)
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

    await st.embed.observe(item)
    if job.ride is not None or st.embed.groups(item):
        outcome = await _embed_request(job, item)
    else:
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
    st = job.st
    await st.limiter.wait()
    host = job.host or st.hosts.choose(item.model)
    if host.limited:
        await _admit(job, host)
    gate = await _auto_admit(job, host, item)
    host.in_flight += 1
    sent_at = clock.monotonic()
    result: Reply | BackendError | None = None
    try:
        # The backend bounds the request itself: each wait for data (``timeout``), and all of
        # it (``reply_deadline``, a permanent failure: see batchq.backends.bounds).
        reply = result = await host.backend.send(item)
    except TransientBackendError as e:
        st.hosts.failed(host, e)
        result = e
        return e
    except PermanentBackendError as e:
        result = e
        return e
    finally:
        if gate is not None:
            with contextlib.suppress(RedisError):
                await asyncio.shield(gate.release(job.jid, result))
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


async def _embed_request(job: _Job, item: Item) -> tuple[Reply, Host] | BackendError:
    """``item``'s share of one /api/embed with other jobs' (see workers.embed_groups): led
    when the job holds a slot, which it keeps until the group's requests are all done."""
    alone = dataclasses.replace(job, slot=None)

    async def send(it: Item) -> tuple[Reply, Host] | BackendError:
        return await _request(alone, it)

    if job.ride is not None:
        return await job.st.embed.ride(job.ride, job.jid, item, send)
    slot = job.slot
    return await job.st.embed.lead(job.jid, item, send, slot.free if slot else lambda: None)


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


async def _auto_admit(job: _Job, host: Host, item: Item) -> AutoGate | None:
    """With ``--concurrency auto``, wait for a slot of the (host, model) limit shared by the
    host's workers (batchq.store.autolimit); None when the concurrency is fixed."""
    if job.st.auto is None:
        return None
    gate = job.st.auto.gate(host.url, item.model)
    await gate.acquire(job.jid)
    return gate


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
