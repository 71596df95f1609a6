"""The Lua scripts behind controlling a batch while it runs: cancel, pause and resume,
re-running items, deadlines, and each item's error history.

They sit beside :mod:`batchq.scripts` and keep its invariants: one result per item, counters
that always add up, and no item lost between batchq's cursor, its redo list and arq's queue.
Key names reach the scripts from :mod:`batchq.keys`, except arq's fixed job-key prefixes.
"""

from __future__ import annotations

from redis.asyncio import Redis

from .keys import ARQ_IN_PROGRESS_PREFIX, ARQ_JOB_PREFIX, Keys
from .models import ItemError
from .scripts import _CANCELLED_PAYLOAD, _FINALIZE, _call, _str
from .stride import STRIDE_LUA

__all__ = ["ERROR_HISTORY", "ControlScripts"]

# Failed attempts kept per item, the latest ones. Only items that fail have an entry at all.
ERROR_HISTORY = 10
# Ollama's messages can be long (a runner's crash log); the final error keeps it whole.
_MESSAGE_CHARS = 300

# One entry is [attempt, type, message, status code or null, epoch ms]; attempts are counted
# across runs (the item's earlier runs are in the prior hash).
_HISTORY = """
-- At most n bytes of s, cut at a character boundary (s is UTF-8).
local function clip(s, n)
  if string.len(s) <= n then return s end
  local b = string.byte(s, n + 1)
  while n > 0 and b >= 128 and b < 192 do
    n = n - 1
    b = string.byte(s, n + 1)
  end
  return string.sub(s, 1, n)
end

local function push_error(errors, prior, idx, attempt, etype, message, code, at, cap)
  if type(message) ~= 'string' then message = '' end
  if type(etype) ~= 'string' then etype = 'unknown' end
  local list = {}
  local raw = redis.call('HGET', errors, idx)
  if raw then list = cjson.decode(raw) end
  local c = cjson.null
  if code ~= nil and code ~= '' and code ~= cjson.null then c = tonumber(code) end
  local n = tonumber(attempt) + tonumber(redis.call('HGET', prior, idx) or '0')
  table.insert(list, {n, etype, clip(message, 1200), c, tonumber(at)})
  while #list > cap do table.remove(list, 1) end
  redis.call('HSET', errors, idx, cjson.encode(list))
end
"""

# The batch's jobs in arq's queue that no worker has claimed (no in-progress key), as
# {job id, item index} pairs; a claimed one is at a worker already, which runs it or sees the
# change at start. The queue is only the dispatch window: cheap to scan.
_WINDOW = (
    """
local function unclaimed(queue, bid)
  local plen = string.len(bid) + 1
  local found = {}
  for _, jid in ipairs(redis.call('ZRANGE', queue, 0, -1)) do
    if string.sub(jid, 1, plen) == bid .. ':'
       and redis.call('EXISTS', '"""
    + ARQ_IN_PROGRESS_PREFIX
    + """' .. jid) == 0 then
      table.insert(found, {jid, string.sub(jid, plen + 1)})
    end
  end
  return found
end

-- Out of arq's queue, with its job key.
local function drop_job(queue, jid)
  redis.call('ZREM', queue, jid)
  redis.call('DEL', '"""
    + ARQ_JOB_PREFIX
    + """' .. jid)
end
"""
)

# KEYS: meta, results, redo, ready, queue, open
# ARGV: batch id, now_ms
_CANCEL = (
    _FINALIZE
    + _WINDOW
    + """
local m = redis.call('HMGET', KEYS[1], 'state', 'next', 'total')
if not m[1] then return false end
if m[1] == 'completed' or m[1] == 'cancelled' or m[1] == 'expired' then return m[1] end
local bid = ARGV[1]
local n = tonumber(m[3]) - tonumber(m[2])
for _, idx in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  n = n + redis.call('HSETNX', KEYS[2], idx, '"""
    + _CANCELLED_PAYLOAD
    + """')
end
redis.call('DEL', KEYS[3])
-- Items waiting in arq's small window are dropped here too; ones a worker already claimed
-- run to the end or see the cancel at start.
for _, job in ipairs(unclaimed(KEYS[5], bid)) do
  drop_job(KEYS[5], job[1])
  n = n + redis.call('HSETNX', KEYS[2], job[2], '"""
    + _CANCELLED_PAYLOAD
    + """')
end
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'cancel_from', m[2], 'next', m[3],
           'cancelled_at', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'cancelled', n)
leave(KEYS[4], KEYS[1], bid)
close_if_done(KEYS[1], KEYS[4], bid, ARGV[2])
return 'cancelled'
"""
)


