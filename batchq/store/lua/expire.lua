-- expire: one step of expiring a batch past its deadline (ControlScripts.expire).
--
-- Items never attempted become final as expired; attempted ones (running, or waiting out a
-- retry's backoff) carry on. The first call moves the cursor to the end, so nothing more is
-- dispatched, and expires what waits in the redo list and arq's window; every call then writes
-- the results of one chunk of the never-dispatched items (a million at once would block the
-- server).
--
-- KEYS[1] = meta: the batch's hash
-- KEYS[2] = results: the batch's results hash
-- KEYS[3] = redo: the batch's list of indices to dispatch again
-- KEYS[4] = tries: the batch's hash of attempts so far per item
-- KEYS[5] = queue: arq's queue
-- KEYS[6] = ready: the levels of ready batches (lib/stride)
-- KEYS[7] = open: unfinished batches -> last progress (ms)
-- ARGV[1] = batch id
-- ARGV[2] = now (ms)
-- ARGV[3] = most results to write in this step
-- ARGV[4] = the result an expired item gets (JSON)
-- ARGV[5] = arq's in-progress key prefix
-- ARGV[6] = arq's job key prefix
-- Returns: how many results are still to write (0: done); -1 if there is no such batch; -2 if
--   its deadline is not due.
--- @include "lib/finalize"
--- @include "lib/window"
--- @include "lib/models"

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
  -- The redo list, and the items a batch of several models parked (lib/models): both wait
  -- behind the cursor.
  local waiting = {KEYS[3], unpack(park_keys(KEYS[1]))}
  for _, list in ipairs(waiting) do
    for _, idx in ipairs(redis.call('LRANGE', list, 0, -1)) do
      if not fresh(idx) then
        table.insert(keep, idx)
      else
        n = n + redis.call('HSETNX', KEYS[2], idx, ARGV[4])
      end
    end
    redis.call('DEL', list)
  end
  for _, idx in ipairs(keep) do redis.call('RPUSH', KEYS[3], idx) end
  -- Claimed jobs are at a worker already: they run.
  for _, job in ipairs(unclaimed(KEYS[5], bid, ARGV[5])) do
    if fresh(job[2]) then
      drop_job(KEYS[5], job[1], ARGV[6])
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
