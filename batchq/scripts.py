"""The Lua scripts that keep batch bookkeeping atomic.

Each multi-key update runs as one script so that counters, results, leases and arq's queue
never disagree, whatever the interleaving of workers, and whatever arq's at-least-once
delivery runs twice. Key names reach the scripts from :mod:`batchq.keys`, never literals,
except arq's fixed job-key prefixes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

from .keys import ARQ_IN_PROGRESS_PREFIX, ARQ_JOB_PREFIX, ARQ_RETRY_PREFIX, Keys
from .stride import DISPATCH_LUA, JOIN_LUA, STRIDE_LUA

__all__ = ["Claim", "DispatchOutcome", "Scripts", "StartOutcome"]

# Shared by every script that can make an item final. A result is written once (HSETNX): the
# first writer wins and only that write moves a counter, so a job that arq runs twice is
# counted once. The running counter follows the lease set, which is likewise idempotent.
_FINALIZE = (
    STRIDE_LUA
    + """
-- Convention: every script that includes these functions passes the open-batches key last.
local OPEN = KEYS[#KEYS]

local function release(meta, leases, jid)
  if redis.call('ZREM', leases, jid) == 1 then
    redis.call('HINCRBY', meta, 'running', -1)
  end
end

local function close_if_done(meta, ready, bid, now)
  local m = redis.call('HMGET', meta, 'total', 'succeeded', 'failed', 'cancelled', 'state',
                       'expired', 'hooks')
  local expired = tonumber(m[6] or '0')
  local done = tonumber(m[2]) + tonumber(m[3]) + tonumber(m[4]) + expired
  if done >= tonumber(m[1]) and not redis.call('HGET', meta, 'finished_at') then
    redis.call('HSET', meta, 'finished_at', now)
    if m[5] ~= 'cancelled' then
      redis.call('HSET', meta, 'state', expired > 0 and 'expired' or 'completed')
    end
    leave(ready, meta, bid)
    redis.call('ZREM', OPEN, bid)
    -- A completion hook to send (submit --notify): the key travels in the batch's metadata.
    if m[7] then redis.call('ZADD', m[7], now, bid) end
  end
end

local function finalize(meta, results, leases, ready, bid, idx, jid, status, payload, now)
  release(meta, leases, jid)
  if redis.call('HSETNX', results, idx, payload) == 0 then return 0 end
  redis.call('HDEL', meta .. ':tries', idx)
  redis.call('HINCRBY', meta, status, 1)
  -- Progress: what the idle-batch check of the repairer looks at.
  redis.call('ZADD', OPEN, 'XX', now, bid)
  close_if_done(meta, ready, bid, now)
  return 1
end
"""
)

_CANCELLED_PAYLOAD = '{"s":"cancelled"}'

# KEYS: meta, results, leases, ready, queue, items, open
# ARGV: batch id, index, job id, now_ms, lease deadline ms
_START = (
    _FINALIZE
    + """
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 'final' end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if state == 'cancelled' then
  finalize(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], 'cancelled', '"""
    + _CANCELLED_PAYLOAD
    + """', ARGV[4])
  return 'cancelled'
end
-- Not begun and no attempt counted: the worker parks the job until the batch resumes.
if state == 'paused' then return 'paused' end
if redis.call('ZADD', KEYS[3], ARGV[5], ARGV[3]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'running', 1)
end
-- Running jobs stay in arq's queue, and every poll of every worker would re-check each of
-- them (three round trips apiece) before reaching a job it can take. Scored at the lease
-- deadline, a running job is out of the polls' range until its lease lapses.
redis.call('ZADD', KEYS[5], 'XX', ARGV[5], ARGV[3])
if state == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'running', 'started_at', ARGV[4])
end
-- batchq counts attempts itself: arq's try counter also counts the runs that never reached
-- Ollama (it was down) and the ones a shutdown cancelled, which are refunded on release.
-- The item comes back too: one round trip less per item than reading it separately.
return {'ok', redis.call('HINCRBY', KEYS[1] .. ':tries', ARGV[2], 1),
        redis.call('HGET', KEYS[6], ARGV[2])}
"""
)

