"""Sending completion hooks: the POST of a finished batch's status to its ``--notify`` URL, for
each hook this worker claims. The claims, and why a completion is sent at most once, are
:mod:`batchq.store.hooks`'s; the sending is here because it is HTTP, and the store speaks
only to Redis. The HTTP itself, bounded against hostile receivers, is :mod:`workers.hook_http`.

The body is the batch's ``status --json`` object without ``notify``: that field tracks this very
delivery, and what it said while the POST was in flight (``sending``) tells the receiver nothing.
It is signed with Standard Webhooks headers when ``webhook_secret`` is set
(:mod:`batchq.signing`); its ``webhook-id`` is the ``Idempotency-Key``, the same on every
attempt of one completion.

A batch made through ``batchq serve``'s OpenAI API with a webhook gets OpenAI's event as its
body instead (:mod:`workers.openai_events`; :mod:`batchq.api.webhooks` says when).

URLs are logged and recorded redacted (:func:`batchq.redact.redact_url`): they may carry tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Callable

import aiohttp

from batchq import clock
from batchq.errors import BatchNotFound
from batchq.pacing import backoff
from batchq.redact import redact_url, redact_urls_in
from batchq.settings import Settings
from batchq.signing import signature_headers
from batchq.store.codec import text
from batchq.store.hooks import HookClaim, Hooks
from workers.hook_http import Progress, Reply, TargetRefused, post
from workers.openai_events import openai_event

__all__ = ["deliver_due"]

# The name these lines have always been logged under, so that filters on it keep working.
log = logging.getLogger("batchq.store.hooks")

# Up to a minute between attempts: long enough for a receiver to restart.
_MAX_DELAY = 60.0


def _never_stopping() -> float | None:
    return None


async def deliver_due(
    hooks: Hooks,
    client: aiohttp.ClientSession,
    settings: Settings,
    *,
    stop_began: Callable[[], float | None] = _never_stopping,
) -> int:
    """Claim and send due hooks until none is due; how many were claimed.

    ``stop_began``: when the worker was asked to stop (``clock.monotonic()``), None until
    then. A stopping worker claims no more hooks, and when cancelled lets the POST in flight
    run for what is left of ``shutdown_grace`` (counted from the cancellation if no stop
    began), no longer: its outcome is recorded either way, so a restart neither repeats nor
    loses it."""
    n = 0
    lease_ms = int((settings.notify_timeout + 30) * 1000)
    while stop_began() is None and (claim := await _claim(hooks, lease_ms)) is not None:
        n += 1
        if claim.action == "unknown":
            log.warning("batch %s: its hook's sender died mid-POST; not sent again", claim.batch_id)
        if claim.action != "send":
            continue
        task = asyncio.ensure_future(_send(hooks, client, settings, claim))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            began = stop_began()
            left = (clock.monotonic() if began is None else began) + settings.shutdown_grace
            await asyncio.wait({task}, timeout=max(0.0, left - clock.monotonic()))
            if not task.done():
                task.cancel()  # _send records the POST cut short
            await asyncio.wait({task})
            raise
    return n


async def _claim(hooks: Hooks, lease_ms: int) -> HookClaim | None:
    task = asyncio.ensure_future(hooks.claim(now_ms=clock.now_ms(), lease_ms=lease_ms))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        # Stopped while claiming: a claim made then would sit "sending" with no POST, and
        # become "unknown" (never sent) once its lease ran out. Give it back unsent.
        with contextlib.suppress(Exception):
            late = await task
            if late is not None and late.action == "send":
                await hooks.settle(late, "retry", due_ms=clock.now_ms(), error="the worker stopped")
        raise


async def _send(
    hooks: Hooks, client: aiohttp.ClientSession, settings: Settings, claim: HookClaim
) -> None:
    progress = Progress()
    shown = redact_url(claim.url)
    try:
        reply = await _status_and_post(hooks, client, settings, claim, progress)
        if reply is None:
            await hooks.settle(claim, "failed", error="the batch is gone")
            return
        error = "" if 200 <= reply.status < 300 else _http_error(reply.status, reply.excerpt)
    except asyncio.CancelledError:
        await _cut_short(hooks, claim, progress, shown)
        raise
    except TimeoutError:
        error = f"no answer within {settings.notify_timeout:g} s (BATCHQ_NOTIFY_TIMEOUT)"
    except TargetRefused as e:
        await hooks.settle(claim, "failed", error=f"refused: {e}")
        log.warning("batch %s: hook to %s not sent, refused: %s", claim.batch_id, shown, e)
        return
    except (aiohttp.ClientError, ValueError) as e:
        error = redact_urls_in(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
    if not error:
        await hooks.settle(claim, "delivered")
        log.info("batch %s: hook delivered (attempt %d)", claim.batch_id, claim.attempt)
    elif claim.attempt >= settings.notify_attempts:
        await hooks.settle(claim, "failed", error=error)
        log.warning(
            "batch %s: hook to %s failed after %d attempts: %s",
            claim.batch_id,
            shown,
            claim.attempt,
            error,
        )
    else:
        delay = backoff(claim.attempt, settings.notify_retry_delay, _MAX_DELAY)
        await hooks.settle(claim, "retry", due_ms=clock.now_ms() + int(delay * 1000), error=error)
        log.info(
            "batch %s: hook to %s, attempt %d: %s; again in %.1f s",
            claim.batch_id,
            shown,
            claim.attempt,
            error,
            delay,
        )


async def _status_and_post(
    hooks: Hooks,
    client: aiohttp.ClientSession,
    settings: Settings,
    claim: HookClaim,
    progress: Progress,
) -> Reply | None:
    """The batch's status POSTed as the hook's body; None if the batch is gone."""
    msg_id = f"{claim.batch_id}:{claim.finished_ms}"
    body = await _openai_body(hooks, claim, msg_id)
    if body is None:
        try:
            status = await hooks.store.status(claim.batch_id)
        except BatchNotFound:
            return None
        # Serialised here, once: the signature is over these exact bytes.
        body = json.dumps(
            status.model_dump(mode="json", exclude={"notify"}), separators=(",", ":")
        ).encode()
    headers = {"User-Agent": "batchq", "Idempotency-Key": msg_id}
    headers |= _signed(settings, msg_id, body)
    return await post(client, claim.url, body, headers, settings=settings, progress=progress)


async def _openai_body(hooks: Hooks, claim: HookClaim, msg_id: str) -> bytes | None:
    """OpenAI's webhook event, for a batch made through the API with a webhook
    (:mod:`workers.openai_events`); None for any other."""
    meta = hooks.keys.batch(claim.batch_id).meta
    fields = ["hook_format", "oai_batch", "state"]
    fmt, api_id, state = await hooks.store.redis.hmget(meta, fields)  # type: ignore[misc]
    if fmt is None or text(fmt) != "openai" or api_id is None:
        return None
    return openai_event(msg_id, text(api_id), text(state or b""), claim.finished_ms)


def _signed(settings: Settings, msg_id: str, body: bytes) -> dict[str, str]:
    key = settings.webhook_key
    if key is None:
        _unsigned_once()
        return {"webhook-id": msg_id, "webhook-timestamp": str(clock.now_ms() // 1000)}
    return signature_headers(key, msg_id, clock.now_ms() // 1000, body)


@functools.cache
def _unsigned_once() -> None:
    log.info("completion hooks are sent unsigned: set BATCHQ_WEBHOOK_SECRET to sign them")


def _http_error(status: int, excerpt: str) -> str:
    if 300 <= status < 400:
        return f"HTTP {status} (redirects are not followed)"
    return f"HTTP {status}: {excerpt}" if excerpt else f"HTTP {status}"


async def _cut_short(hooks: Hooks, claim: HookClaim, progress: Progress, shown: str) -> None:
    if progress.started:
        # It may have arrived: never risk a second delivery.
        await hooks.settle(claim, "unknown", error="the worker stopped mid-POST")
        log.warning(
            "batch %s: hook to %s cut short by the worker's stop; not sent again",
            claim.batch_id,
            shown,
        )
    else:
        await hooks.settle(claim, "retry", due_ms=clock.now_ms(), error="the worker stopped")
