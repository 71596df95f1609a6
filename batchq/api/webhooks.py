"""OpenAI's batch webhooks: the ``batch.completed``, ``batch.expired``, ``batch.cancelled`` and
``batch.failed`` events of the batches made through ``/v1/batches``, sent to
``BATCHQ_OPENAI_WEBHOOK_URL`` (the URL ``serve`` has when the batch is created) by batchq's own
completion hooks (:mod:`batchq.store.hooks`, :mod:`workers.notify`): bounded, retried, the
target checked, at most once per finish, signed as Standard Webhooks with
``BATCHQ_WEBHOOK_SECRET`` so that ``openai``'s ``client.webhooks.unwrap()`` verifies them.

Why not the hook that the batchq batch's finish sets off: OpenAI announces a batch once its
output files are listed, and those are written by ``serve`` (:mod:`batchq.api.outputs`), not
by the worker that finishes the batch. So such a batch is submitted without a hook; ``serve``
keeps it in ``oai:open`` and looks at those batches every ``openai_webhook_every`` seconds
(:func:`watch`; at most :data:`MAX_WATCHED` a round, in turn), which writes the files of a
finished one; the transaction that lists them
also gives the batchq batch its hook, in OpenAI's form (:func:`announce`), due at once.

A batch refused at validation has no batchq batch: its hook lives in a hash of its own where
a batch's metadata would be (``{p}:b:{batch_...}``, which no batchq batch id matches), holding
only what a hook needs (:func:`announce_failed`), and expires with the batch's window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from batchq import clock
from batchq.errors import BatchqError, InputError
from batchq.options import check_notify_url
from batchq.store.codec import text
from batchq.store.keys import Keys

__all__ = [
    "HOOK_FORMAT",
    "MAX_WATCHED",
    "announce",
    "announce_failed",
    "check_url",
    "start_watching",
    "watch",
]

log = logging.getLogger(__name__)

# The batch's hook_format that has workers send OpenAI's event instead of batchq's status.
HOOK_FORMAT = "openai"
# Open batches looked at per round: a bounded round, oldest first.
MAX_WATCHED = 200
# How long a refused batch's hook record outlives its refusal (s): its retries' span and more.
_FAILED_TTL_S = 7 * 86400


def check_url(url: str, *, allow_private: bool) -> str:
    """``BATCHQ_OPENAI_WEBHOOK_URL`` checked as ``--notify`` URLs are (InputError if not)."""
    try:
        return check_notify_url(url, allow_private=allow_private)
    except InputError as e:
        raise InputError(e.reason, field="BATCHQ_OPENAI_WEBHOOK_URL") from None


def _hook_fields(url: str, batch_id: str) -> dict[str, str]:
    return {"notify": url, "hook_format": HOOK_FORMAT, "oai_batch": batch_id}


def announce(tx: Any, keys: Keys, batch_id: str, native: str, url: str) -> None:
    """Queue, in transaction ``tx``, OpenAI batch ``batch_id``'s event: its batchq batch
    ``native`` gets a hook to ``url`` in OpenAI's form, due now."""
    tx.hset(keys.batch(native).meta, mapping=_hook_fields(url, batch_id))
    tx.zadd(keys.hooks, {native: clock.now_ms()})
    tx.zrem(keys.oai_open, batch_id)


async def announce_failed(redis: Redis, keys: Keys, batch_id: str, url: str) -> None:
    """Queue the ``batch.failed`` event of ``batch_id``, refused at validation."""
    now = clock.now_ms()
    meta = keys.batch(batch_id).meta
    fields = _hook_fields(url, batch_id) | {"state": "failed", "finished_at": str(now)}
    async with redis.pipeline(transaction=True) as tx:
        tx.hset(meta, mapping=fields)
        tx.expire(meta, _FAILED_TTL_S)
        tx.zadd(keys.hooks, {batch_id: now})
        await tx.execute()


async def watch(
    redis: Redis, keys: Keys, refresh: Callable[[str], Awaitable[object]], every: float
) -> None:
    """Until cancelled: every ``every`` seconds, ``refresh`` the open batches (which starts
    writing the files of a finished one, then announces it); forget those that are gone."""
    while True:
        try:
            await _round(redis, keys, refresh)
        except (BatchqError, RedisError, OSError) as e:
            # Redis away for a moment: the next round tries again.
            log.warning("OpenAI batch webhooks: a round failed: %s", e)
        await asyncio.sleep(every)


async def _round(redis: Redis, keys: Keys, refresh: Callable[[str], Awaitable[object]]) -> None:
    # The least recently looked at first, each then put last: however many are open, every
    # one is looked at in turn.
    for raw in await redis.zrange(keys.oai_open, 0, MAX_WATCHED - 1):
        batch_id = text(raw)
        try:
            await refresh(batch_id)
        except BatchqError as e:
            if getattr(e, "status", None) != 404:
                raise
            await redis.zrem(keys.oai_open, batch_id)  # deleted by hand
            continue
        # XX: not back in once announced.
        await redis.zadd(keys.oai_open, {batch_id: clock.now_ms()}, xx=True)


def start_watching(
    redis: Redis, keys: Keys, refresh: Callable[[str], Awaitable[object]], every: float
) -> Callable[[], Awaitable[None]]:
    """Run :func:`watch` in a task; returns what stops it."""
    task = asyncio.create_task(watch(redis, keys, refresh, every))

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return stop