# KEYS: meta, results, leases, ready, queue, open
# ARGV: batch id, index, job id, status, payload, now_ms, prompt tokens, output tokens
_FINISH = (
    _FINALIZE
    + """
-- The job is over whichever write wins: retire arq's keys for it here, as arq's own
-- finish_job would (the worker then skips that round trip; see BatchqWorker.finish_job).
redis.call('DEL', '"""
    + ARQ_IN_PROGRESS_PREFIX
    + """' .. ARGV[3], '"""
    + ARQ_RETRY_PREFIX
    + """' .. ARGV[3], '"""
    + ARQ_JOB_PREFIX
    + """' .. ARGV[3])
redis.call('ZREM', KEYS[5], ARGV[3])
local n = finalize(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5],
                   ARGV[6])
-- Counted with the result, so once per item: the token rates of `batchq status --watch`.
if n == 1 and (ARGV[7] ~= '0' or ARGV[8] ~= '0') then
  redis.call('HINCRBY', KEYS[1], 'tokens_in', ARGV[7])
  redis.call('HINCRBY', KEYS[1], 'tokens_out', ARGV[8])
end
return n
"""
)

# arq's poll and claim of queued jobs in one round trip for all of them: arq's own is a
# ZRANGEBYSCORE, then WATCH, EXISTS, ZSCORE and MULTI/EXEC per job, and then per job again
# GET (its payload), INCR and EXPIRE (its try counter) before it runs. Same rules: skip a job
# already claimed or not yet due. Running jobs are scored at their lease deadline (see the
# start script), so the due range holds little more than the jobs waiting to be taken.
# KEYS: queue
# ARGV: now_ms, claim TTL ms, most jobs to claim, most candidates to look at
# Returns job id, score, payload ('' if gone), try number; four entries per job.
_CLAIM = (
    """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[3])
local out = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, ARGV[4])
for i = 1, #due, 2 do
  if #out >= 4 * limit then break end
  local jid = due[i]
  local claim = '"""
    + ARQ_IN_PROGRESS_PREFIX
    + """' .. jid
  if redis.call('EXISTS', claim) == 0 then
    redis.call('SET', claim, '1', 'PX', ARGV[2])
    local tries = '"""
    + ARQ_RETRY_PREFIX
    + """' .. jid
    local try = redis.call('INCR', tries)
    redis.call('EXPIRE', tries, 88400)
    out[#out + 1] = jid
    out[#out + 1] = due[i + 1]
    out[#out + 1] = redis.call('GET', '"""
    + ARQ_JOB_PREFIX
    + """' .. jid) or ''
    out[#out + 1] = try
  end
end
return out
"""
)

# KEYS: leases, queue, ready, workers, worker-slots, open
# ARGV: now_ms, batch key prefix, most leases to reap, arq's claim TTL ms, grace ms
_REAP = (
    _FINALIZE
    + """
local now = tonumber(ARGV[1])
local n = 0
-- A worker killed after arq claimed a job but before batchq's start script took its lease
-- (or after a retry gave the lease back but before arq released the claim) leaves a claim
-- that nothing renews. A live claim gets its lease within milliseconds; one older than the
-- grace period without a lease is dead. The queue is only the dispatch window: cheap to scan.
local claim_ttl = tonumber(ARGV[4])
for _, jid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if not redis.call('ZSCORE', KEYS[1], jid) then
    local ttl = redis.call('PTTL', '"""
    + ARQ_IN_PROGRESS_PREFIX
    + """' .. jid)
    if ttl > 0 and claim_ttl - ttl > tonumber(ARGV[5]) then
      redis.call('DEL', '"""
    + ARQ_IN_PROGRESS_PREFIX
    + """' .. jid)
      redis.call('ZADD', KEYS[2], now, jid)
      n = n + 1
    end
  end
end
-- Workers that died without saying goodbye.
for _, w in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - 60000)) do
  redis.call('ZREM', KEYS[4], w)
  redis.call('HDEL', KEYS[5], w)
end
for _, jid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])) do
  local bid, idx = string.match(jid, '^(.*):(%d+)$')
  local meta = ARGV[2] .. bid
  release(meta, KEYS[1], jid)
  -- The worker that held the lease is gone: drop arq's claim, which would otherwise block a
  -- re-run until arq's own lock expires (the job timeout + 10 s: minutes).
  redis.call('DEL', '"""
    + ARQ_IN_PROGRESS_PREFIX
    + """' .. jid)
  local state = redis.call('HGET', meta, 'state')
  if state and redis.call('HEXISTS', meta .. ':results', idx) == 0 then
    if state == 'cancelled' then
      finalize(meta, meta .. ':results', KEYS[1], KEYS[3], bid, idx, jid, 'cancelled', '"""
    + _CANCELLED_PAYLOAD
    + """', ARGV[1])
    elseif redis.call('EXISTS', '"""
    + ARQ_JOB_PREFIX
    + """' .. jid) == 1 then
      -- Running jobs stay in arq's queue; make it due now.
      redis.call('ZADD', KEYS[2], ARGV[1], jid)
    else
      redis.call('RPUSH', meta .. ':redo', idx)
      join(KEYS[3], meta, bid, false)
    end
  end
  n = n + 1
end
return n
"""
)

