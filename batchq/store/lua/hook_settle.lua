-- hook_settle: record the outcome of a claimed hook's POST (Hooks.settle).
--
-- KEYS[1] = hooks: finished batches whose hook is due -> when (ms)
-- ARGV[1] = batch id
-- ARGV[2] = the batch key prefix (a batch's hash is this .. batch id)
-- ARGV[3] = the claim's token
-- ARGV[4] = outcome: 'delivered' | 'retry' (due again at ARGV[5]) | 'failed' | 'unknown' (cut
--   short mid-POST by a worker's stop: it may have arrived, so it is never sent again)
-- ARGV[5] = when a retry is due (ms)
-- ARGV[6] = the error, if it failed
-- ARGV[7] = now (ms)
-- Returns: 1, or 0 if the claim is no longer this token's.

local meta = ARGV[2] .. ARGV[1]
if redis.call('HGET', meta, 'hook_token') ~= ARGV[3] then return 0 end
if ARGV[4] == 'retry' then
  redis.call('HSET', meta, 'hook_state', 'pending', 'hook_error', ARGV[6])
  redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])
  return 1
end
if ARGV[4] == 'delivered' then
  redis.call('HSET', meta, 'hook_state', 'delivered', 'hook_at', ARGV[7])
  redis.call('HDEL', meta, 'hook_error')
else
  local state = ARGV[4] == 'unknown' and 'unknown' or 'failed'
  redis.call('HSET', meta, 'hook_state', state, 'hook_error', ARGV[6])
end
-- Unless a new completion is already due again.
if redis.call('HGET', meta, 'hook_for') == redis.call('HGET', meta, 'finished_at') then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
