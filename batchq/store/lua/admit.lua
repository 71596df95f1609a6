-- admit: admit one request to an Ollama endpoint under its global limits, or say how long to
-- wait (batchq.admission.Admission.try_admit).
--
-- A rate (GCRA), a concurrency cap (slots held as leases) and a tokens-per-minute debt,
-- checked at once; batchq.admission explains each.
--
-- KEYS[1] = limits: the endpoint's limits hash (rate, concurrency, tpm)
-- KEYS[2] = tat: the theoretical arrival time (ms) of the endpoint's rate
-- KEYS[3] = inflight: slot token -> slot lease deadline (ms)
-- KEYS[4] = ttat: the arrival time (ms) of the endpoint's token debt
-- ARGV[1] = now (ms)
-- ARGV[2] = the slot's token
-- ARGV[3] = the slot's lease deadline (ms)
-- ARGV[4] = how long to wait (ms) when every slot is taken: slots free up on release, not on
--   a schedule, so this is a poll
-- Returns: 0 if admitted (holding a slot if there is a concurrency cap), else the milliseconds
--   to wait before asking again.

local lim = redis.call('HMGET', KEYS[1], 'rate', 'concurrency', 'tpm')
local rate = tonumber(lim[1] or '0') or 0
local conc = tonumber(lim[2] or '0') or 0
local tpm = tonumber(lim[3] or '0') or 0
local now = tonumber(ARGV[1])
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if not redis.call('ZSCORE', KEYS[3], ARGV[2]) and redis.call('ZCARD', KEYS[3]) >= conc then
    return tonumber(ARGV[4])
  end
end
if tpm > 0 then
  local ttat = tonumber(redis.call('GET', KEYS[4]) or '0')
  if ttat > now then return math.max(1, math.ceil(ttat - now)) end
end
if rate > 0 then
  local interval = 1000 / rate
  local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
  if tat > now then return math.max(1, math.ceil(tat - now)) end
  redis.call('SET', KEYS[2], tostring(now + interval), 'PX', math.ceil(interval) + 60000)
end
if conc > 0 then redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2]) end
return 0