# KEYS: meta, results, redo, queue, leases, ready, open
# ARGV: batch id, first index, end index (exclusive), now_ms
_REPAIR = (
    _FINALIZE
    + """
local m = redis.call('HMGET', KEYS[1], 'state', 'next', 'cancel_from', 'expire_from')
if not m[1] then return -1 end
local bid = ARGV[1]
-- Only dispatched items can be lost; after a cancel, the rest have no result by design, and
-- past a deadline the expiry is still writing theirs.
local limit = tonumber(m[2])
if tonumber(m[3] or '-1') >= 0 then limit = tonumber(m[3]) end
if tonumber(m[4] or '-1') >= 0 then limit = math.min(limit, tonumber(m[4])) end
local last = math.min(tonumber(ARGV[3]), limit) - 1
local waiting = {}
for _, idx in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do waiting[idx] = true end
local n = 0
for i = tonumber(ARGV[2]), last do
  local idx = tostring(i)
  local jid = bid .. ':' .. idx
  if redis.call('HEXISTS', KEYS[2], idx) == 0 and not waiting[idx]
     and not redis.call('ZSCORE', KEYS[4], jid) and not redis.call('ZSCORE', KEYS[5], jid)
     and redis.call('EXISTS', '"""
    + ARQ_IN_PROGRESS_PREFIX
    + """' .. jid) == 0 then
    -- Neither final, queued, running nor claimed: lost (its arq job expired or arq dropped it).
    if m[1] == 'cancelled' then
      finalize(KEYS[1], KEYS[2], KEYS[5], KEYS[6], bid, idx, jid, 'cancelled', '"""
    + _CANCELLED_PAYLOAD
    + """', ARGV[4])
    else
      redis.call('DEL', '"""
    + ARQ_JOB_PREFIX
    + """' .. jid)
      redis.call('RPUSH', KEYS[3], idx)
    end
    n = n + 1
  end
end
if n > 0 and m[1] ~= 'cancelled' then join(KEYS[6], KEYS[1], bid, false) end
return n
"""
)

# KEYS: meta, leases, queue, open.  ARGV: job id, queue score or '', '1' to refund the attempt
_RELEASE = (
    _FINALIZE
    + """
release(KEYS[1], KEYS[2], ARGV[1])
-- Back to the score arq claimed it at, which arq's retry arithmetic expects.
if ARGV[2] ~= '' then redis.call('ZADD', KEYS[3], 'XX', ARGV[2], ARGV[1]) end
if ARGV[3] == '1' then
  local idx = string.match(ARGV[1], ':(%d+)$')
  if tonumber(redis.call('HGET', KEYS[1] .. ':tries', idx) or '0') > 0 then
    redis.call('HINCRBY', KEYS[1] .. ':tries', idx, -1)
  end
end
-- The batch's count of attempts sent again (`batchq status --watch`), in the same round trip.
if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[1], 'retried', 1) end
return 1
"""
)


@dataclass(frozen=True, slots=True)
class DispatchOutcome:
    sent: int
    in_queue: int
    window: int
    active_batches: int


@dataclass(frozen=True, slots=True)
class Claim:
    """A job this worker claimed: what arq's ``run_job`` would read before running it."""

    job_id: str
    score: int
    payload: bytes | None  # None if the job's key is gone (expired)
    job_try: int


StartOutcome = str  # 'ok' | 'final' | 'cancelled' | 'paused' | 'missing'


