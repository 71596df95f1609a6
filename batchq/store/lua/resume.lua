-- resume: dispatch a paused batch again (ControlScripts.resume).
--
-- KEYS[1] = meta: the batch's hash
-- KEYS[2] = queue: arq's queue
-- KEYS[3] = leases: job id -> lease deadline (ms) of each running item
-- KEYS[4] = ready: the levels of ready batches (lib/stride)
-- KEYS[5] = open: unfinished batches -> last progress (ms)
-- ARGV[1] = batch id
-- ARGV[2] = now (ms)
-- ARGV[3] = arq's in-progress key prefix
-- Returns: the batch's state afterwards ('queued' | 'running'), or its state if it was not
--   paused; nil (false) if there is no such batch.
--- @include "lib/stride"
--- @include "lib/window"

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
for _, job in ipairs(unclaimed(KEYS[2], bid, ARGV[3])) do
  if not redis.call('ZSCORE', KEYS[3], job[1]) then
    redis.call('ZADD', KEYS[2], 'XX', ARGV[2], job[1])
  end
end
return state
