-- retry_commit: dispatch the items retry_stage.lua took out, the second of its two steps
-- (ControlScripts.retry_commit).
--
-- KEYS[1] = meta: the batch's hash
-- KEYS[2] = retrying: the batch's list of indices taken out by a retry in progress
-- KEYS[3] = redo: the batch's list of indices to dispatch again
-- KEYS[4] = ready: the levels of ready batches (lib/stride)
-- ARGV[1] = batch id
-- Returns: how many items go back to dispatch; -1 if there is no such batch.
--- @include "lib/stride"

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
