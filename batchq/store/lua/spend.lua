-- spend: charge a reply's tokens to the endpoint's tokens-per-minute limit, if it has one
-- (Admission.spend_tokens).
--
-- KEYS[1] = limits: the endpoint's limits hash
-- KEYS[2] = ttat: the arrival time (ms) of the endpoint's token debt
-- ARGV[1] = now (ms)
-- ARGV[2] = tokens used
-- Returns: the endpoint's debt now, in milliseconds (0 without a tokens-per-minute limit).

local tpm = tonumber(redis.call('HGET', KEYS[1], 'tpm') or '0') or 0
if tpm <= 0 then return 0 end
local now = tonumber(ARGV[1])
local ttat = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now)
ttat = ttat + tonumber(ARGV[2]) * 60000 / tpm
redis.call('SET', KEYS[2], tostring(ttat), 'PX', math.ceil(ttat - now) + 60000)
return math.ceil(ttat - now)
