"""Self-tuned concurrency (``--concurrency auto``): one in-flight limit per (Ollama endpoint,
model), shared by every worker of that endpoint through Redis and found from the replies.

The limit is a float in the pair's hash; the requests it lets in at once are its floor, held as
leases in a sorted set (so a SIGKILLed worker's slots expire instead of leaking). Two scripts:
``auto_admit.lua`` takes a slot, ``auto_observe.lua`` gives it back and moves the limit by what
the reply showed (the references are Netflix's concurrency-limits and Envoy's adaptive
concurrency; the law here is simpler because Ollama says how long a request waited):

- **queue wait** ``w`` = total - prompt_eval - eval: time in the server spent neither on the
  prompt nor generating (the wait for a free slot, and a model load). Above a tolerance
  (5 ms or 5 % of the service time), Little's law names the server's slots:
  ``n · s / (s + w)`` with ``n`` the requests at the server as it was sent (itself included)
  and ``s`` = prompt_eval + eval; when it waited at most ``s``, at least ``n - 1`` (slots that
  finish in step make the first request beyond them wait a whole ``s``, and Little's law read
  half). The limit drops to that plus ½ (its floor: the slots), and the estimate is kept. A
  request that waited although it was sent alone says nothing of the slots (a model load, a
  restart, the server's own lag, another client) and moves nothing.
- **the slot given back** goes, in the same script call, to the same worker's next waiting
  request if the new limit allows: the turnaround between a reply and the next request sent,
  which idles a slot at the server, is one round trip to Redis.
- **no wait while the limit was reached**: probe upward, ½ slot per round trip within 2 of the
  estimate (at most one request waits, and not for long), and beyond it doubling the distance
  each round trip (a server restarted with more slots is found in a few round trips).
- **a 503 or a timeout**: the limit x 0.7 (and the estimate with it).

Waiting inside Ollama is what the limit keeps near zero: a request that waits there holds a
worker's slot and ages toward its timeout, and a new priority batch waits behind it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Literal, cast

from redis.asyncio import Redis

from batchq.store.admission import endpoint_id
from batchq.store.keys import Keys
from batchq.store.scripts import ScriptCaller

__all__ = [
    "INITIAL_LIMIT",
    "AutoLimit",
    "AutoLimitState",
    "Outcome",
    "model_id",
    "queue_wait_ms",
    "read_auto_limits",
]

# Where a pair starts before any reply: the probe doubles it each round trip from there.
INITIAL_LIMIT = 2.0

# A pair no reply has touched for this long is forgotten (its state key expires).
_STATE_TTL_MS = 86_400_000

Outcome = Literal["ok", "overload", "none"]

_NS_PER_MS = 1_000_000


def model_id(model: str) -> str:
    """A short, key-safe name for a model (names hold ``:`` and ``/``)."""
    return hashlib.sha256(model.encode()).hexdigest()[:12]


def _ms(metrics: dict[str, Any], name: str) -> float | None:
    value = metrics.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return max(0.0, float(value)) / _NS_PER_MS


def queue_wait_ms(metrics: dict[str, Any]) -> tuple[float, float] | None:
    """``(wait, service)`` in ms from a reply's durations (Ollama's, in ns): the service is
    prompt evaluation plus generation, the wait the rest of the total (a wait for a slot shows
    in ``load_duration``, as the simulator reports it, or in the gap). None when the reply has
    no total. An embed reply has neither evaluation: its wait is then its load duration."""
    total = _ms(metrics, "total_duration")
    if total is None:
        return None
    prompt = _ms(metrics, "prompt_eval_duration")
    evaled = _ms(metrics, "eval_duration")
    if prompt is None and evaled is None:
        load = min(total, _ms(metrics, "load_duration") or 0.0)
        return load, total - load
    service = (prompt or 0.0) + (evaled or 0.0)
    return max(0.0, total - service), service


@dataclass(frozen=True, slots=True)
class AutoLimitState:
    """One pair's limit as a reader sees it: ``slots`` is what it admits at once."""

    endpoint: str
    model: str
    limit: float
    estimate: float  # the server's slots as the last queue wait showed them (0: none yet)
    in_flight: int
    updated_ms: int

    @property
    def slots(self) -> int:
        return max(1, math.floor(self.limit))


