"""The arq ``Worker`` subclass batchq runs: it claims jobs with one script per poll, refills a
freed slot at once, and knows when a burst is done; its changes to arq are listed on the class.
``workers.settings`` configures it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from signal import Signals
from typing import Any

import arq.worker
from arq import Retry, Worker
from arq.jobs import SerializationError, deserialize_job_raw
from arq.utils import ms_to_datetime
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from batchq import clock
from batchq.store.scripts import Claim
from workers.state import WorkerState

__all__ = ["BatchqWorker"]

log = logging.getLogger("batchq.worker")

# Next to a request to Ollama (tens of ms at the very least) this is nothing; at hundreds of
# jobs a second it turns a poll per finished job into one per few.
_COALESCE_S = 0.002

# arq scores its queue and judges a job's due time with its own module's clock read; every
# worker must read the same clock, the Redis server's, or one whose clock runs behind would not
# see due jobs and one running ahead would start deferred ones early (see batchq.clock).
arq.worker.timestamp_ms = clock.now_ms  # type: ignore[attr-defined]


class BatchqWorker(Worker):
    """arq's worker, with the changes that batchq needs.

    - **Freed slots are refilled at once.** arq sleeps ``poll_delay`` between polls, so a slot
      freed just after a poll idles for up to that long: with 0.2 s requests and a 50 ms poll
      that is a quarter of Ollama's time. Here the poll waits for a job to finish (or for
      ``poll_delay``, whichever comes first), and the finished job has already refilled the
      dispatch window.
    - **Burst mode knows about batches**: arq's exits once its queue is empty, but batchq's
      queue is only a window; exit only when nothing is queued, running or dispatchable.
    - **Fewer round trips per job**: jobs are claimed in one script per poll, and arq's
      clean-up after a job is skipped when batchq's finish script already did it. A Redis
      disconnect while claiming does not kill the worker (arq's WATCH would raise).
    - **One clock**: arq's reads of the time are the Redis server's time (see above).
    """

    def __init__(self, *args: Any, batchq_burst: bool = False, **kwargs: Any) -> None:
        self._idle_poll = float(kwargs.get("poll_delay", 0.5))
        # arq's own sleep between polls becomes a yield; the waiting happens in the poll.
        kwargs["poll_delay"] = 0
        super().__init__(*args, burst=False, **kwargs)
        self._batchq_burst = batchq_burst
        self._slot_freed = asyncio.Event()

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._slot_freed.set()

    def handle_sig_wait_for_completion(self, signum: Signals) -> None:
        # Jobs claimed ahead (prefetch) must not start requests during the grace period.
        st: WorkerState | None = self.ctx.get("batchq")
        if st is not None:
            st.stop_began = clock.monotonic()
        super().handle_sig_wait_for_completion(signum)

    async def _claim_and_start(self) -> None:
        st: WorkerState | None = self.ctx.get("batchq")
        if st is None:
            return
        # Beyond jobs_per_worker only while running embeddings (see workers.embed_groups).
        free = min(st.embed.job_limit, self.max_jobs) - self.job_counter
        if free <= 0:
            return
        try:
            await st.models.refresh()
            claimed = await st.scripts.claim(
                now_ms=clock.now_ms(),
                ttl_ms=int(self.in_progress_timeout_s * 1000),
                limit=free,
                models=st.models.models(),
            )
            if not claimed:
                # Its model may have run dry: ask now, not at the next regular ask.
                await st.models.refresh(force=True)
        except (RedisConnectionError, RedisTimeoutError, OSError) as e:
            log.warning("lost Redis while claiming jobs (%s); will retry", type(e).__name__)
            await asyncio.sleep(0.5)
            return
        for c in claimed:
            # Never blocks: at most ``free`` jobs were claimed.
            await self.sem.acquire()
            self.job_counter += 1
            t = self.loop.create_task(self._run_claimed(c))
            t.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[c.job_id] = t

    async def _run_claimed(self, c: Claim) -> None:
        """arq's ``run_job`` for a batchq item whose payload and try number the claim already
        read: no round trip before the item starts, and none of arq's per-job bookkeeping
        that batchq does not use (results kept, aborts, cron, logging). Same outcomes: a
        ``Retry`` puts the job back with its delay, a cancellation (shutdown) puts it back at
        once, any other error or a timeout ends it."""
        try:
            name, args, kwargs, _, enqueued_ms = deserialize_job_raw(
                c.payload or b"", deserializer=self.job_deserializer
            )
        except SerializationError:
            name = ""
        fn = self.functions.get(name)
        if c.payload is None or fn is None:
            # A job key that lapsed: arq's path records it as expired.
            return await self.run_job(c.job_id, c.score)
        ctx = {
            **self.ctx,
            "job_id": c.job_id,
            "job_try": c.job_try,
            "enqueue_time": ms_to_datetime(enqueued_ms),
            "score": c.score,
            "model": c.model,
        }
        finish, incr_score = False, None
        try:
            async with asyncio.timeout(fn.timeout_s or self.job_timeout_s):
                await fn.coroutine(ctx, *args, **kwargs)
        except Retry as e:
            self.jobs_retried += 1
            if e.defer_score:
                incr_score = e.defer_score + (clock.now_ms() - c.score)
        except asyncio.CancelledError:
            self.jobs_retried += 1
        except Exception:
            log.exception("job %s failed", c.job_id)
            finish = True
            self.jobs_failed += 1
        else:
            finish = True
            self.jobs_complete += 1
        await asyncio.shield(self.finish_job(c.job_id, finish, None, None, False, incr_score, None))
        if self.after_job_end:
            await self.after_job_end(ctx)

    async def finish_job(self, job_id: str, finish: bool, *args: Any, **kwargs: Any) -> None:
        # batchq's finish script already retired the job's arq keys in its own round trip.
        st: WorkerState | None = self.ctx.get("batchq")
        if finish and st is not None and job_id in st.retired:
            st.retired.discard(job_id)
            return
        await super().finish_job(job_id, finish, *args, **kwargs)

    async def _poll_iteration(self) -> None:
        # arq's, with its poll and claims in one script (see _claim_and_start).
        # Cleared before polling, so a job finishing during the poll is not missed.
        self._slot_freed.clear()
        if self.allow_pick_jobs:
            await self._claim_and_start()
        if self.allow_abort_jobs:
            await self._cancel_aborted_jobs()
        for job_id, t in list(self.tasks.items()):
            if t.done():
                del self.tasks[job_id]
                t.result()  # as arq does: an error in run_job must surface
        await self.heart_beat()
        if self._batchq_burst and not self.tasks:
            await self._check_burst_done()
        if not self.burst:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._idle_poll):  # not wait_for: see lifecycle.py
                    await self._slot_freed.wait()
            # Jobs often end in bursts: a moment's wait lets one poll refill several slots.
            await asyncio.sleep(_COALESCE_S)

    async def _check_burst_done(self) -> None:
        st = self.ctx.get("batchq")
        if st is None:
            return
        outcome = await st.dispatcher.run(models=st.models.models())
        if outcome.in_queue == 0 and outcome.active_batches == 0:
            # arq's own burst check runs next and sees the empty queue.
            self.burst = True
