"""Completion hooks, their bookkeeping in Redis: when a batch submitted with ``--notify URL``
reaches a final state, one worker POSTs its final status JSON to the URL. The POST is
:mod:`workers.notify`'s; this module holds the claims that make it one.

The script that closes a batch puts it in the ``hooks`` set (the key name travels in the
batch's metadata, so that script needs no extra key). Workers claim due hooks one at a time
with a Lua script (``batchq/store/lua/hook_claim.lua``); the claim marks the hook ``sending``
before the POST. So:

- **one sender**: a claim is atomic, and a claimed hook is out of the others' reach while its
  lease runs;
- **never two successful deliveries**: a worker that dies mid-POST leaves ``sending`` behind;
  whether that POST arrived cannot be known, so the next claimer records ``unknown`` and does
  not send again. A worker asked to stop lets its POST run for what is left of its grace
  and records the outcome; a POST cut short there is recorded ``unknown`` too, unless nothing
  of it was sent yet (then it is due again at once, for another worker);
- **failures are retried**: a refused or failed POST is tried again with backoff, by any
  worker, up to ``notify_attempts`` times, then recorded as ``failed``.

The state of a batch's hook shows in its status (``notify``). Each completion is announced
once: a batch that ``batchq retry`` reopens is announced again when it finishes again, with a
new ``Idempotency-Key`` header (``<batch id>:<finished at ms>``).

For scripts, :func:`batchq.results.export.wait_finished` takes an ``on_done`` callback instead.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

from batchq import clock
from batchq.store.batches import BatchStore
from batchq.store.codec import text
from batchq.store.scripts import ScriptCaller

__all__ = ["HookClaim", "Hooks"]


@dataclass(frozen=True, slots=True)
class HookClaim:
    batch_id: str
    action: str  # 'send', or what became of it: 'unknown' | 'skip'
    url: str = ""
    attempt: int = 0
    finished_ms: str = ""
    token: str = ""


class Hooks(ScriptCaller):
    def __init__(self, redis: Redis, store: BatchStore) -> None:
        super().__init__(redis)
        self.store = store
        self.keys = store.keys

    async def claim(self, *, now_ms: int, lease_ms: int) -> HookClaim | None:
        token = secrets.token_hex(8)
        res = await self._run(
            "hook_claim",
            [self.keys.hooks],
            [now_ms, self.keys.batch_prefix(), lease_ms, token],
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
        """Record what became of ``claim``'s POST: ``delivered``, ``retry`` (due again at
        ``due_ms``), ``failed`` or ``unknown`` (cut short: it may have arrived); False if the
        claim is no longer this one's."""
        res = await self._run(
            "hook_settle",
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