# KEYS: meta, results, redo, queue, ready, open
# ARGV: batch id, now_ms
_PAUSE = (
    STRIDE_LUA
    + _WINDOW
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
if state ~= 'queued' and state ~= 'running' then return state end
local bid = ARGV[1]
redis.call('HSET', KEYS[1], 'state', 'paused', 'paused_at', ARGV[2])
leave(KEYS[5], KEYS[1], bid)
-- A paused batch makes no progress on purpose: not a candidate for idle repair.
redis.call('ZREM', KEYS[6], bid)
-- Items waiting in arq's window go back to the batch, to be dispatched first on resume. Ones
-- a worker already claimed run; the start script parks any that have not begun.
local back = {}
for _, job in ipairs(unclaimed(KEYS[4], bid)) do
  drop_job(KEYS[4], job[1])
  if redis.call('HEXISTS', KEYS[2], job[2]) == 0 then table.insert(back, tonumber(job[2])) end
end
table.sort(back)
for _, idx in ipairs(back) do redis.call('RPUSH', KEYS[3], idx) end
return 'paused'
"""
)

# KEYS: meta, queue, leases, ready, open
# ARGV: batch id, now_ms
_RESUME = (
    STRIDE_LUA
    + _WINDOW
    + """
local m = redis.call('HMGET', KEYS[1], 'state', 'started_at', 'finished_at')
if not m[1] then return false end
if m[1] ~= 'paused' then return m[1] end
local bid = ARGV[1]
local state = 'queued'
if m[2] then state = 'running' end
redis.call('HSET', KEYS[1], 'state', state)
if not m[3] then redis.call('ZADD', KEYS[5], ARGV[2], bid) end
-- At the smallest pass of its level: the pause earned it no credit.
join(KEYS[4], KEYS[1], bid, false)
-- Jobs the start script parked while paused wait far in the future: due now.
for _, job in ipairs(unclaimed(KEYS[2], bid)) do
  if not redis.call('ZSCORE', KEYS[3], job[1]) then
    redis.call('ZADD', KEYS[2], 'XX', ARGV[2], job[1])
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
-- The batch's count of attempts sent again (`batchq status --watch`).
redis.call('HINCRBY', KEYS[1], 'retried', 1)
return 1
"""
)


# Re-run final items under the same job ids, in two steps so that a retry spread over many
# calls cannot let the batch finish half-way (and notify, and satisfy a waiter) between them:
#
# 1. stage (per chunk of indices): each chosen item's result goes (its error into the history,
#    its attempts into the prior count), its counter moves back to queued, and its index joins
#    the retrying list: not final, not dispatchable. A finished batch is running again.
# 2. commit (once): the retrying list joins the redo list and the batch is dispatched again.
#
# A retry that dies between the two leaves items that are neither final nor queued: the idle
# repairer finds them like any lost item (the batch is open again), so nothing is stranded.
# Each index taken out is also appended to the reruns log, which a reader of results as they
# land (batchq.completed) follows to learn that a result it yielded is gone and another is due.
# KEYS: meta, results, retrying, errors, prior, tries, open, reruns
# ARGV: batch id, now_ms, statuses ('failed,expired'; '*': any), history cap,
#       'range', first, end (exclusive) | 'list', index...
_RETRY_STAGE = (
    _HISTORY
    + """
-- A stored result's status and attempts: all of it, or of a deflated one the JSON head
-- before the first newline (see batchq.collect).
local function result_head(raw)
  return cjson.decode(string.match(raw, '^[^\\n]*'))
end

local m = redis.call('HMGET', KEYS[1], 'state', 'total', 'started_at')
if not m[1] then return -1 end
if m[1] == 'cancelled' then return -2 end
local want = {}
for st in string.gmatch(ARGV[3], '[^,]+') do want[st] = true end
local picked = {}
if ARGV[5] == 'range' then
  for i = tonumber(ARGV[6]), math.min(tonumber(ARGV[7]), tonumber(m[2])) - 1 do
    table.insert(picked, tostring(i))
  end
else
  for i = 6, #ARGV do table.insert(picked, ARGV[i]) end
end
local n = 0
for _, idx in ipairs(picked) do
  local raw = redis.call('HGET', KEYS[2], idx)
  if raw then
    -- Results are written with the status first; decode only the ones to move.
    local st = string.match(raw, '^{"s":"(%a+)"')
    local d = nil
    if not st then
      d = result_head(raw)
      st = d.s
    end
    if want['*'] or want[st] then
      if not d then d = result_head(raw) end
      local a = tonumber(d.a) or 0
      -- Expiry is no attempt: only failures join the history.
      if st == 'failed' and type(d.e) == 'table' then
        push_error(KEYS[4], KEYS[5], idx, a, d.e.type, d.e.message, d.e.status_code, ARGV[2],
                   tonumber(ARGV[4]))
      end
      if a > 0 then redis.call('HINCRBY', KEYS[5], idx, a) end
      redis.call('HDEL', KEYS[2], idx)
      redis.call('HDEL', KEYS[6], idx)
      redis.call('HINCRBY', KEYS[1], st, -1)
      redis.call('RPUSH', KEYS[3], idx)
      redis.call('RPUSH', KEYS[8], idx)
      n = n + 1
    end
  end
end
if n > 0 then
  -- Readers add the prior attempts only for batches that have any.
  redis.call('HSET', KEYS[1], 'rerun', 1)
  if m[1] == 'completed' or m[1] == 'expired' then
    local state = 'queued'
    if m[3] then state = 'running' end
    redis.call('HSET', KEYS[1], 'state', state)
    redis.call('HDEL', KEYS[1], 'finished_at')
  end
  if m[1] ~= 'paused' then redis.call('ZADD', KEYS[7], ARGV[2], ARGV[1]) end
end
return n
"""
)

# KEYS: meta, retrying, redo, ready.  ARGV: batch id
_RETRY_COMMIT = (
    STRIDE_LUA
    + """
local m = redis.call('HMGET', KEYS[1], 'state')
if not m[1] then return -1 end
-- Cancelled since: the repairer records the staged items as cancelled, like any lost item.
if m[1] == 'cancelled' then
  redis.call('DEL', KEYS[2])
  return 0
end
local n = 0
while redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT') do n = n + 1 end
-- A paused batch takes them up on resume.
if n > 0 and m[1] ~= 'paused' then join(KEYS[4], KEYS[1], ARGV[1], false) end
return n
"""
)


# The deadline passed: items never attempted become final as expired; attempted ones (running,
# or waiting out a retry's backoff) carry on. The first call moves the cursor to the end, so
# nothing more is dispatched, and expires what waits in the redo list and arq's window; every
# call then writes the results of one chunk of the never-dispatched items (a million at once
# would block the server). Returns how many are still to write; -1: no such batch; -2: not due.
# KEYS: meta, results, redo, tries, queue, ready, open
# ARGV: batch id, now_ms, chunk, payload
_EXPIRE = (
    _FINALIZE
    + _WINDOW
    + """
local m = redis.call('HMGET', KEYS[1], 'state', 'next', 'total', 'deadline', 'expire_from')
if not m[1] then return -1 end
local now = tonumber(ARGV[2])
local deadline = tonumber(m[4] or '0')
if deadline == 0 or deadline > now then return -2 end
local bid = ARGV[1]
local total = tonumber(m[3])
local from = tonumber(m[5] or '-1')
local n = 0
local function fresh(idx)
  return tonumber(redis.call('HGET', KEYS[4], idx) or '0') == 0
end
if from < 0 then
  if m[1] == 'completed' or m[1] == 'cancelled' or m[1] == 'expired' then
    redis.call('HSET', KEYS[1], 'expire_from', total)
    return 0
  end
  from = tonumber(m[2])
  redis.call('HSET', KEYS[1], 'next', total, 'expire_from', from, 'expired_at', now)
  local keep = {}
  for _, idx in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
    if not fresh(idx) then
      table.insert(keep, idx)
    else
      n = n + redis.call('HSETNX', KEYS[2], idx, ARGV[4])
    end
  end
  redis.call('DEL', KEYS[3])
  for _, idx in ipairs(keep) do redis.call('RPUSH', KEYS[3], idx) end
  -- Claimed jobs are at a worker already: they run.
  for _, job in ipairs(unclaimed(KEYS[5], bid)) do
    if fresh(job[2]) then
      drop_job(KEYS[5], job[1])
      n = n + redis.call('HSETNX', KEYS[2], job[2], ARGV[4])
    end
  end
end
local last = math.min(from + tonumber(ARGV[3]), total)
for i = from, last - 1 do n = n + redis.call('HSETNX', KEYS[2], i, ARGV[4]) end
redis.call('HSET', KEYS[1], 'expire_from', last)
if n > 0 then
  redis.call('HINCRBY', KEYS[1], 'expired', n)
  redis.call('ZADD', KEYS[7], 'XX', now, bid)
end
close_if_done(KEYS[1], KEYS[6], bid, now)
return total - last
"""
)


class ControlScripts:
    """The control scripts registered on one client; EVALSHA with a transparent reload."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.keys = keys
        self._cancel = redis.register_script(_CANCEL)
        self._pause = redis.register_script(_PAUSE)
        self._resume = redis.register_script(_RESUME)
        self._release_failed = redis.register_script(_RELEASE_FAILED)
        self._retry_stage = redis.register_script(_RETRY_STAGE)
        self._retry_commit = redis.register_script(_RETRY_COMMIT)
        self._expire = redis.register_script(_EXPIRE)

    async def cancel(self, batch_id: str, *, now_ms: int) -> str | None:
        """The batch's state afterwards ('cancelled' unless it was already final); None if
        there is no such batch."""
        bk = self.keys.batch(batch_id)
        res = await _call(
            self._cancel,
            [bk.meta, bk.results, bk.redo, self.keys.ready, self.keys.queue, self.keys.open],
            [batch_id, now_ms],
        )
        return None if res is None else _str(res)

    async def pause(self, batch_id: str, *, now_ms: int) -> str | None:
        """The batch's state afterwards ('paused' unless it was already final); None if there
        is no such batch."""
        k = self.keys
        bk = k.batch(batch_id)
        res = await _call(
            self._pause,
            [bk.meta, bk.results, bk.redo, k.queue, k.ready, k.open],
            [batch_id, now_ms],
        )
        return None if res is None else _str(res)

    async def resume(self, batch_id: str, *, now_ms: int) -> str | None:
        k = self.keys
        res = await _call(
            self._resume,
            [k.batch(batch_id).meta, k.queue, k.leases, k.ready, k.open],
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
        ``score`` again, as :meth:`Scripts.release` does), keep its error, and count the
        retry in the batch's ``retried``."""
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

    async def retry_stage(
        self,
        batch_id: str,
        *,
        statuses: str,
        now_ms: int,
        span: tuple[int, int] | None = None,
        indices: list[int] | None = None,
    ) -> int:
        """Take the final items with one of ``statuses`` ('*': any) among ``span`` (first,
        end) or ``indices`` out of the results, for :meth:`retry_commit` to dispatch again.
        How many; -1: no such batch; -2: the batch is cancelled."""
        k = self.keys
        bk = k.batch(batch_id)
        select: list[int | str] = ["range", *span] if span else ["list", *(indices or [])]
        res = await _call(
            self._retry_stage,
            [bk.meta, bk.results, bk.retrying, bk.errors, bk.prior, bk.tries, k.open, bk.reruns],
            [batch_id, now_ms, statuses, ERROR_HISTORY, *select],
        )
        return int(res)

    async def retry_commit(self, batch_id: str) -> int:
        """Dispatch the staged items again; how many."""
        bk = self.keys.batch(batch_id)
        res = await _call(
            self._retry_commit, [bk.meta, bk.retrying, bk.redo, self.keys.ready], [batch_id]
        )
        return int(res)

    async def expire(self, batch_id: str, *, now_ms: int, chunk: int, payload: str | bytes) -> int:
        """One step of expiring a batch past its deadline; how many results are left to
        write (0: done), -1 if there is no such batch, -2 if the deadline is not due."""
        k = self.keys
        bk = k.batch(batch_id)
        res = await _call(
            self._expire,
            [bk.meta, bk.results, bk.redo, bk.tries, k.queue, k.ready, k.open],
            [batch_id, now_ms, chunk, payload],
        )
        return int(res)
