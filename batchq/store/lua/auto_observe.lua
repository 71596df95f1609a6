-- auto_observe: give back a self-tuned slot of an (endpoint, model) and move its limit by what
-- the reply showed (batchq.store.autolimit.AutoLimit.observe, which explains the law).
--
-- KEYS[1] = state: the pair's hash (limit, est, endpoint, model, updated, in its own words)
-- KEYS[2] = inflight: slot token -> slot lease deadline (ms)
-- KEYS[3] = index: the set of every pair's state key, for whoever lists the limits
-- ARGV[1] = now (ms)
-- ARGV[2] = the slot's token
-- ARGV[3] = outcome: 'ok' (a reply with its durations), 'overload' (a 503 or a timeout),
--   'none' (nothing learnt: a connection error, a failure of the item)
-- ARGV[4] = the reply's queue wait (ms): time inside the server neither evaluating the prompt
--   nor generating
-- ARGV[5] = the reply's service time (ms): prompt evaluation plus generation
-- ARGV[6] = the endpoint (its URL), kept for the readers
-- ARGV[7] = the model, kept for the readers
-- ARGV[8] = the limit to start from when the pair has none yet
-- ARGV[9] = the highest limit
-- ARGV[10] = how long the state lives without replies (ms)
-- ARGV[11] = the requests in flight when this one was admitted, itself included (what
--   auto_admit returned; 0: unknown)
-- ARGV[12] = the token of the same worker's next request, to admit in this call if the new
--   limit allows (the slot is handed over without another round trip); '' for none
-- ARGV[13] = that slot's lease deadline (ms)
-- Returns: {the limit after the update, as a string; 0 if the next request was not admitted,
--   else the requests in flight with it (as auto_admit returns)}.

local now = tonumber(ARGV[1])
local outcome = ARGV[3]
local wait = tonumber(ARGV[4]) or 0
local service = tonumber(ARGV[5]) or 0
local ceiling = tonumber(ARGV[9])
local st = redis.call('HMGET', KEYS[1], 'limit', 'est')
local limit = tonumber(st[1] or ARGV[8]) or 1
local est = tonumber(st[2] or '0') or 0

redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
-- Requests at the server as this one ended, itself included.
local n = redis.call('ZCARD', KEYS[2])
if redis.call('ZREM', KEYS[2], ARGV[2]) == 0 then n = n + 1 end
-- What this request found as it arrived: its wait comes from those ahead of it then.
local sent_with = tonumber(ARGV[11]) or 0
if sent_with < 1 then sent_with = n end

if outcome == 'overload' then
  limit = math.max(1, limit * 0.7)
  est = limit
elseif outcome == 'ok' then
  local tolerance = math.max(5, 0.05 * service)
  local waited = wait > tolerance and service > 0
  if waited and sent_with > 1 then
    -- (A request that waited although it was alone says nothing of the slots: the server
    -- was loading a model, restarting, lagging, or busy with another client.)
    -- Little's law: n requests in, each served in `service` after waiting `wait`, means the
    -- server runs n * service / (service + wait) of them at once: its parallel slots. The n
    -- is the one this request arrived with, which its wait comes from (the n at its end has
    -- already followed a lower limit).
    local slots = sent_with * service / (service + wait)
    if wait <= service then
      -- Waiting at most one service time, it was among the first few beyond the slots. When
      -- the slots finish in step (equal requests started together) the first one beyond them
      -- waits a whole service time and Little's law reads half the slots; the requests
      -- ahead of it are the better bound then.
      slots = math.max(slots, sent_with - 1)
    end
    est = slots
    limit = math.max(1, math.min(limit, slots + 0.5))
  elseif not waited and n >= math.floor(limit) then
    -- Nothing waited although the limit was reached: probe upward, half a slot per round
    -- trip near the estimate of the server's slots, and doubling the distance beyond it (the
    -- server has more slots than it had: a restart, or the estimate was made under a load).
    local step = 0.5
    if limit - est >= 2 then step = limit - est - 1 end
    limit = limit + step / limit
  end
end
limit = math.min(limit, ceiling)

redis.call('HSET', KEYS[1], 'limit', tostring(limit), 'est', tostring(est),
  'endpoint', ARGV[6], 'model', ARGV[7], 'updated', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[10])
redis.call('SADD', KEYS[3], KEYS[1])

local admitted = 0
if ARGV[12] ~= '' then
  local held = redis.call('ZCARD', KEYS[2])
  if redis.call('ZSCORE', KEYS[2], ARGV[12]) then
    admitted = held
  elseif held < math.max(1, math.floor(limit)) then
    redis.call('ZADD', KEYS[2], ARGV[13], ARGV[12])
    admitted = held + 1
  end
end
return {tostring(limit), admitted}
