"""Global limits per Ollama endpoint, shared by every worker that talks to it.

A request is admitted by one Lua script (``batchq/store/lua/admit.lua``) that checks both
limits atomically: a **rate** (requests per second, GCRA: each admission pushes a theoretical
arrival time one interval further, so 8 workers at a global 10/s send 10/s in total, not
80/s) and a **concurrency** cap (slots held as leases in a sorted set: a SIGKILLed worker's
slots expire with its lease instead of leaking forever), and optionally **tokens per
minute**. A job over a limit waits to be admitted; it never burns an attempt. The limits live
in Redis, so ``batchq limits`` changes them at run time.

Tokens are known only once Ollama has answered (prompt plus generated tokens), so the token
limit is a debt: each reply pushes a second arrival time forward by its tokens' share of a
minute, and nothing is admitted while that time is ahead of the clock. Over a run the rate
holds; at any moment the requests already in flight may add their tokens on top.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from redis.asyncio import Redis

from batchq.store.keys import Keys
from batchq.store.scripts import ScriptCaller

__all__ = ["Admission", "EndpointLimits", "endpoint_id"]

# How long a worker waits before asking again when every global slot is taken; slots free up
# on release, not on a schedule, so this is a poll.
_SLOT_POLL_MS = 20


def endpoint_id(url: str) -> str:
    """A short, key-safe name for an Ollama endpoint (its normalised URL)."""
    return hashlib.sha256(url.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class EndpointLimits:
    endpoint: str
    rate: float | None
    concurrency: int | None
    in_flight: int
    tokens_per_minute: int | None = None


class Admission(ScriptCaller):
    """Admission to one endpoint; one per worker process."""

    def __init__(self, redis: Redis, keys: Keys, endpoint: str) -> None:
        super().__init__(redis)
        self.endpoint = endpoint
        eid = endpoint_id(endpoint)
        self.limits_key = keys.endpoint_limits(eid)
        self.tat_key = keys.endpoint_tat(eid)
        self.inflight_key = keys.endpoint_inflight(eid)
        self.token_tat_key = keys.endpoint_token_tat(eid)

    async def configure(
        self,
        *,
        rate: float | None = None,
        concurrency: int | None = None,
        tokens_per_minute: int | None = None,
        clear: bool = False,
    ) -> None:
        """Set the given limits (0 removes one); ``clear`` removes all first."""
        async with self.redis.pipeline(transaction=True) as tx:
            if clear:
                tx.delete(self.limits_key)
            fields: dict[str, str] = {"endpoint": self.endpoint}
            if rate is not None:
                fields["rate"] = repr(float(rate))
            if concurrency is not None:
                fields["concurrency"] = str(int(concurrency))
            if tokens_per_minute is not None:
                fields["tpm"] = str(int(tokens_per_minute))
            if len(fields) > 1:
                tx.hset(self.limits_key, mapping=fields)
            await tx.execute()

    async def limits(self) -> EndpointLimits:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self.limits_key, ["rate", "concurrency", "tpm"])
            pipe.zcard(self.inflight_key)
            (rate, conc, tpm), in_flight = await pipe.execute()
        r = float(rate) if rate else 0.0
        c = int(conc) if conc else 0
        t = int(tpm) if tpm else 0
        return EndpointLimits(self.endpoint, r or None, c or None, int(in_flight), t or None)

    async def active(self) -> bool:
        return bool(await self.redis.exists(self.limits_key))

    async def try_admit(self, token: str, *, now_ms: int, slot_until_ms: int) -> int:
        """0 if admitted (a slot is held until released or ``slot_until_ms``), else the
        milliseconds to wait before asking again."""
        res = await self._run(
            "admit",
            keys=[self.limits_key, self.tat_key, self.inflight_key, self.token_tat_key],
            args=[now_ms, token, slot_until_ms, _SLOT_POLL_MS],
        )
        return int(res)

    async def spend_tokens(self, tokens: int, *, now_ms: int) -> int:
        """Charge a reply's tokens to the tokens-per-minute limit, if there is one; returns
        how many milliseconds of debt the endpoint now has."""
        res = await self._run(
            "spend",
            keys=[self.limits_key, self.token_tat_key],
            args=[now_ms, max(0, tokens)],
        )
        return int(res)

    async def release(self, token: str) -> None:
        await self.redis.zrem(self.inflight_key, token)

    async def renew(self, tokens: set[str], until_ms: int) -> None:
        if tokens:
            await self.redis.zadd(self.inflight_key, dict.fromkeys(tokens, until_ms), xx=True)