class AutoLimit(ScriptCaller):
    """The self-tuned limit of one (endpoint, model); one per worker process and pair."""

    def __init__(
        self, redis: Redis, keys: Keys, endpoint: str, model: str, *, ceiling: int
    ) -> None:
        super().__init__(redis)
        self.endpoint = endpoint
        self.model = model
        self.ceiling = ceiling
        self.state_key = keys.auto_limit(endpoint_id(endpoint), model_id(model))
        self.inflight_key = keys.auto_inflight(endpoint_id(endpoint), model_id(model))
        self.index_key = keys.auto_limits

    async def try_admit(self, token: str, *, now_ms: int, slot_until_ms: int) -> int:
        """Take a slot (held until :meth:`observe` or ``slot_until_ms``), if one is free: 0 if
        none is, else the requests in flight with this one (give it back to :meth:`observe`)."""
        res = await self._run(
            "auto_admit",
            keys=[self.state_key, self.inflight_key],
            args=[now_ms, token, slot_until_ms, repr(INITIAL_LIMIT)],
        )
        return int(res)

    async def observe(
        self,
        token: str,
        outcome: Outcome,
        *,
        now_ms: int,
        wait_ms: float = 0.0,
        service_ms: float = 0.0,
        sent_with: int = 0,
        next_token: str = "",
        next_until_ms: int = 0,
    ) -> tuple[float, int]:
        """Give the slot back and move the limit by the reply; with ``next_token``, also admit
        that request if the new limit allows (as :meth:`try_admit` would). Returns the new
        limit and what admitting ``next_token`` returned (0: not admitted)."""
        res = await self._run(
            "auto_observe",
            keys=[self.state_key, self.inflight_key, self.index_key],
            args=[
                now_ms,
                token,
                outcome,
                repr(round(wait_ms, 3)),
                repr(round(service_ms, 3)),
                self.endpoint,
                self.model,
                repr(INITIAL_LIMIT),
                self.ceiling,
                _STATE_TTL_MS,
                sent_with,
                next_token,
                next_until_ms,
            ],
        )
        limit, admitted = res
        return float(limit), int(admitted)

    async def renew(self, tokens: set[str], until_ms: int) -> None:
        if tokens:
            await self.redis.zadd(self.inflight_key, dict.fromkeys(tokens, until_ms), xx=True)


# Pairs read at once: hosts times models, a few dozen in practice.
_MAX_PAIRS = 1000


async def read_auto_limits(redis: Redis, keys: Keys) -> list[AutoLimitState]:
    """Every (endpoint, model) limit that replies have set, by endpoint then model; what
    ``status``, ``top``, the web page and the metrics show per host."""
    raw = await cast(Any, redis.smembers(keys.auto_limits))
    members = sorted(_text(m) for m in raw)[:_MAX_PAIRS]
    if not members:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for key in members:
            pipe.hmget(key, ["endpoint", "model", "limit", "est", "updated"])
        states = await pipe.execute()
    out: list[AutoLimitState] = []
    gone: list[str] = []
    now_counts: list[tuple[str, list[Any]]] = []
    for key, fields in zip(members, states, strict=True):
        if fields[0] is None or fields[2] is None:
            gone.append(key)  # expired: nothing touched it for a day
            continue
        now_counts.append((key, fields))
    async with redis.pipeline(transaction=False) as pipe:
        for _, fields in now_counts:
            endpoint, model = _text(fields[0]), _text(fields[1])
            pipe.zcard(keys.auto_inflight(endpoint_id(endpoint), model_id(model)))
        counts = await pipe.execute() if now_counts else []
    for (_, fields), n in zip(now_counts, counts, strict=True):
        out.append(
            AutoLimitState(
                endpoint=_text(fields[0]),
                model=_text(fields[1]),
                limit=float(fields[2]),
                estimate=float(fields[3] or 0),
                in_flight=int(n),
                updated_ms=int(float(fields[4] or 0)),
            )
        )
    if gone:
        await cast(Any, redis.srem(keys.auto_limits, *gone))
    return sorted(out, key=lambda s: (s.endpoint, s.model))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
