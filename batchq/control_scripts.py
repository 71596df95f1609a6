"""The Lua scripts behind controlling a batch while it runs: pause and resume, and each item's
error history.

They sit beside :mod:`batchq.scripts` and keep its invariants: one result per item, counters
that always add up, and no item lost between batchq's cursor, its redo list and arq's queue.
Key names reach the scripts from :mod:`batchq.keys`, except arq's fixed job-key prefixes.
"""

from __future__ import annotations

from redis.asyncio import Redis

from .keys import ARQ_IN_PROGRESS_PREFIX, ARQ_JOB_PREFIX, Keys
from .models import ItemError
from .scripts import _FINALIZE, _call, _str

__all__ = ["ERROR_HISTORY", "ControlScripts"]

# Failed attempts kept per item, the latest ones. Only items that fail have an entry at all.
ERROR_HISTORY = 10
# Ollama's messages can be long (a runner's crash log); the final error keeps it whole.
_MESSAGE_CHARS = 300

# One entry is [attempt, type, message, status code or null, epoch ms]; attempts are counted
# across runs (the item's earlier runs are in the prior hash).
_HISTORY = """
local function push_error(errors, prior, idx, attempt, etype, message, code, at, cap)
  local list = {}
  local raw = redis.call('HGET', errors, idx)
  if raw then list = cjson.decode(raw) end
  local c = cjson.null
  if code ~= nil and code ~= '' and code ~= cjson.null then c = tonumber(code) end
  local n = tonumber(attempt) + tonumber(redis.call('HGET', prior, idx) or '0')
  table.insert(list, {n, etype, message, c, tonumber(at)})
  while #list > cap do table.remove(list, 1) end
  redis.call('HSET', errors, idx, cjson.encode(list))
end
"""

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


# A failed attempt that will be retried: the lease goes, as in the release script, and the
# error joins the item's history in the same round trip (the success path never comes here).
# KEYS: meta, leases, queue, errors, prior, open
# ARGV: job id, queue score, index, attempt, type, message, status code or '', now_ms, cap
_RELEASE_FAILED = (
    _FINALIZE
    + _HISTORY
    + """
release(KEYS[1], KEYS[2], ARGV[1])
-- Back to the score arq claimed it at, which arq's retry arithmetic expects.
redis.call('ZADD', KEYS[3], 'XX', ARGV[2], ARGV[1])
push_error(KEYS[4], KEYS[5], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8],
           tonumber(ARGV[9]))
return 1
"""
)


class ControlScripts:
    """The control scripts registered on one client; EVALSHA with a transparent reload."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.keys = keys
        self._pause = redis.register_script(_PAUSE)
        self._resume = redis.register_script(_RESUME)
        self._release_failed = redis.register_script(_RELEASE_FAILED)

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

    async def release_failed(
        self,
        batch_id: str,
        index: int,
        jid: str,
        *,
        score: int,
        attempt: int,
        error: ItemError,
        now_ms: int,
    ) -> None:
        """Give up the lease of a failed attempt that will be retried (making the job due at
        ``score`` again, as :meth:`Scripts.release` does), and keep its error."""
        k = self.keys
        bk = k.batch(batch_id)
        code = "" if error.status_code is None else error.status_code
        await _call(
            self._release_failed,
            [bk.meta, k.leases, k.queue, bk.errors, bk.prior, k.open],
            [
                jid,
                score,
                index,
                attempt,
                error.type,
                error.message[:_MESSAGE_CHARS],
                code,
                now_ms,
                ERROR_HISTORY,
            ],
        )
