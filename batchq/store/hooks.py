"""Completion hooks: when a batch submitted with ``--notify URL`` reaches a final state, one
worker POSTs its final status JSON to the URL.

The script that closes a batch puts it in the ``hooks`` set (the key name travels in the
batch's metadata, so that script needs no extra key). Workers claim due hooks one at a time
with a Lua script (``batchq/store/lua/hook_claim.lua``); the claim marks the hook ``sending``
before the POST. So:

- **one sender**: a claim is atomic, and a claimed hook is out of the others' reach while its
  lease runs;
- **never two successful deliveries**: a worker that dies mid-POST leaves ``sending`` behind;
  whether that POST arrived cannot be known, so the next claimer records ``unknown`` and does
  not send again. A worker asked to stop lets its POST finish and records the outcome first;
- **failures are retried**: a refused or failed POST is tried again with backoff, by any
  worker, up to ``notify_attempts`` times, then recorded as ``failed``.

The state of a batch's hook shows in its status (``notify``). Each completion is announced
once: a batch that ``batchq retry`` reopens is announced again when it finishes again, with a
new ``Idempotency-Key`` header (``<batch id>:<finished at ms>``).

The body is the batch's ``status --json`` object without ``notify``: that field tracks this very
delivery, and what it said while the POST was in flight (``sending``) tells the receiver nothing.

For scripts, :func:`batchq.results.export.wait_finished` takes an ``on_done`` callback instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass

import aiohttp
from redis.asyncio import Redis

from batchq import clock
from batchq.errors import BatchNotFound
from batchq.pacing import backoff
from batchq.settings import Settings
from batchq.store.batches import BatchStore
from batchq.store.codec import text
from batchq.store.lua import SCRIPTS
from batchq.store.scripts import _call

__all__ = ["HookClaim", "Hooks", "deliver_due", "hook_session"]

log = logging.getLogger("batchq.store.hooks")

# Up to a minute between attempts: long enough for a receiver to restart.
_MAX_DELAY = 60.0


def hook_session() -> aiohttp.ClientSession:
    """The HTTP session a worker sends its hooks with: aiohttp, the stack that already talks to
    Ollama, so the runtime needs one HTTP library."""
    # No cookies kept between receivers; redirects are not followed (see _send).
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())


@dataclass(frozen=True, slots=True)
class HookClaim:
    batch_id: str
    action: str  # 'send', or what became of it: 'unknown' | 'skip'
    url: str = ""
    attempt: int = 0
    finished_ms: str = ""
    token: str = ""


class Hooks:
    def __init__(self, redis: Redis, store: BatchStore) -> None:
        self.store = store
        self.keys = store.keys
        self._claim = SCRIPTS.script(redis, "hook_claim")
        self._settle = SCRIPTS.script(redis, "hook_settle")

    async def claim(self, *, now_ms: int, lease_ms: int) -> HookClaim | None:
        token = secrets.token_hex(8)
        res = await _call(
            self._claim, [self.keys.hooks], [now_ms, self.keys.batch_prefix(), lease_ms, token]
        )
        if res is None:
            return None
        batch_id, action = text(res[0]), text(res[1])
        if action != "send":
            return HookClaim(batch_id, action)
        return HookClaim(batch_id, action, text(res[2]), int(res[3]), text(res[4]), token)

    async def settle(
        self, claim: HookClaim, outcome: str, *, due_ms: int = 0, error: str = ""
    ) -> bool:
        res = await _call(
            self._settle,
            [self.keys.hooks],
            [
                claim.batch_id,
                self.keys.batch_prefix(),
                claim.token,
                outcome,
                due_ms,
                error[:300],
                clock.now_ms(),
            ],
        )
        return bool(int(res))


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
