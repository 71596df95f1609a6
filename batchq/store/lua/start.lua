-- start: an item's job begins at a worker; take its lease (batchq.scripts.Scripts.begin).
--
-- KEYS[1] = meta: the batch's hash
-- KEYS[2] = results: the batch's results hash
-- KEYS[3] = leases: job id -> lease deadline (ms) of each running item
-- KEYS[4] = ready: the levels of ready batches (lib/stride)
-- KEYS[5] = queue: arq's queue
-- KEYS[6] = items: the batch's items hash
-- KEYS[7] = serving: endpoint id -> what that Ollama host serves (pick.lua)
-- KEYS[8] = open: unfinished batches -> last progress (ms)
-- ARGV[1] = batch id
-- ARGV[2] = item index
-- ARGV[3] = job id
-- ARGV[4] = now (ms)
-- ARGV[5] = lease deadline (ms)
-- ARGV[6] = the result a cancelled item gets (JSON)
-- ARGV[7] = the endpoint id of the host it is for ('': no check)
-- ARGV[8] = the model the item names
-- Returns: {'ok', attempt number, the stored item}; or why not to run it: 'final' (it has a
--   result), 'missing' (no such batch), 'cancelled' (now recorded as such), 'paused', 'moved'
--   (its host serves another model now: batchq.store.models).
--- @include "lib/finalize"
--- @include "lib/models"

if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 'final' end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if state == 'cancelled' then
  finalize(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], 'cancelled', ARGV[6],
           ARGV[4])
  return 'cancelled'
end
-- Not begun and no attempt counted: the worker parks the job until the batch resumes.
if state == 'paused' then return 'paused' end
-- Claimed while its host served its model, which the host has left since: sent now, it would
-- make Ollama load that model back. Not begun; the worker puts it back in the queue.
if ARGV[7] ~= '' then
  local said = redis.call('HGET', KEYS[7], ARGV[7])
  if said and not serves(said, ARGV[8]) then return 'moved' end
end
if redis.call('ZADD', KEYS[3], ARGV[5], ARGV[3]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'running', 1)
end
-- Running jobs stay in arq's queue, and every poll of every worker would re-check each of
-- them (three round trips apiece) before reaching a job it can take. Scored at the lease
-- deadline, a running job is out of the polls' range until its lease lapses.
redis.call('ZADD', KEYS[5], 'XX', ARGV[5], ARGV[3])
if state == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'running', 'started_at', ARGV[4])
end
-- batchq counts attempts itself: arq's try counter also counts the runs that never reached
-- Ollama (it was down) and the ones a shutdown cancelled, which are refunded on release.
-- The item comes back too: one round trip less per item than reading it separately.
return {'ok', redis.call('HINCRBY', KEYS[1] .. ':tries', ARGV[2], 1),
        redis.call('HGET', KEYS[6], ARGV[2])}
