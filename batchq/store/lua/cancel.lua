-- cancel: cancel a batch; the items not yet at a worker get their result now
-- (batchq.control_scripts.ControlScripts.cancel).
--
-- KEYS[1] = meta: the batch's hash
-- KEYS[2] = results: the batch's results hash
-- KEYS[3] = redo: the batch's list of indices to dispatch again
-- KEYS[4] = ready: the levels of ready batches (lib/stride)
-- KEYS[5] = queue: arq's queue
-- KEYS[6] = open: unfinished batches -> last progress (ms)
-- ARGV[1] = batch id
-- ARGV[2] = now (ms)
-- ARGV[3] = the result a cancelled item gets (JSON)
-- ARGV[4] = arq's in-progress key prefix
-- ARGV[5] = arq's job key prefix
-- Returns: 'cancelled', or the batch's final state if it had one already; nil (false) if
--   there is no such batch.
--- @include "lib/finalize"
--- @include "lib/window"
--- @include "lib/models"

local m = redis.call('HMGET', KEYS[1], 'state', 'next', 'total')
if not m[1] then return false end
if m[1] == 'completed' or m[1] == 'cancelled' or m[1] == 'expired' then return m[1] end
local bid = ARGV[1]
local n = tonumber(m[3]) - tonumber(m[2])
for _, idx in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  n = n + redis.call('HSETNX', KEYS[2], idx, ARGV[3])
end
redis.call('DEL', KEYS[3])
-- The items of a batch of several models that its cursor passed and parked (lib/models).
for _, park in ipairs(park_keys(KEYS[1])) do
  for _, idx in ipairs(redis.call('LRANGE', park, 0, -1)) do
    n = n + redis.call('HSETNX', KEYS[2], idx, ARGV[3])
  end
  redis.call('DEL', park)
end
-- Items waiting in arq's small window are dropped here too; ones a worker already claimed
-- run to the end or see the cancel at start.
for _, job in ipairs(unclaimed(KEYS[5], bid, ARGV[4])) do
  drop_job(KEYS[5], job[1], ARGV[5])
  n = n + redis.call('HSETNX', KEYS[2], job[2], ARGV[3])
end
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'cancel_from', m[2], 'next', m[3],
           'cancelled_at', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'cancelled', n)
leave(KEYS[4], KEYS[1], bid)
close_if_done(KEYS[1], KEYS[4], bid, ARGV[2])
return 'cancelled'
