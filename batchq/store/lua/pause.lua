-- pause: stop dispatching a batch's items (ControlScripts.pause).
--
-- KEYS[1] = meta: the batch's hash
-- KEYS[2] = results: the batch's results hash
-- KEYS[3] = redo: the batch's list of indices to dispatch again
-- KEYS[4] = queue: arq's queue
-- KEYS[5] = ready: the levels of ready batches (lib/stride)
-- KEYS[6] = open: unfinished batches -> last progress (ms)
-- ARGV[1] = batch id
-- ARGV[2] = now (ms)
-- ARGV[3] = arq's in-progress key prefix
-- ARGV[4] = arq's job key prefix
-- Returns: 'paused', or the batch's state if it was neither queued nor running; nil (false)
--   if there is no such batch.
--- @include "lib/stride"
--- @include "lib/window"

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
for _, job in ipairs(unclaimed(KEYS[4], bid, ARGV[3])) do
  drop_job(KEYS[4], job[1], ARGV[4])
  if redis.call('HEXISTS', KEYS[2], job[2]) == 0 then table.insert(back, tonumber(job[2])) end
end
table.sort(back)
for _, idx in ipairs(back) do redis.call('RPUSH', KEYS[3], idx) end
return 'paused'
