-- lib/stride: the ready sets of stride scheduling (batchq.stride says why this order).
--
-- For every script that adds a batch to the ready sets or takes it out. `levels` is the levels
-- key; a level's own key is `levels .. ':' .. priority`. The batch's priority and weight live
-- in its hash (absent in batches stored before they existed: 0 and 1).
-- Uses no KEYS or ARGV of its own: the keys come as parameters.
-- Defines: level_key, join, leave_level, leave, ready_count.

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
