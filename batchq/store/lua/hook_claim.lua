-- hook_claim: claim the next due completion hook, marking it 'sending' before its POST
-- (batchq.hooks.Hooks.claim; batchq.hooks explains the states).
--
-- KEYS[1] = hooks: finished batches whose hook is due -> when (ms)
-- ARGV[1] = now (ms)
-- ARGV[2] = the batch key prefix (a batch's hash is this .. batch id)
-- ARGV[3] = the claim's lease (ms)
-- ARGV[4] = the claim's token
-- Returns: nil (false) if no hook is due; {batch id, 'skip' | 'unknown'} for one not to send;
--   {batch id, 'send', URL, attempt number, finished at (ms)} for one to send.

local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #due == 0 then return false end
local bid = due[1]
local meta = ARGV[2] .. bid
local m = redis.call('HMGET', meta, 'finished_at', 'notify', 'hook_state', 'hook_for')
if not m[1] or not m[2] then
  -- Reopened by a retry before its hook went out (its next completion brings it back), or
  -- the batch is gone.
  redis.call('ZREM', KEYS[1], bid)
  return {bid, 'skip'}
end
local state = m[3]
if m[4] ~= m[1] then
  -- A completion not announced yet.
  redis.call('HSET', meta, 'hook_for', m[1], 'hook_attempts', 0, 'hook_state', 'pending')
  redis.call('HDEL', meta, 'hook_error')
  state = 'pending'
end
if state == 'sending' then
  -- Its sender died mid-POST: it may have arrived. Never risk a second delivery.
  redis.call('HSET', meta, 'hook_state', 'unknown')
  redis.call('ZREM', KEYS[1], bid)
  return {bid, 'unknown'}
end
if state ~= 'pending' then
  redis.call('ZREM', KEYS[1], bid)
  return {bid, 'skip'}
end
local attempt = redis.call('HINCRBY', meta, 'hook_attempts', 1)
redis.call('HSET', meta, 'hook_state', 'sending', 'hook_token', ARGV[4])
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[3]), bid)
return {bid, 'send', m[2], tostring(attempt), m[1]}
