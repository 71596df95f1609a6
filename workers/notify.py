"""Sending completion hooks: the POST of a finished batch's status to its ``--notify`` URL, for
each hook this worker claims. The claims, and why a completion is sent at most once, are
:mod:`batchq.store.hooks`'s; the sending is here because it is HTTP, and the store speaks
only to Redis.

The body is the batch's ``status --json`` object without ``notify``: that field tracks this very
delivery, and what it said while the POST was in flight (``sending``) tells the receiver nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp

from batchq import clock
from batchq.errors import BatchNotFound
from batchq.pacing import backoff
from batchq.settings import Settings
from batchq.store.hooks import HookClaim, Hooks

__all__ = ["deliver_due", "hook_session"]

# The name these lines have always been logged under, so that filters on it keep working.
log = logging.getLogger("batchq.store.hooks")

# Up to a minute between attempts: long enough for a receiver to restart.
_MAX_DELAY = 60.0


def hook_session() -> aiohttp.ClientSession:
    """The HTTP session a worker sends its hooks with: aiohttp, the stack that already talks to
    Ollama, so the runtime needs one HTTP library."""
    # No cookies kept between receivers; redirects are not followed (see _send).
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())


async def deliver_due(hooks: Hooks, client: aiohttp.ClientSession, settings: Settings) -> int:
    """Claim and send due hooks until none is due; how many were claimed."""
    n = 0
    lease_ms = int((settings.notify_timeout + 30) * 1000)
    while (claim := await hooks.claim(now_ms=clock.now_ms(), lease_ms=lease_ms)) is not None:
        n += 1
        if claim.action == "unknown":
            log.warning("batch %s: its hook's sender died mid-POST; not sent again", claim.batch_id)
        if claim.action != "send":
            continue
        # Shielded: on shutdown the POST in flight ends and its outcome is recorded first, so
        # a restart neither loses nor repeats the delivery.
        task = asyncio.ensure_future(_send(hooks, client, settings, claim))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await task
            raise
    return n


async def _send(
    hooks: Hooks, client: aiohttp.ClientSession, settings: Settings, claim: HookClaim
) -> None:
    try:
        status = await hooks.store.status(claim.batch_id)
    except BatchNotFound:
        await hooks.settle(claim, "failed", error="the batch is gone")
        return
    headers = {
        "User-Agent": "batchq",
        "Idempotency-Key": f"{claim.batch_id}:{claim.finished_ms}",
    }
    body = status.model_dump(mode="json", exclude={"notify"})
    try:
        async with client.post(
            claim.url,
            json=body,
            headers=headers,
            # A redirect would repeat the POST somewhere the submitter did not name.
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=settings.notify_timeout),
        ) as resp:
            # The receiver's reply is not used: only its status line is read.
            error = "" if 200 <= resp.status < 300 else f"HTTP {resp.status}"
    except (aiohttp.ClientError, TimeoutError) as e:
        error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    if not error:
        await hooks.settle(claim, "delivered")
        log.info("batch %s: hook delivered (attempt %d)", claim.batch_id, claim.attempt)
    elif claim.attempt >= settings.notify_attempts:
        await hooks.settle(claim, "failed", error=error)
        log.warning(
            "batch %s: hook failed after %d attempts: %s", claim.batch_id, claim.attempt, error
        )
    else:
        delay = backoff(claim.attempt, settings.notify_retry_delay, _MAX_DELAY)
        await hooks.settle(claim, "retry", due_ms=clock.now_ms() + int(delay * 1000), error=error)
        log.info(
            "batch %s: hook attempt %d: %s; again in %.1f s",
            claim.batch_id,
            claim.attempt,
            error,
            delay,
        )
