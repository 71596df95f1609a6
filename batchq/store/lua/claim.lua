-- claim: arq's poll and claim of queued jobs, one round trip for all of them (Scripts.claim).
--
-- arq's own is a ZRANGEBYSCORE, then WATCH, EXISTS, ZSCORE and MULTI/EXEC per job, and then
-- per job again GET (its payload), INCR and EXPIRE (its try counter) before it runs. Same
-- rules: skip a job already claimed or not yet due. Running jobs are scored at their lease
-- deadline (see start.lua), so the due range holds little more than the jobs waiting to be
-- taken. Given the models this worker's hosts serve, it takes only their jobs and the
-- wildcards' (lib/models): the other models' jobs wait for a host that serves them.
--
-- KEYS[1] = queue: arq's queue
-- ARGV[1] = now (ms)
-- ARGV[2] = the claim's TTL (ms)
-- ARGV[3] = most jobs to claim
-- ARGV[4] = most candidates to look at
-- ARGV[5] = arq's in-progress key prefix
-- ARGV[6] = arq's retry key prefix
-- ARGV[7] = arq's job key prefix
-- ARGV[8] = the batch key prefix (a batch's hash is this .. batch id)
-- ARGV[9] = n: how many models follow (0: take every model's jobs)
-- ARGV[10 .. 9 + n] = the models this worker may take jobs of
-- Returns: five entries per claimed job: job id, score, payload ('' if gone), try number, and
--   the model its item names ('' for a wildcard's: lib/models).
--- @include "lib/models"

local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[3])
local wanted = model_set(ARGV, 10, tonumber(ARGV[9]))
local cache = {}
local out = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, ARGV[4])
for i = 1, #due, 2 do
  if #out >= 5 * limit then break end
  local jid = due[i]
  local claim = ARGV[5] .. jid
  local model = job_model(cache, ARGV[8], jid)
  if (not wanted or model == '' or wanted[model]) and redis.call('EXISTS', claim) == 0 then
    redis.call('SET', claim, '1', 'PX', ARGV[2])
    local tries = ARGV[6] .. jid
    local try = redis.call('INCR', tries)
    -- arq's own expiry of a try counter.
    redis.call('EXPIRE', tries, 88400)
    out[#out + 1] = jid
    out[#out + 1] = due[i + 1]
    out[#out + 1] = redis.call('GET', ARGV[7] .. jid) or ''
    out[#out + 1] = try
    out[#out + 1] = model
  end
end
return out
