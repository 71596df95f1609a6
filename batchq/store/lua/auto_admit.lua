-- auto_admit: take one of the self-tuned in-flight slots of an (endpoint, model), or say that
-- none is free (batchq.store.autolimit.AutoLimit.try_admit).
--
-- The limit is a float (batchq.store.autolimit explains how it moves); the slots it allows
-- are its floor, at least one. Slots are leases in a sorted set, as the endpoint's global
-- concurrency's are, so a SIGKILLed worker's slots expire instead of leaking.
--
-- KEYS[1] = state: the pair's hash (limit, est, ...)
-- KEYS[2] = inflight: slot token -> slot lease deadline (ms)
-- ARGV[1] = now (ms)
-- ARGV[2] = the slot's token
-- ARGV[3] = the slot's lease deadline (ms)
-- ARGV[4] = the limit to start from when the pair has none yet
-- Returns: 0 if every slot is taken, else the requests in flight with this one (what the
--   request will find at the server, which auto_observe needs back).

local now = tonumber(ARGV[1])
local limit = tonumber(redis.call('HGET', KEYS[1], 'limit') or ARGV[4]) or 1
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local n = redis.call('ZCARD', KEYS[2])
if redis.call('ZSCORE', KEYS[2], ARGV[2]) then return n end
if n >= math.max(1, math.floor(limit)) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return n + 1
