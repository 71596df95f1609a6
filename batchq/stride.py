"""The dispatch order: strict priorities, stride scheduling among the batches of a priority.

Every batch with items to dispatch is *ready*. Ready batches sit in one sorted set per priority
level, scored by their *pass*; a sorted set of the levels themselves finds the highest one. The
dispatcher gives the next item to the batch with the smallest pass in the highest level, and
advances that batch's pass by its stride, ``1 / weight``: over any stretch of time each batch of
a level gets items in proportion to its weight, and a lower level gets items only while no
higher one has any to dispatch. Each item costs a few O(log n) sorted-set operations whatever
the number of ready batches, and a batch leaves its level in O(log n) when it runs dry, is
paused, cancelled or finishes.

A batch that joins a level (submitted, resumed, retried, or given back items by the reaper or
the repairer) starts at the level's current smallest pass: the time it spent away earns it no
credit to spend in a burst at the others' expense. One sorted set per level rather than one set
with a composite score keeps every pass an exact small float, however far a level's passes
have advanced, and the levels set stays as small as the number of priorities in use.

The meaning of the ``active`` flag in a batch's hash is unchanged: 1 while it is ready.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .errors import InputError
from .keys import ARQ_JOB_PREFIX, ARQ_RESULT_PREFIX

__all__ = [
    "DEFAULT_PRIORITY",
    "DEFAULT_WEIGHT",
    "DISPATCH_LUA",
    "JOIN_LUA",
    "MAX_PRIORITY",
    "MAX_WEIGHT",
    "MIN_WEIGHT",
    "STRIDE_LUA",
    "check_priority",
    "check_weight",
    "jain_index",
]

DEFAULT_PRIORITY = 0
DEFAULT_WEIGHT = 1.0
# Bounds that keep a level's name short and a stride far from float trouble (a weight of 1e-3
# advances a pass by 1,000 per item: a million items still leave 2^53 untouched).
MAX_PRIORITY = 1000
MIN_WEIGHT = 0.001
MAX_WEIGHT = 1000.0


def check_priority(value: object) -> int:
    """``--priority``: an integer in [-MAX_PRIORITY, MAX_PRIORITY]; higher goes first."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"an integer, not {value!r:.80}", field="priority")
    if not -MAX_PRIORITY <= value <= MAX_PRIORITY:
        raise InputError(
            f"must be between {-MAX_PRIORITY} and {MAX_PRIORITY}, got {value}", field="priority"
        )
    return value


def check_weight(value: object) -> float:
    """``--weight``: a positive number; a batch's share of its priority level is proportional
    to it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"a positive number, not {value!r:.80}", field="weight")
    w = float(value)
    if not math.isfinite(w) or not MIN_WEIGHT <= w <= MAX_WEIGHT:
        raise InputError(
            f"must be a number between {MIN_WEIGHT:g} and {MAX_WEIGHT:g}, got {value!r:.80}",
            field="weight",
        )
    return w


def jain_index(shares: Sequence[float]) -> float:
    """Jain's fairness index of ``shares``: 1 when all are equal, 1/n when one has it all.
    Divide each share by its batch's weight first to judge weighted fairness."""
    if not shares or not any(shares):
        raise ValueError("no shares to judge")
    return sum(shares) ** 2 / (len(shares) * sum(x * x for x in shares))


# Included by every script that adds a batch to the ready sets or takes it out. ``levels`` is
# the levels key; a level's own key is ``levels .. ':' .. priority``. The batch's priority and
# weight live in its hash (absent in batches stored before they existed: 0 and 1).
STRIDE_LUA = """
local function level_key(levels, prio)
  return levels .. ':' .. prio
end

-- Ready the batch at the current smallest pass of its level, unless it is ready already
-- (force: it is known not to be in any level, whatever its flag says).
local function join(levels, meta, bid, force)
  local m = redis.call('HMGET', meta, 'priority', 'active')
  if m[2] == '1' and not force then return 0 end
  local prio = m[1] or '0'
  local lvl = level_key(levels, prio)
  local first = redis.call('ZRANGE', lvl, 0, 0, 'WITHSCORES')
  redis.call('ZADD', lvl, first[2] or 0, bid)
  redis.call('ZADD', levels, tonumber(prio), prio)
  redis.call('HSET', meta, 'active', 1)
  return 1
end

local function leave_level(levels, prio, bid)
  local lvl = level_key(levels, prio)
  if redis.call('ZREM', lvl, bid) == 1 and redis.call('EXISTS', lvl) == 0 then
    redis.call('ZREM', levels, prio)
  end
end

local function leave(levels, meta, bid)
  local prio = redis.call('HGET', meta, 'priority') or '0'
  leave_level(levels, prio, bid)
  if redis.call('EXISTS', meta) == 1 then redis.call('HSET', meta, 'active', 0) end
end

local function ready_count(levels)
  local n = 0
  for _, prio in ipairs(redis.call('ZRANGE', levels, 0, -1)) do
    n = n + redis.call('ZCARD', level_key(levels, prio))
  end
  return n
end
"""

