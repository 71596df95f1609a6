"""The Lua scripts behind controlling a batch while it runs: pause and resume.

They sit beside :mod:`batchq.scripts` and keep its invariants: one result per item, counters
that always add up, and no item lost between batchq's cursor, its redo list and arq's queue.
Key names reach the scripts from :mod:`batchq.keys`, except arq's fixed job-key prefixes.
"""

from __future__ import annotations

from redis.asyncio import Redis

from .keys import ARQ_IN_PROGRESS_PREFIX, ARQ_JOB_PREFIX, Keys
from .scripts import _call, _str

__all__ = ["ControlScripts"]

# KEYS: meta, results, redo, queue, active, open
# ARGV: batch id, now_ms
_PAUSE = (
    """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
if state ~= 'queued' and state ~= 'running' then return state end
local bid = ARGV[1]
redis.call('HSET', KEYS[1], 'state', 'paused', 'paused_at', ARGV[2], 'active', 0)
redis.call('LREM', KEYS[5], 0, bid)
-- A paused batch makes no progress on purpose: not a candidate for idle repair.
redis.call('ZREM', KEYS[6], bid)
-- Items waiting in arq's window go back to the batch, to be dispatched first on resume. Ones
-- a worker already claimed (in-progress key) run; the start script parks any that have not
-- begun. The window is small: scanning it is cheap.
local plen = string.len(bid) + 1
local back = {}
for _, jid in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  if string.sub(jid, 1, plen) == bid .. ':'
     and redis.call('EXISTS', '"""
    + ARQ_IN_PROGRESS_PREFIX
    + """' .. jid) == 0 then
    redis.call('ZREM', KEYS[4], jid)
    redis.call('DEL', '"""
    + ARQ_JOB_PREFIX
    + """' .. jid)
    local idx = string.sub(jid, plen + 1)
    if redis.call('HEXISTS', KEYS[2], idx) == 0 then table.insert(back, tonumber(idx)) end
  end
end
table.sort(back)
for _, idx in ipairs(back) do redis.call('RPUSH', KEYS[3], idx) end
return 'paused'
"""
)

# KEYS: meta, queue, leases, active, open
# ARGV: batch id, now_ms
_RESUME = (
    """
local m = redis.call('HMGET', KEYS[1], 'state', 'started_at', 'finished_at', 'active')
if not m[1] then return false end
if m[1] ~= 'paused' then return m[1] end
local bid = ARGV[1]
local state = 'queued'
if m[2] then state = 'running' end
redis.call('HSET', KEYS[1], 'state', state)
if not m[3] then redis.call('ZADD', KEYS[5], ARGV[2], bid) end
if m[4] ~= '1' then
  redis.call('HSET', KEYS[1], 'active', 1)
  redis.call('RPUSH', KEYS[4], bid)
end
-- Jobs the start script parked while paused wait far in the future: due now.
local plen = string.len(bid) + 1
for _, jid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if string.sub(jid, 1, plen) == bid .. ':' and not redis.call('ZSCORE', KEYS[3], jid)
     and redis.call('EXISTS', '"""
    + ARQ_IN_PROGRESS_PREFIX
    + """' .. jid) == 0 then
    redis.call('ZADD', KEYS[2], 'XX', ARGV[2], jid)
  end
end
return state
"""
)


class ControlScripts:
    """The control scripts registered on one client; EVALSHA with a transparent reload."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.keys = keys
        self._pause = redis.register_script(_PAUSE)
        self._resume = redis.register_script(_RESUME)

    async def pause(self, batch_id: str, *, now_ms: int) -> str | None:
        """The batch's state afterwards ('paused' unless it was already final); None if there
        is no such batch."""
        k = self.keys
        bk = k.batch(batch_id)
        res = await _call(
            self._pause,
            [bk.meta, bk.results, bk.redo, k.queue, k.active, k.open],
            [batch_id, now_ms],
        )
        return None if res is None else _str(res)

    async def resume(self, batch_id: str, *, now_ms: int) -> str | None:
        k = self.keys
        res = await _call(
            self._resume,
            [k.batch(batch_id).meta, k.queue, k.leases, k.active, k.open],
            [batch_id, now_ms],
        )
        return None if res is None else _str(res)