class Scripts:
    """The scripts registered on one client; EVALSHA with a transparent reload."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.keys = keys
        self._dispatch = redis.register_script(DISPATCH_LUA)
        self._join = redis.register_script(JOIN_LUA)
        self._start = redis.register_script(_START)
        self._finish = redis.register_script(_FINISH)
        self._release = redis.register_script(_RELEASE)
        self._reap = redis.register_script(_REAP)
        self._repair = redis.register_script(_REPAIR)
        self._claim = redis.register_script(_CLAIM)

    async def dispatch(
        self,
        *,
        now_ms: int,
        job_ttl_ms: int,
        function: str,
        max_items: int,
        window_factor: float,
        min_window: int,
    ) -> DispatchOutcome:
        k = self.keys
        res = await _call(
            self._dispatch,
            [k.ready, k.queue, k.workers, k.worker_slots, k.legacy_active],
            [now_ms, k.batch_prefix(), job_ttl_ms, function, max_items, window_factor, min_window],
        )
        sent, in_queue, window, active = (int(x) for x in res)
        return DispatchOutcome(sent, in_queue, window, active)

    async def join(self, batch_id: str, *, client: Redis | Pipeline | None = None) -> None:
        """Ready the batch for dispatch at its level's smallest pass (:mod:`batchq.stride`);
        ``client``: e.g. a transaction to do it in."""
        k = self.keys
        await cast(Any, self._join)(
            keys=[k.ready, k.batch(batch_id).meta], args=[batch_id], client=client
        )

    async def begin(
        self, batch_id: str, index: int, jid: str, *, now_ms: int, lease_until_ms: int
    ) -> tuple[StartOutcome, int, bytes | None]:
        """Take the item's lease; returns ('ok', attempt number, the stored item) or why not
        to run it."""
        k = self.keys
        bk = k.batch(batch_id)
        res = await _call(
            self._start,
            [bk.meta, bk.results, k.leases, k.ready, k.queue, bk.items, k.open],
            [batch_id, index, jid, now_ms, lease_until_ms],
        )
        if isinstance(res, list):
            return _str(res[0]), int(res[1]), res[2] if len(res) > 2 else None
        return _str(res), 0, None

    async def start(
        self, batch_id: str, index: int, jid: str, *, now_ms: int, lease_until_ms: int
    ) -> tuple[StartOutcome, int]:
        """:meth:`begin` without the item."""
        outcome, attempt, _ = await self.begin(
            batch_id, index, jid, now_ms=now_ms, lease_until_ms=lease_until_ms
        )
        return outcome, attempt

    async def claim(self, *, now_ms: int, ttl_ms: int, limit: int, scan: int = 1000) -> list[Claim]:
        """Claim up to ``limit`` due jobs for this worker, as arq does (its in-progress key,
        with ``ttl_ms``, and its try counter), looking at most at ``scan`` of them."""
        if limit <= 0:
            return []
        res = await _call(self._claim, [self.keys.queue], [now_ms, ttl_ms, limit, scan])
        return [
            Claim(_str(res[i]), int(float(res[i + 1])), res[i + 2] or None, int(res[i + 3]))
            for i in range(0, len(res), 4)
        ]

    async def finish(
        self,
        batch_id: str,
        index: int,
        jid: str,
        status: str,
        payload: str | bytes,
        *,
        now_ms: int,
        tokens: tuple[int, int] = (0, 0),
    ) -> bool:
        """Record the item's result once; ``tokens`` (prompt, output) add to the batch's."""
        bk = self.keys.batch(batch_id)
        res = await _call(
            self._finish,
            [
                bk.meta,
                bk.results,
                self.keys.leases,
                self.keys.ready,
                self.keys.queue,
                self.keys.open,
            ],
            [batch_id, index, jid, status, payload, now_ms, *tokens],
        )
        return bool(int(res))

    async def release(
        self,
        batch_id: str,
        jid: str,
        *,
        score: int | None = None,
        refund: bool = False,
        retried: bool = False,
    ) -> None:
        """Give up the lease; with ``score``, make the job due again at that queue score; with
        ``refund``, the attempt it started does not count; with ``retried``, count the job in
        the batch's retries."""
        await _call(
            self._release,
            [self.keys.batch(batch_id).meta, self.keys.leases, self.keys.queue, self.keys.open],
            [jid, "" if score is None else score, "1" if refund else "0", "1" if retried else "0"],
        )

    async def reap(
        self, *, now_ms: int, claim_ttl_ms: int, grace_ms: int, limit: int = 1000
    ) -> int:
        """Re-queue items whose worker died: lapsed leases, and arq claims older than
        ``grace_ms`` that never got a lease (``claim_ttl_ms``: the TTL arq gives a claim)."""
        k = self.keys
        res = await _call(
            self._reap,
            [k.leases, k.queue, k.ready, k.workers, k.worker_slots, k.open],
            [now_ms, k.batch_prefix(), limit, claim_ttl_ms, grace_ms],
        )
        return int(res)

    async def repair_range(self, batch_id: str, start: int, end: int, *, now_ms: int) -> int:
        """Re-queue the lost items among indices [start, end); -1 if there is no such batch."""
        k = self.keys
        bk = k.batch(batch_id)
        res = await _call(
            self._repair,
            [bk.meta, bk.results, bk.redo, k.queue, k.leases, k.ready, k.open],
            [batch_id, start, end, now_ms],
        )
        return int(res)


def _str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


async def _call(script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
    return await cast(Any, script)(keys=keys, args=args)