# KEYS: levels, queue, workers, worker-slots, legacy round-robin list
# ARGV: now_ms, batch key prefix, job ttl ms, function name, max items, window factor,
#       minimum window
# Returns items sent, jobs now in arq's queue, the window, ready batches.
DISPATCH_LUA = (
    STRIDE_LUA
    + """
local now = tonumber(ARGV[1])
local bprefix = ARGV[2]
local ttl = ARGV[3]
local fn = ARGV[4]
local max_items = tonumber(ARGV[5])
local factor = tonumber(ARGV[6])
local min_window = tonumber(ARGV[7])

-- Batches readied by a batchq from before priorities (a round-robin list) join their level.
if redis.call('EXISTS', KEYS[5]) == 1 then
  for _, bid in ipairs(redis.call('LRANGE', KEYS[5], 0, -1)) do
    if redis.call('EXISTS', bprefix .. bid) == 1 then join(KEYS[1], bprefix .. bid, bid, true) end
  end
  redis.call('DEL', KEYS[5])
end

local slots = 0
for _, w in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], now, '+inf')) do
  slots = slots + tonumber(redis.call('HGET', KEYS[4], w) or '0')
end
local window = math.max(math.ceil(slots * factor), min_window)
local queued = redis.call('ZCARD', KEYS[2])
local room = math.min(window - queued, max_items)
local sent = 0
-- Each turn either moves a batch's cursor or takes a dry batch out of its level: it ends.
while sent < room do
  local prio = redis.call('ZRANGE', KEYS[1], 0, 0, 'REV')[1]
  if not prio then break end
  local lvl = level_key(KEYS[1], prio)
  local bid = redis.call('ZRANGE', lvl, 0, 0)[1]
  if not bid then
    redis.call('ZREM', KEYS[1], prio)
  else
    local meta = bprefix .. bid
    local m = redis.call('HMGET', meta, 'state', 'next', 'total', 'weight')
    local idx = false
    if m[1] == 'queued' or m[1] == 'running' then
      idx = redis.call('LPOP', meta .. ':redo')
      if not idx then
        local nxt = tonumber(m[2])
        if nxt < tonumber(m[3]) then
          redis.call('HSET', meta, 'next', nxt + 1)
          idx = tostring(nxt)
        end
      end
    end
    if idx then
      -- The stride: the smallest pass goes next, so shares follow the weights.
      redis.call('ZINCRBY', lvl, 1 / tonumber(m[4] or '1'), bid)
      local jid = bid .. ':' .. idx
      if redis.call('HEXISTS', meta .. ':results', idx) == 0
         and redis.call('EXISTS', '"""
    + ARQ_JOB_PREFIX
    + """' .. jid, '"""
    + ARQ_RESULT_PREFIX
    + """' .. jid) == 0 then
        -- arq's invariants: the job key is written with (before) its queue entry, carries the
        -- worker's serializer (JSON), and an existing id is never overwritten.
        local payload = '{"t":1,"f":"' .. fn .. '","a":["' .. bid .. '",' .. idx
          .. '],"k":{},"et":' .. ARGV[1] .. '}'
        redis.call('SET', '"""
    + ARQ_JOB_PREFIX
    + """' .. jid, payload, 'PX', ttl)
        redis.call('ZADD', KEYS[2], now, jid)
        sent = sent + 1
      end
    else
      leave_level(KEYS[1], prio, bid)
      if m[1] then redis.call('HSET', meta, 'active', 0) end
    end
  end
end
return {sent, queued + sent, window, ready_count(KEYS[1])}
"""
)

# KEYS: levels, meta.  ARGV: batch id
JOIN_LUA = STRIDE_LUA + "return join(KEYS[1], KEYS[2], ARGV[1], false)\n"
